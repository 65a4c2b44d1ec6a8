#!/usr/bin/env bash
# The click study (docs/interactive.md): serves the models of `python -m rep3d_networks.click_models` with the app
# (apps/rep3d/start_server.py, 127.0.0.1) and runs the simulated annotator against it through MONAILabelClient.
#   bash benchmarks/click_study.sh <click_models output dir> <results dir> [extra `analysis clicks` options]
# e.g. bash benchmarks/click_study.sh click_models_phantom benchmarks/results/clicks_phantom
set -euo pipefail
models_dir=$(realpath "$1"); results=$(realpath -m "$2"); shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
port=${PORT:-8765}
work=$(mktemp -d)
trap 'kill -- -$server 2>/dev/null || true; rm -rf "$work"' EXIT
models=$(ls "$models_dir/bundles" | paste -sd, -)
cp -r "$repo/apps/rep3d" "$work/app"  # start_server writes model/, logs/ and bin/ into the app folder
cd "$work"
# each request is one CPU thread's work, as in the training runs (rep3d_networks.ops: two threads stall on shared cores)
setsid env OMP_NUM_THREADS=1 MONAI_LABEL_SESSION_PATH="$work/sessions" "$python" "$work/app/start_server.py" \
    --studies "$models_dir/heldout/images" --conf bundles_dir "$models_dir/bundles" --conf models "$models" \
    --conf device cpu --port "$port" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/info/" > /dev/null && break
    kill -0 $server 2>/dev/null || { tail -50 "$work/server.log"; exit 1; }
    sleep 1
done
"$python" -m rep3d_networks.analysis clicks --server_url "http://127.0.0.1:$port" \
    --references "$models_dir/heldout/labels" --output_dir "$results" "$@"
cp "$models_dir/results.md" "$results/models.md"
