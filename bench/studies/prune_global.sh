#!/usr/bin/env bash
# Global against per-layer ranking after the 80 % cap fix (issue 14; records in
# bench/records/cpu_2026-12-04e/): the main job's fcos_lite0 and fcn8s_lite0 pruned by 45 % of
# FLOPs (Taylor, widths rounded to 8) and fine-tuned on 30 % of their recipe, each ranking with
# and without least-squares reconstruction, seed 0. The layers' kept shares are in each run's
# prune.json. About 40 minutes on 2 CPU cores; runs already done are skipped.
#   bash bench/studies/prune_global.sh [OUT]          (default reports/p14g; needs bash run.sh main)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
S=reports/default/runs/shapes__fcn8s_lite0/best.pt
D=reports/default/runs/shapes__fcos_lite0/best.pt
O=${1:-reports/p14g}
mkdir -p "$O"
run() { tag=$1 ck=$2; shift 2; [ -f "$O/$tag/prune.json" ] && return 0; echo "== $tag"
  .venv/bin/vision compress prune --out "$O/$tag" --checkpoint "$ck" --ratio 0.45 \
    --finetune-budget 0.3 --importance taylor "$@" > "$O/$tag.log" 2>&1; }
for r in layer global; do
  run "det_$r" $D --ranking $r
  run "seg_$r" $S --ranking $r
  run "det_${r}_rec" $D --ranking $r --reconstruct 8
  run "seg_${r}_rec" $S --ranking $r --reconstruct 8
done
