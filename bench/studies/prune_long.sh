#!/usr/bin/env bash
# Pruning bases trained to convergence (issue 14): the default segmenter and detector on the
# main job's recipes, only longer (8 epochs instead of 2; 12 instead of 4), then pruned by 45 %
# of FLOPs (Taylor, widths rounded to 8) and fine-tuned on 30 % of their own recipe's
# iterations, with and without least-squares reconstruction. Records in
# bench/records/cpu_2026-12-02h/. About 90 minutes on 2 CPU cores.
#   bash bench/studies/prune_long.sh [OUT]          (default reports/p14l)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/p14l}
mkdir -p "$O"
V=.venv/bin/vision
# the main job's recipes (eval/suites/default.yaml), longer
[ -f "$O/base_seg8/best.pt" ] || $V train segment --data shapes --model fcn8s_lite0 --epochs 8 \
  --img-size 128 --batch 8 --lr 0.01 --warmup-iters 100 --backbone-lr-mult 0.25 \
  --channels-last --seg-loss ce+dice --val-every 2 --out "$O/base_seg8" > "$O/base_seg8.log" 2>&1
S=$O/base_seg8/best.pt
run() { tag=$1; shift; echo "== $tag"; $V compress prune --out "$O/$tag" "$@" > "$O/$tag.log" 2>&1; }
unrefined() { $V eval run --checkpoint "$O/$1/pruned_45/pruned.pt" --data shapes --split val \
  --out "$O/$1/unrefined" > /dev/null; }
SEG="--checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor"
B=$O/base_det12/best.pt
DET="--checkpoint $B --ratio 0.45 --finetune-budget 0.3 --importance taylor"
run seg8 $SEG; unrefined seg8
run seg8_rec $SEG --reconstruct 8; unrefined seg8_rec
run seg8_rec_s1 $SEG --reconstruct 8 --seed 1
# the unpruned base as teacher, its outputs cached once (channel-wise KD, Shu et al. 2021)
run seg8_rec_cwdc $SEG --reconstruct 8 --teacher $S --kd-cache --kd-mode channel --kd-weight 3 \
  --kd-temperature 4
[ -f "$B" ] || $V train detect --data shapes --model fcos_lite0 --epochs 12 \
  --img-size 160 --batch 8 --lr 0.002 --warmup-iters 50 --backbone-lr-mult 0.25 \
  --channels-last --val-every 4 --out "$O/base_det12" > "$O/base_det12.log" 2>&1
run det12_rec $DET --reconstruct 8; unrefined det12_rec
run det12 $DET
run det12_rec_s1 $DET --reconstruct 8 --seed 1
# what the detector takes: 60 % of its recipe
run det12_rec_b06 --checkpoint $B --ratio 0.45 --finetune-budget 0.6 \
  --importance taylor --reconstruct 8
# a milder cut, just above the issue's 40 % floor
run det12_rec41 --checkpoint $B --ratio 0.41 --finetune-budget 0.3 \
  --importance taylor --reconstruct 8
$V compress table --checkpoint base=$B \
  pruned45=$O/det12_rec/pruned_45/finetune/best.pt --data shapes --out "$O/table_det"
$V compress table --checkpoint base=$S pruned45=$O/seg8_rec/pruned_45/finetune/best.pt \
  --data shapes --out "$O/table_seg"
