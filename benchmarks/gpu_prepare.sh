#!/usr/bin/env bash
# Prepares the GPU check's carried folders HERE, where PyPI is reachable (README "GPU check"):
#   .whl/       the wheels of benchmarks/gpu_wheels.txt for the GPU machine's python (cp312, manylinux x86-64)
#   .gpu_data/  the shared CT volumes the check reads (the device receives the checkout only)
# Both are ignored by git; the device run names them in `carry` and runs `bash benchmarks/gpu_check.sh`.
# GPU_PYTHON_VERSION (default 3.12) picks other wheels; REP3D_SHARED_DATA is the shared data (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
shared=${REP3D_SHARED_DATA:-../shared/data}
limit_mib=60  # of the 64 MiB a device run carries (checkout + carried folders)

rm -rf .whl .gpu_data
mkdir -p .whl .gpu_data/totalseg_ct_abdomen_3mm
platforms=()
for n in 39 35 34 31 28 27 24 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
sed 's/#.*//' benchmarks/gpu_wheels.txt | xargs "$python" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "${GPU_PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
for file in example_ct.nii.gz example_ct_sm.nii.gz LICENSE; do
    cp "$shared/totalseg_ct_abdomen_3mm/$file" .gpu_data/totalseg_ct_abdomen_3mm/
done
chmod -R u+w .gpu_data

mib() { echo $(( ($1 + 1048575) / 1048576 )); }
wheels=$(du -sb .whl | cut -f1)
data=$(du -sb .gpu_data | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((wheels + data + tree))
ls -1 .whl
echo "wheels $(mib "$wheels") MiB, data $(mib "$data") MiB, checkout $(mib "$tree") MiB: $(mib "$total") MiB travel"
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
    echo "error: more than $limit_mib MiB would travel to the device" >&2
    exit 1
fi
echo "device run: command 'bash benchmarks/gpu_check.sh', carry ['.whl', '.gpu_data'], timeout_s 540"
