#!/usr/bin/env bash
# Every GPU check in one command, on a machine with CUDA (figures: README, "On a GPU"):
#   bash bench/gpu_check.sh [OUT]          (PY=python3 picks another interpreter)
# 1. the main job without serving: float16-AMP training of the default models with the GPU
#    recipes (about 10 minutes on an H100), their benchmark on CUDA, the report and the promotion
# 2. bench/gpu_check.py: metrics, agreement and speed on CUDA float32 / float16 against the CPU
# 3. bench/service_speed.py for both tasks: the REST service on the GPU (float16)
# 4. torchrun: a short training run in an NCCL process group
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# the full logs go to $OUT; the terminal gets the summary lines
quiet() { tr '\r' '\n' | grep -a -E '^\[(main|bench|train|gpu|promote)\]|rror|^(in-process|served|saturated|same batch)' || true; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('[gpu]', torch.__version__, torch.cuda.get_device_name())"
REPORT=reports/default_gpu  # on CUDA the main job runs the default_gpu suite
RUNS=$REPORT/runs
"$PY" -m vision_cli main --no-serve 2>&1 | tee "$OUT/main.log" | quiet
cp $REPORT/leaderboard.json $REPORT/leaderboard.md "$OUT/" 2>/dev/null || true
"$PY" -m bench.gpu_check --checkpoint $RUNS/shapes__fcos_r18/best.pt \
    --checkpoint $RUNS/shapes__fcn8s_slim/best.pt --out "$OUT/gpu_check.json" 2>&1 | quiet
"$PY" -m bench.service_speed --task detect --checkpoint $RUNS/shapes__fcos_r18/best.pt \
    --threads 4 --out "$OUT/service_detect.json" 2>&1 | quiet
"$PY" -m bench.service_speed --task segment --checkpoint $RUNS/shapes__fcn8s_slim/best.pt \
    --threads 4 --out "$OUT/service_segment.json" 2>&1 | quiet
"$PY" -m torch.distributed.run --nproc_per_node=1 -m vision_cli train segment --data shapes \
    --model fcn8s_slim --epochs 1 --max-iters 30 --limit-val 64 --img-size 128 \
    --out /tmp/vision-gpu-ddp 2>&1 | tee "$OUT/ddp.log" | quiet
echo "[gpu] done: $OUT"
