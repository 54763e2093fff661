#!/usr/bin/env bash
# Distillation on real photos (issue 14): CamVid (11 classes, 367 train / 101 val street scenes,
# void ignored). The student is the from-scratch ResNet FCN-8s (fcn8s_slim) on the CamVid suite's
# recipe (eval/suites/camvid.yaml: 45 epochs); the teacher is the ImageNet-pretrained
# fcn8s_lite0 on the suite's recipe. Per seed, the student alone (45 epochs) against the student
# distilled (channel-wise KD, Shu et al. 2021, weight 3, T 4) for the epochs that fit the same
# wall time: each of its steps also runs the teacher's forward pass (8.7 against 17.6 images/s
# in a 20-step probe), so KD_EPOCHS=22 by default. Then the same with --kd-cache: the teacher's
# logits of every training image and its mirror image computed once (about 40 s), so a step
# costs the student and the loss only (12.4 against 17 images/s alone in a 20-step profile: the
# full-resolution KD loss is the rest), so KDC_EPOCHS=30 by default. Then the cache with the
# KD on logits average-pooled by 4 (--kd-stride 4: the loss ~7x cheaper, the cache 16x smaller),
# so KDS_EPOCHS=41 by default. Then a live teacher again (the student's own jittered views), run
# by ONNX Runtime in int8 (--kd-teacher-runtime int8: 0.16 against 0.24 s per batch for the
# eager bfloat16 teacher), KD at stride 4: a step costs ~1.28x the student's alone, so
# KDQ_EPOCHS=35 by default. "pixel" (not in the default KINDS): the stride-4 cached run with
# pixel-wise KD (Hinton, T 2, weight PIXEL_WEIGHT, default 1) instead of channel-wise; "both":
# that run with channel-wise plus pixel-wise KD (--kd-mode channel+pixel, weight 3, T 4);
# "decay": the "stride" run with its KD weight falling to 0 over the run (--kd-decay KD_DECAY,
# default linear; tag slim_cwds4lin_e$KDS_EPOCHS). KINDS
# picks the runs (default "alone live cache stride int8"); ALONE_EPOCHS (default 45) the student
# alone's epochs, for other schedules with KDS_EPOCHS to match (90 and 82, 22 and 20 or 19).
# Runs whose best.pt exists are skipped.
# Needs $VISION_DATASETS/camvid (datasets/README.md). About 15 min for the teacher and 35 min
# per seed on 2 CPU cores.
#   bash bench/studies/kd_camvid.sh [OUT]      (default reports/kd_camvid; SEEDS="0 1 2")
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/kd_camvid}
T=$O/teacher/best.pt
A=${ALONE_EPOCHS:-45}
E=${KD_EPOCHS:-22}
C=${KDC_EPOCHS:-30}
S=${KDS_EPOCHS:-41}
Q=${KDQ_EPOCHS:-35}
DECAY=${KD_DECAY:-linear}
K=" ${KINDS:-alone live cache stride int8} "
timed() { tag=$1; shift; echo "== $tag"; /usr/bin/time -f "$tag wall %e s" "$@"; }
[ -f "$T" ] || timed teacher .venv/bin/vision train segment --data camvid --model fcn8s_lite0 \
  --epochs 14 --img-size 320 --batch 8 --lr 0.002 --backbone-lr-mult 0.25 --warmup-iters 50 \
  --bf16 --seg-loss ce+dice --val-every 7 --workers 1 --out "$O/teacher"
slim() { tag=$1; epochs=$2; seed=$3; shift 3; [ -f "$O/$tag/best.pt" ] && return 0
  timed "$tag" .venv/bin/vision train segment \
  --data camvid --model fcn8s_slim --epochs "$epochs" --img-size 320 --batch 8 --lr 0.01 \
  --warmup-iters 100 --bf16 --seg-loss ce+dice --val-every "$epochs" --workers 1 --seed "$seed" \
  --out "$O/$tag" "$@"; }
for seed in ${SEEDS:-0 1 2}; do  # seed 0's runs keep the names they were first run under
  s=$([ "$seed" = 0 ] || echo "_s$seed")
  kd=(--teacher "$T" --kd-mode channel --kd-weight 3 --kd-temperature 4)
  [[ $K != *" alone "* ]] || slim "slim_e$A$s" "$A" "$seed"
  [[ $K != *" live "* ]] || slim "slim_cwd_e$E$s" "$E" "$seed" "${kd[@]}"
  [[ $K != *" cache "* ]] || slim "slim_cwdc_e$C$s" "$C" "$seed" "${kd[@]}" --kd-cache
  [[ $K != *" stride "* ]] || slim "slim_cwds4_e$S$s" "$S" "$seed" "${kd[@]}" --kd-cache \
    --kd-stride 4
  [[ $K != *" pixel "* ]] || slim "slim_pkds4_e$S$s" "$S" "$seed" --teacher "$T" --kd-mode pixel \
    --kd-weight "${PIXEL_WEIGHT:-1}" --kd-temperature 2 --kd-cache --kd-stride 4
  [[ $K != *" both "* ]] || slim "slim_cpkds4_e$S$s" "$S" "$seed" --teacher "$T" \
    --kd-mode channel+pixel --kd-weight 3 --kd-temperature 4 --kd-cache --kd-stride 4
  [[ $K != *" decay "* ]] || slim "slim_cwds4${DECAY:0:3}_e$S$s" "$S" "$seed" "${kd[@]}" \
    --kd-cache --kd-stride 4 --kd-decay "$DECAY"
  [[ $K != *" int8 "* ]] || slim "slim_cwdq4_e$Q$s" "$Q" "$seed" "${kd[@]}" --kd-stride 4 \
    --kd-teacher-runtime int8
done
