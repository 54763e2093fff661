#!/usr/bin/env bash
# The compression study of the default models (issue 14): pruning 45 % / 70 % of FLOPs with
# each importance, fine-tuned on a share of the recipe's own iterations, with and without the
# unpruned model as teacher, then the compression table (eager / ONNX / int8 of each); then
# smaller students of other architectures (fcn8s_slim, fcos_r18) with and without the defaults
# as teachers, pruned and timed against the originals.
# Needs the main job's checkpoints (bash run.sh main). About 4 hours on 2 CPU cores.
#   bash bench/studies/compress_study.sh [OUT]          (default reports/compress14)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
S=reports/default/runs/shapes__fcn8s_lite0/best.pt
D=reports/default/runs/shapes__fcos_lite0/best.pt
O=${1:-reports/compress14}
# every run but det_taylor_r8 keeps exact widths (--round-to 1), as when the study was made
run() { tag=$1; shift; echo "== $tag"; .venv/bin/vision compress prune --round-to 1 --out "$O/$tag" "$@"; }
# segmenter: 45 % of FLOPs, 30 % of the recipe's 500 iterations
run seg_all --checkpoint $S --ratio 0.45 --finetune-budget 0.3
run seg_inner --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --scope inner
run seg_bn --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance bn
run seg_taylor --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor
run seg_taylor_inner --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor --scope inner
run seg_taylor_3step --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor --steps 3
run seg_lr002 --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --lr 0.002
run seg_taylor_b1 --checkpoint $S --ratio 0.45 --finetune-budget 1.0 --importance taylor
# distillation: the same pruned student, the same iterations, with the unpruned model as teacher
for seed in 0 1; do
  run seg_mag_s$seed --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --seed $seed
  run seg_mag_kd_s$seed --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --seed $seed --teacher $S
done
# (runs from here on pass: the runs above were made before widths were rounded)
for seed in 0 1 2 3 4; do
  run seg_mag_cwd_s$seed --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --seed $seed \
    --teacher $S --kd-mode channel --kd-weight 3 --kd-temperature 4
done
for seed in 2 3 4; do run seg_mag_s$seed --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --seed $seed; done
for seed in 0 1; do
  run seg_mag_kd3_s$seed --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --seed $seed \
    --teacher $S --kd-weight 3 --kd-temperature 4
done
# the control at the KD run's wall time (a teacher's forward pass makes each step ~1.7x longer)
run seg_mag_b50_s0 --checkpoint $S --ratio 0.45 --finetune-budget 0.5 --seed 0
run seg_taylor_kd --checkpoint $S --ratio 0.45 --finetune-budget 0.3 --importance taylor --teacher $S
run seg70_taylor_b1_kd --checkpoint $S --ratio 0.7 --finetune-budget 1.0 --importance taylor --teacher $S
# detector: 45 % of FLOPs, 30 % (and 100 %) of the recipe's 1,000 iterations
run det_taylor --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor
run det_taylor_kd --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor --teacher $D
run det_taylor_kd025 --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor --teacher $D --kd-weight 0.25
run det_taylor_b1 --checkpoint $D --ratio 0.45 --finetune-budget 1.0 --importance taylor
run det_taylor_s1 --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor --seed 1
run det_taylor_kd025_s1 --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor \
  --seed 1 --teacher $D --kd-weight 0.25
run det_taylor_r8 --checkpoint $D --ratio 0.45 --finetune-budget 0.3 --importance taylor --round-to 8
# the compression tables: every model x eager / onnx / int8, batch-1 latency and metric
.venv/bin/vision compress table --checkpoint base=$S \
  pruned45_b30=$O/seg_taylor/pruned_45/finetune/best.pt \
  pruned45_b100=$O/seg_taylor_b1/pruned_45/finetune/best.pt \
  pruned70_b100_kd=$O/seg70_taylor_b1_kd/pruned_70/finetune/best.pt --data shapes --out $O/table_seg
.venv/bin/vision compress table --checkpoint base=$D \
  pruned45_b30=$O/det_taylor/pruned_45/finetune/best.pt \
  pruned45_b100=$O/det_taylor_b1/pruned_45/finetune/best.pt --data shapes --out $O/table_det
.venv/bin/vision compress table --checkpoint base=$D \
  pruned45_r8_b30=$O/det_taylor_r8/pruned_45/finetune/best.pt \
  pruned45_b30=$O/det_taylor/pruned_45/finetune/best.pt --data shapes --out $O/table_det_r8
# cross-architecture distillation: a smaller, different student, the from-scratch slim ResNet
# FCN-8s (the previous default segmenter; its own 9-epoch recipe), with the Lite0 default as
# teacher (channel-wise KD, weight 3, T 4) and without, three seeds each
slim() { tag=$1; seed=$2; shift 2; echo "== $tag"; .venv/bin/vision train segment --data shapes \
  --model fcn8s_slim --epochs 9 --img-size 128 --batch 8 --lr 0.01 --warmup-iters 100 \
  --seg-loss ce+dice --val-every 9 --seed "$seed" --out "$O/$tag" "$@"; }
for seed in 0 1 2; do
  slim slim_s$seed $seed
  slim slim_cwd_s$seed $seed --teacher $S --kd-mode channel --kd-weight 3 --kd-temperature 4
done
# the control at the KD run's wall time (the teacher's forward pass: ~1.7x per step): 16 epochs
slim slim_e16_s0 0 --epochs 16 --val-every 16
.venv/bin/vision compress table --checkpoint base=$S slim=$O/slim_s0/best.pt \
  slim_cwd=$O/slim_cwd_s0/best.pt --data shapes --out $O/table_slim
# stacked: the 16-epoch student pruned by half its FLOPs (Taylor), fine-tuned on 30 % of its
# recipe with the Lite0 teacher, then every form of it timed against the Lite0 eager
for seed in 0 1; do  # fine-tuning seeds (seed 0's run keeps its original name)
  run slim16_p50_cwd$([ $seed = 0 ] || echo _s$seed) --checkpoint $O/slim_e16_s0/best.pt \
    --ratio 0.5 --importance taylor --finetune-budget 0.3 --teacher $S --kd-mode channel \
    --kd-weight 3 --kd-temperature 4 --round-to 8 --seed $seed
done
.venv/bin/vision compress table --checkpoint base=$S slim16=$O/slim_e16_s0/best.pt \
  slim16_p50_cwd=$O/slim16_p50_cwd/pruned_50/finetune/best.pt --data shapes --out $O/table_slim16
# the distilled student at the control's 16 epochs (channel-wise KD from the Lite0 default),
# then the original, the 16-epoch student alone and the distilled one in every deployable form
slim slim_cwd_e16_s0 0 --epochs 16 --val-every 16 --teacher $S --kd-mode channel --kd-weight 3 \
  --kd-temperature 4
.venv/bin/vision compress table --checkpoint base=$S slim16=$O/slim_e16_s0/best.pt \
  slim16_cwd=$O/slim_cwd_e16_s0/best.pt --data shapes --out $O/table_e16
# cross-architecture detection distillation: the from-scratch fcos_r18 on its main-job recipe
# (bench/quality.py: 4 epochs, 160 px, bfloat16), alone and taught by the Lite0 default
# (PKD on every FPN level through a 1x1 adapter, plus binary KD on the class logits)
r18() { tag=$1; seed=$2; shift 2; echo "== $tag"; .venv/bin/vision train detect --data shapes \
  --model fcos_r18 --epochs 4 --img-size 160 --batch 8 --lr 0.002 --warmup-iters 50 --bf16 \
  --val-every 4 --seed "$seed" --out "$O/$tag" "$@"; }
for seed in 0 1; do
  r18 r18_s$seed $seed
  r18 r18_pkd_s$seed $seed --teacher $D --kd-weight 1
done
# the control at the distilled run's wall time (the teacher: ~1.5x per step): 6 epochs alone
r18 r18_e6_s0 0 --epochs 6 --val-every 6
