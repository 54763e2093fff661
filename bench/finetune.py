"""Fine-tune a checkpoint with its own training recipe, optionally distilling from a teacher
(the controls and KD runs of the compression study).

    .venv/bin/python bench/finetune.py START.pt OUT_DIR EPOCHS [TEACHER.pt [RECIPE_FROM.pt]]

``START.pt`` may be a pruned checkpoint (its shapes are rebuilt); the recipe (rate, batch, size,
loss, bf16...) is read from ``RECIPE_FROM.pt`` (default: ``START.pt``), warm-up capped at 20
iterations as ``vision compress prune`` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.metrics import build_evaluator  # noqa: E402
from vision.engine.checkpoint import load_checkpoint  # noqa: E402
from vision.engine.train import finetune_config, train  # noqa: E402


def main() -> int:
    start, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    teacher = sys.argv[4] if len(sys.argv) > 4 else None
    recipe = load_checkpoint(sys.argv[5] if len(sys.argv) > 5 else start)["args"]
    cfg = finetune_config(recipe, data="shapes", out=out, weights=start, epochs=epochs,
                          teacher=teacher)  # fmt: skip
    torch.manual_seed(0)
    summary = train(cfg, build_evaluator)
    print(json.dumps({k: v for k, v in summary.items() if k in ("epoch", "coco/AP", "seg/mIoU")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
