#!/usr/bin/env bash
# Distilling the pruned default detector at equal wall time (issue 14). The student is the main
# job's fcos_lite0 with 45 % of its FLOPs pruned (Taylor importance, widths rounded to 8,
# least-squares reconstruction on 8 batches: bench/records/cpu_2026-12-02i's recipe), pruned
# once; it is then fine-tuned on the base's recipe with the pruned detector's backbone rate
# (--backbone-lr-mult 4), alone for E+1 epochs and distilled for E from TEACHER (PKD on every FPN
# level through a 1x1 adapter plus binary logit KD, weight 1, the teacher's outputs cached once:
# --kd-cache). Runs whose best.pt exists are skipped.
#   TEACHER=reports/kd_det24/teacher_lite0_e24/best.pt bash bench/studies/kd_det_pruned.sh [OUT]
# BASE (default: the main job's detector), EPOCHS (E, default 4), SEEDS (default "0 1"),
# KD_BOX (--kd-box-weight, default 0, tag _box$KD_BOX). About 20 min per seed (E=4; slow host).
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/kd_det_pruned}
T=${TEACHER:?TEACHER=CKPT: the checkpoint to distill from}
BASE=${BASE:-reports/default/runs/shapes__fcos_lite0/best.pt}
E=${EPOCHS:-4}
B=${KD_BOX:-0}
P=$O/prune/pruned_45/pruned.pt
if [ ! -f "$P" ]; then  # prune once, no fine-tune (the runs below are the fine-tunes)
  .venv/bin/vision compress prune --checkpoint "$BASE" --data shapes --ratio 0.45 \
    --importance taylor --round-to 8 --reconstruct 8 --finetune-epochs 0 --out "$O/prune"
fi
ft() { tag=$1; seed=$2; epochs=$3; shift 3; [ -f "$O/$tag/best.pt" ] && return 0
  echo "== $tag"; /usr/bin/time -f "$tag wall %e s" .venv/bin/vision train detect --data shapes \
  --model fcos_lite0 --weights "$P" --epochs "$epochs" --img-size 160 --batch 8 --lr 0.002 \
  --warmup-iters 20 --backbone-lr-mult 4 --channels-last --val-every "$epochs" --seed "$seed" \
  --out "$O/$tag" "$@"; }
b=$([ "$B" = 0 ] || echo "_box$B")
for seed in ${SEEDS:-0 1}; do
  ft "kd${b}_e${E}_s$seed" "$seed" "$E" --teacher "$T" --kd-cache --kd-box-weight "$B"
  ft "alone_e$((E + 1))_s$seed" "$seed" $((E + 1))
done
