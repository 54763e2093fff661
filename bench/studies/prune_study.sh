#!/usr/bin/env bash
# Pruning the default models with the detector's head towers pruned too (whole GroupNorm
# groups), global vs per-layer ranking, fine-tuning rates, and least-squares reconstruction
# (issue 14; records in bench/records/cpu_2026-12-02g/). Needs the main job's checkpoints
# (bash run.sh main). About 50 minutes on 2 CPU cores.
#   bash bench/studies/prune_study.sh [OUT]          (default reports/p14)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
S=reports/default/runs/shapes__fcn8s_lite0/best.pt
D=reports/default/runs/shapes__fcos_lite0/best.pt
O=${1:-reports/p14}
mkdir -p "$O"
run() { tag=$1; shift; echo "== $tag"; .venv/bin/vision compress prune --out "$O/$tag" "$@" > "$O/$tag.log" 2>&1; }
# the pruned network itself, before any fine-tuning (BN re-estimated or layers refitted)
unrefined() { .venv/bin/vision eval run --checkpoint "$O/$1/pruned_45/pruned.pt" --data shapes \
  --split val --out "$O/$1/unrefined" > /dev/null; }
SEG="--checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor"
DET="--checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor"
# detector: head towers pruned (whole GroupNorm groups), per-layer and global ranking
run det_head_taylor $DET; unrefined det_head_taylor
run det_head_taylor_s1 $DET --seed 1
run det_glob_taylor $DET --ranking global
run det_head_taylor_b1 --checkpoint $D --ratio 0.45 --finetune-budget 1.0 --importance taylor
run det_bb005 $DET --backbone-lr-mult 0.05
# segmenter: per-layer and global ranking, fine-tuning rates, channel-wise KD, 41 % asked
run seg_taylor_r8 $SEG; unrefined seg_taylor_r8
run seg_glob_taylor $SEG --ranking global
run seg_taylor_lr003 $SEG --lr 0.003
run seg_taylor_lr02 $SEG --lr 0.02
run seg_taylor_cwd $SEG --teacher $S --kd-mode channel --kd-weight 3 --kd-temperature 4
run seg41_taylor --checkpoint $S --ratio 0.41 --finetune-budget 0.3 --importance taylor
run seg_bb005 $SEG --backbone-lr-mult 0.05
# least-squares reconstruction on 8 batches (BN statistics kept unless --recalibrate), then the
# same fine-tuning (the records' seg_taylor_rec8*, seg_rec8_*, seg_rec24, seg_rec_bb*, det_rec8
# and det_rec_bb005 ran an earlier fit: ridge 1e-3 towards zero instead of 1e-2 towards the
# sliced weights)
run seg_rec $SEG --reconstruct 8; unrefined seg_rec
run seg_rec_recal $SEG --reconstruct 8 --recalibrate 40; unrefined seg_rec_recal
run seg_rec8_lr002 $SEG --reconstruct 8 --lr 0.002
run seg_rec8_lr0005 $SEG --reconstruct 8 --lr 0.0005
run seg_rec24 $SEG --reconstruct 24 --lr 0.002
run seg_rec_bb005 $SEG --reconstruct 8 --backbone-lr-mult 0.05
run seg_rec_bb0 $SEG --reconstruct 8 --backbone-lr-mult 0
run det_rec $DET --reconstruct 8; unrefined det_rec
run det_rec_s1 $DET --reconstruct 8 --seed 1
run det_rec_bb005 $DET --reconstruct 8 --backbone-lr-mult 0.05
run det_rec_b1 --checkpoint $D --ratio 0.45 --finetune-budget 1.0 --importance taylor --reconstruct 8
.venv/bin/vision compress table --checkpoint base=$D \
  head45_b30=$O/det_head_taylor/pruned_45/finetune/best.pt \
  head45_b100=$O/det_head_taylor_b1/pruned_45/finetune/best.pt --data shapes --out "$O/table_det"
