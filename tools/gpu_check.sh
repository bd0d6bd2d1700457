#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go: the CUDA tests (bf16 autocast, channels_last, SDPA's fused kernels,
# memory), the trainer and memory benchmarks on the GPU, a quickstart search on the GPU, and (with Ray installed)
# a search whose trials share the GPU as fractions of it. CI has no GPU; run this on a machine that has one:
#
#   bash tools/gpu_check.sh [OUT_FOLDER]
#
# Figures land in results/benchmarks/*-cuda.json and are copied, with the logs and the runs' results folders, to
# OUT_FOLDER (default gpu-check).
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$out/$name.log"; then
        echo "!! $name failed"
        status=1
    fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step cuda-tests $py -m pytest tests/cuda -q -p no:cacheprovider -o addopts="-ra --strict-markers"
step bench-trainer $py -m attnsearch bench trainer --device cuda --steps 30 --rounds 5 --workers 4
step bench-memory $py -m attnsearch bench memory --device cuda --sizes 16,32,64,96,128,192 --max-gib 16
step bench-overhead $py -m attnsearch bench overhead --device cuda --trials 5
step quickstart $py -m attnsearch run search_spaces/quickstart.yaml --device cuda --results "$out/runs" --no-dashboard
if $py -c "import ray" 2>/dev/null; then
    step ray-fractional $py -m attnsearch run tools/gpu_ray_space.yaml --results "$out/runs" --no-dashboard
    $py - "$out/runs/gpu-ray" <<'PY' 2>&1 | tee "$out/ray-check.log" || status=1
import json, sys
from pathlib import Path
trials = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("trials/*/trial.json"))]
states = [t["state"] for t in trials]
gpus = [t.get("worker", {}).get("gpus") for t in trials]
print("trials", len(trials), "states", states)
print("gpus per trial", gpus)
# four trials at gpus_per_trial 0.25 share one GPU: they overlap in time
spans = sorted((t["started"], t["finished"]) for t in trials if t.get("started") and t.get("finished"))
overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
print("overlapping consecutive trials", overlaps)
assert len(trials) >= 8 and states.count("complete") + states.count("pruned") == len(trials), "not all trials ran"
assert all(g for g in gpus), "a trial ran without a GPU"
assert overlaps >= 1, "trials did not share the GPU"
PY
else
    echo "ray is not installed: the fractional-GPU search is skipped"
fi
cp results/benchmarks/*-cuda.json "$out"/ 2>/dev/null
exit $status
