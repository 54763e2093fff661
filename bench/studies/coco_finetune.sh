#!/usr/bin/env bash
# Fine-tuning from COCO (issue 43): the COCO-trained NanoDet (nanodet_coco: backbone, neck and
# box head keep their COCO weights, the class rows start anew) against the ImageNet-backbone
# fcos_lite0, each on its shipped recipe for DATA (vision/recipes/DATA_MODEL.yaml), at equal
# wall time: nanodet_coco's recipe has as many epochs as fit in fcos_lite0's training time at
# its measured images/s. Each is scored by `vision eval run` on SPLIT with checkpoint PICK
# (raccoon: val, the 40 upstream test photos, at the last epoch: no epoch chosen on them; bccd:
# test, with the best epoch on val, as the suite does). Prints each run's wall time, summed
# train_time_s and COCO AP.
#   DATA=raccoon SPLIT=val PICK=last bash bench/studies/coco_finetune.sh [OUT]
#   DATA=bccd SPLIT=test PICK=best bash bench/studies/coco_finetune.sh      (OUT: reports/coco_ft)
set -euo pipefail
cd "$(dirname "$0")/../.."
export VISION_DATASETS=${VISION_DATASETS:-$PWD/datasets}
DATA=${DATA:-raccoon}
SPLIT=${SPLIT:-val}
PICK=${PICK:-last}
O=${1:-reports/coco_ft}/$DATA
for model in ${MODELS:-fcos_lite0 nanodet_coco}; do
  run=$O/$model
  if [ ! -f "$run/last.pt" ]; then
    echo "== $DATA $model"
    /usr/bin/time -f "$DATA $model wall %e s" .venv/bin/vision train detect \
      --config "${DATA}_${model}" --data "$DATA" --out "$run"
  fi
  .venv/bin/vision eval run --checkpoint "$run/$PICK.pt" --data "$DATA" --split "$SPLIT" \
    --out "$run/eval_$SPLIT" >"$run/eval_$SPLIT.log" 2>&1
  .venv/bin/python - "$run" "$SPLIT" "$PICK" <<'PY'
import json, sys
from pathlib import Path
run, split = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
train_s = sum(r.get("train_time_s", 0) for r in rows)
m = json.loads((run / f"eval_{split}" / "report.json").read_text())["metrics"]
print(f"{run.parent.name} {run.name} ({sys.argv[3]}.pt): {len(rows)} epochs, train {train_s:.0f} s, "
      f"{split} COCO AP {m['coco']['AP']:.4f} AP50 {m['coco']['AP50']:.4f} "
      f"VOC07 {m['voc07']['mAP']:.4f}")
PY
done
