#!/usr/bin/env bash
# Fine-tuning rates of the pruned longer-trained bases (issue 14): bench/studies/prune_long.sh's 12-epoch
# fcos_lite0 and 8-epoch fcn8s_lite0, pruned by 45 % of FLOPs (Taylor, widths rounded to 8,
# reconstruction on 8 batches) and fine-tuned on 30 % of their recipe (900 / 600 iterations)
# with the backbone at 1-8x the head's rate (the recipes keep it at 0.25x, which suits a
# pretrained backbone, not a pruned one) or the whole rate doubled. Records in
# bench/records/cpu_2026-12-02i/. About 6 min per run on 2 CPU cores; runs already done are skipped.
#   bash bench/studies/prune_det_rates.sh [OUT]          (default reports/p14l; needs its two bases)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/p14l}
V=.venv/bin/vision
# one pruning run of a base (det12: fcos_lite0, 900 iterations; seg8: fcn8s_lite0, 600)
run() { base=$1 tag=$2; shift 2; [ -f "$O/$tag/prune.json" ] && return 0; echo "== $tag"
  $V compress prune --out "$O/$tag" --checkpoint "$O/base_$base/best.pt" --ratio 0.45 \
    --finetune-budget 0.3 --importance taylor --reconstruct 8 "$@" > "$O/$tag.log" 2>&1; }
run det12 det12_rec_bb1 --backbone-lr-mult 1
run det12 det12_rec_lr4 --lr 0.004
run det12 det12_rec_bb1_s1 --backbone-lr-mult 1 --seed 1
run det12 det12_rec_bb2 --backbone-lr-mult 2
run det12 det12_rec_bb1_lr4 --backbone-lr-mult 1 --lr 0.004
run det12 det12_rec_bb2_s1 --backbone-lr-mult 2 --seed 1
run det12 det12_rec_bb4 --backbone-lr-mult 4
run det12 det12_rec_bb4_s1 --backbone-lr-mult 4 --seed 1
run det12 det12_rec_bb8 --backbone-lr-mult 8
run seg8 seg8_rec_bb1 --backbone-lr-mult 1
run seg8 seg8_rec_bb2 --backbone-lr-mult 2
