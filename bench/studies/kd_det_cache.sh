#!/usr/bin/env bash
# Detection distillation at equal wall time with cached teacher outputs (issue 14). The student
# is the from-scratch fcos_r18 on its main-job recipe (bench/quality.py: 4 epochs, 160 px,
# bfloat16); the teacher is the main job's fcos_lite0 (PKD on every FPN level through a 1x1
# adapter plus binary KD on the class logits, weight 1), its FPN features and class logits for
# every training image and its mirror computed once (--kd-cache) instead of in every step. Per
# seed: the student alone for E and E+1 epochs (the controls bracketing the distilled run's wall
# time) and distilled for E (EPOCHS, default 4); BRACKET=0 skips the E-epoch control (the
# plateau schedule, where E+1 alone is the one control at equal wall time). Runs whose best.pt
# exists are skipped.
# Needs the main job's checkpoints (bash run.sh main), or TEACHER=CKPT (bench/records/
# cpu_2026-12-03e: a 24-epoch fcos_lite0, EPOCHS=11 BRACKET=0); KD_WEIGHT (default 1);
# KD_LOGIT=focal (--kd-logit-loss focal, tag _focal), KD_T (--kd-temperature, default 2) and
# KD_BOX (--kd-box-weight, default 0, tag _box$KD_BOX); STUDENT (default fcos_r18; another
# registry detector, e.g. fcos_slim, prefixes every tag with its name instead of r18).
# About 25 min per seed (E=4).
#   bash bench/studies/kd_det_cache.sh [OUT]     (default reports/kd_det_cache; SEEDS="0 1")
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/kd_det_cache}
D=${TEACHER:-reports/default/runs/shapes__fcos_lite0/best.pt}
S=${STUDENT:-fcos_r18}
P=$([ "$S" = fcos_r18 ] && echo r18 || echo "${S#fcos_}")   # every tag starts with it: r18, slim...
run() { tag=$P$1; seed=$2; epochs=$3; shift 3; [ -f "$O/$tag/best.pt" ] && return 0
  echo "== $tag"; /usr/bin/time -f "$tag wall %e s" .venv/bin/vision train detect --data shapes \
  --model "$S" --epochs "$epochs" --img-size 160 --batch 8 --lr 0.002 --warmup-iters 50 \
  --bf16 --val-every "$epochs" --seed "$seed" --out "$O/$tag" "$@"; }
E=${EPOCHS:-4}                    # EPOCHS=7: the longer budget, where the student nears the teacher
x=$([ "$E" = 4 ] || echo "_e$E")  # the 4-epoch runs keep the names they were first run under
W=${KD_WEIGHT:-1}
w=$([ "$W" = 1 ] || echo "_w$W")  # the weight-1 runs keep their names too
L=${KD_LOGIT:-binary}; T=${KD_T:-2}; B=${KD_BOX:-0}
w=$w$([ "$L" = binary ] || echo "_$L")$([ "$T" = 2 ] || echo "_t$T")$([ "$B" = 0 ] || echo "_box$B")
for seed in ${SEEDS:-0 1}; do
  [ "${BRACKET:-1}" = 0 ] || run "${x}_s$seed" "$seed" "$E"
  run "_pkdc${w}${x}_s$seed" "$seed" "$E" --teacher "$D" --kd-weight "$W" --kd-cache \
    --kd-logit-loss "$L" --kd-temperature "$T" --kd-box-weight "$B"
  run "_e$((E + 1))_s$seed" "$seed" $((E + 1))
done
