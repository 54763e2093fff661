#!/usr/bin/env bash
# Detection distillation on real photos (issue 14): the raccoon set (160 train / 40 val, one
# class; DATA names another detection config, IMG its size: only raccoon was measured, records
# in bench/records/cpu_2026-12-04f/). The student is the from-scratch default detector
# (fcos_r18) on the suite's recipe (eval/suites/raccoon.yaml: 256 px, bfloat16); the teacher is
# the ImageNet-pretrained fcos_lite0 on the suite's recipe, trained first (TEACHER_EPOCHS,
# default 20). Per seed: the student alone for ALONE_EPOCHS (default 20) and distilled for
# KD_EPOCHS (default 19: the cached teacher pass, 160 images and their mirrors, costs under one
# epoch) with --kd-cache (PKD on every FPN level through a 1x1 adapter plus binary KD on the
# class logits, weight KD_WEIGHT, default 1). LONG_EPOCHS (default 0: none) adds a longer run
# alone, to see whether time alone closes the gap. Runs whose best.pt exists are skipped;
# every run's wall time is printed ("TAG wall S s").
#   bash bench/studies/kd_det_real.sh [OUT]     (default reports/kd_det_$DATA; SEEDS="0 1 2")
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
DATA=${DATA:-raccoon}
O=${1:-reports/kd_det_$DATA}
IMG=${IMG:-256}
T=$O/teacher/best.pt
A=${ALONE_EPOCHS:-20}
K=${KD_EPOCHS:-19}
L=${LONG_EPOCHS:-0}
W=${KD_WEIGHT:-1}
w=$([ "$W" = 1 ] || echo "_w$W")
timed() { tag=$1; shift; echo "== $tag"; /usr/bin/time -f "$tag wall %e s" "$@"; }
[ -f "$T" ] || timed teacher .venv/bin/vision train detect --data "$DATA" --model fcos_lite0 \
  --epochs "${TEACHER_EPOCHS:-20}" --img-size "$IMG" --batch 8 --lr 0.002 \
  --backbone-lr-mult 0.25 --warmup-iters 50 --channels-last --val-every 5 --workers 1 \
  --out "$O/teacher"
r18() { tag=$1; epochs=$2; seed=$3; shift 3; [ -f "$O/$tag/best.pt" ] && return 0
  timed "$tag" .venv/bin/vision train detect --data "$DATA" --model fcos_r18 --epochs "$epochs" \
  --img-size "$IMG" --batch 8 --lr 0.002 --warmup-iters 50 --bf16 --val-every "$epochs" \
  --workers 1 --seed "$seed" --out "$O/$tag" "$@"; }
for seed in ${SEEDS:-0 1 2}; do
  r18 "r18_e${A}_s$seed" "$A" "$seed"
  r18 "r18_pkdc${w}_e${K}_s$seed" "$K" "$seed" --teacher "$T" --kd-weight "$W" --kd-cache
  [ "$L" = 0 ] || r18 "r18_e${L}_s$seed" "$L" "$seed"
done
