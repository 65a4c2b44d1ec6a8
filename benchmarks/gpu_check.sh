#!/usr/bin/env bash
# The GPU machine's one command (README "GPU check"): installs the carried wheels, runs benchmarks/gpu_check.py
# within 7 minutes in all, and copies the report and its log to $OUT. Prepare first, where PyPI is reachable:
# `bash benchmarks/gpu_prepare.sh` fills .whl/ and .gpu_data/, which the run must carry.
# Arguments go to gpu_check.py (e.g. --dry-run, --parts ...). PYTHON and SITE override python3 and /tmp/site
# (the install prefix, emptied first).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
# 7 minutes: the device's command limit is 10, a session's device time 15 with the machine's start in it; the
# parts' shares (gpu_parts.PARTS) fill what is left, and a part that no longer fits is skipped with its reason
total_s=${GPU_CHECK_TOTAL_S:-420}
python=${PYTHON:-python3}
site=${SITE:-/tmp/site}
if ! ls .whl/*.whl >/dev/null 2>&1 || [ ! -d .gpu_data ]; then
    echo "error: .whl/ or .gpu_data/ missing: run 'bash benchmarks/gpu_prepare.sh' where PyPI is reachable, then carry both" >&2
    exit 2
fi
# --prefix, not --target: with --target the data files of the monailabel wheel (a monailabel/ folder of sample
# apps) replace its package folder
rm -rf "$site"
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$site" .whl/*.whl || exit 2
packages=$(find "$site" -maxdepth 4 -type d -name site-packages | paste -sd:)
export PYTHONPATH="$packages:$PWD" PYTHONUNBUFFERED=1 REP3D_SHARED_DATA="$PWD/.gpu_data"
echo "wheels installed in $((SECONDS - start)) s"
report=benchmarks/results/gpu_$(date +%F).md
case " $* " in *" --dry-run "*) report=${TMPDIR:-/tmp}/gpu_check_dry_run.md ;; esac
left=$((total_s - (SECONDS - start)))
timeout -k 5 "$left" "$python" benchmarks/gpu_check.py --output "$report" --budget $((left - 25)) "$@"
status=$?
if [ -n "${OUT:-}" ]; then
    cp "$report" "${report%.md}.log" "$OUT"/ 2>/dev/null
fi
echo "gpu_check exit status $status after $((SECONDS - start)) s"
exit $status
