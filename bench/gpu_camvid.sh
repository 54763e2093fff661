#!/usr/bin/env bash
# CamVid at full resolution on a GPU (issue 15), one command; the raw output goes to OUT:
#   bash bench/gpu_camvid.sh [OUT]          (PY=python3 picks another interpreter)
# Links ../shared/data/real/seg_camvid as $VISION_DATASETS/camvid when it is not there, trains
# the shipped suite camvid_gpu (eval/suites/camvid_gpu.yaml) and prints the leaderboard (per-class IoU in its report).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench/results/gpu_camvid}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('[gpu]', torch.__version__, torch.cuda.get_device_name())"
if [ ! -e "$VISION_DATASETS/camvid" ]; then
  for src in ../shared/data/real/seg_camvid shared/data/real/seg_camvid; do
    if [ -d "$src" ]; then ln -s "$(cd "$src" && pwd)" "$VISION_DATASETS/camvid"; break; fi
  done
fi
"$PY" -m vision_cli data check camvid 2>&1 | tail -3
"$PY" -m vision_cli bench run camvid_gpu --out "$OUT/report" 2>&1 | tr '\r' '\n' \
  | tee "$OUT/camvid.log" | grep -a -E '^\[(bench|train)\]|rror' || true
cat "$OUT/report/leaderboard.md" 2>/dev/null || true
echo "[gpu] done: $OUT"
