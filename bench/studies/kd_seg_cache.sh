#!/usr/bin/env bash
# Segmentation distillation at equal wall time with cached teacher outputs (issue 14), on the
# built-in dataset. The student is the from-scratch fcn8s_slim on its 9-epoch recipe
# (bench/studies/compress_study.sh's `slim`), the teacher the main job's fcn8s_lite0 (channel-wise KD,
# weight 3, T 4), its logits for every training image and its mirror computed once (--kd-cache).
# Per seed: distilled for E epochs and, as the control, the student alone for E+1 epochs (more
# than the distilled run's wall time: the cache costs less than an epoch). Runs whose best.pt
# exists are skipped. Needs the main job's checkpoints (bash run.sh main). ~11 min per seed.
#   bash bench/studies/kd_seg_cache.sh [OUT]     (default reports/kd_seg_cache; SEEDS="0 1", EPOCHS=9)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
O=${1:-reports/kd_seg_cache}
S=${TEACHER:-reports/default/runs/shapes__fcn8s_lite0/best.pt}
slim() { tag=$1; seed=$2; epochs=$3; shift 3; [ -f "$O/$tag/best.pt" ] && return 0
  echo "== $tag"; /usr/bin/time -f "$tag wall %e s" .venv/bin/vision train segment --data shapes \
  --model fcn8s_slim --epochs "$epochs" --img-size 128 --batch 8 --lr 0.01 --warmup-iters 100 \
  --seg-loss ce+dice --val-every "$epochs" --seed "$seed" --out "$O/$tag" "$@"; }
E=${EPOCHS:-9}
for seed in ${SEEDS:-0 1}; do
  slim "slim_cwdc_s$seed" "$seed" "$E" --teacher "$S" --kd-mode channel --kd-weight 3 \
    --kd-temperature 4 --kd-cache
  slim "slim_e$((E + 1))_s$seed" "$seed" $((E + 1))
done
