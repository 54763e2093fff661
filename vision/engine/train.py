"""Train a detector or a segmenter.

    vision train detect  --data datasets/shapes.yaml --model fcos_r18 --epochs 12 \\
        --img-size 192 --batch 16 --out runs/fcos_r18
    vision train segment --data datasets/shapes.yaml --model fcn8s --epochs 8 --out runs/fcn8s
    torchrun --nproc_per_node=2 -m vision_cli train segment ...     # distributed (gloo/NCCL)

Validation runs the one evaluation pass (``vision.engine.loop.evaluate``: the run's model
behind a ``Predictor``, as ``vision eval run`` and suites score checkpoints) into an evaluator
built by the caller's ``make_evaluator(task, val_reader, class_names)`` (the command line
passes ``eval.metrics.build_evaluator``); the evaluator names its primary metric
(``evaluator.primary``, e.g. ``coco/AP``), which chooses ``best.pt``. The run folder receives
``args.json``, ``metrics.jsonl``, TensorBoard scalars (``tb/``), ``last.pt`` and ``best.pt``.
``last.pt`` holds everything needed to resume; ``best.pt`` only the weights, metadata and
recipe (a third of the size with AdamW), which is all evaluation, prediction and promotion read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vision.engine.trainer import Trainer
from vision.recipe import TrainConfig, validate


def finetune_config(recipe: dict, **overrides) -> TrainConfig:
    """A fine-tuning run of a checkpoint's own recipe (``ck["args"]``): its options, with
    resuming and distillation off and warm-up capped at 20 iterations, then ``overrides``
    (checked as a recipe is)."""
    fields = TrainConfig.__dataclass_fields__
    cfg = {k: v for k, v in recipe.items() if k in fields}
    cfg.update(resume=None, stop_after=None)  # and every distillation option at its default:
    cfg.update({k: f.default for k, f in fields.items() if k.startswith(("teacher", "kd_"))})
    cfg["warmup_iters"] = min(int(cfg.get("warmup_iters", 0)), 20)
    return validate({**cfg, **overrides}, "fine-tuning recipe")


def backbone_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The feature extractor's parameters (the model's ``backbone_modules``)."""
    return [p for m in model.backbone_modules() for p in m.parameters()]


def train(cfg: TrainConfig, make_evaluator: Callable, log: Callable = print, hooks=None) -> dict:
    """Run training (``Trainer(cfg, make_evaluator, log, hooks).fit()``).
    ``make_evaluator(task, val_reader, class_names)`` builds the validation evaluator; ``hooks``
    replaces the default ones (``vision.engine.hooks.default_hooks``). Returns the last
    epoch's summary (also written to ``metrics.jsonl``)."""
    return Trainer(cfg, make_evaluator, log, hooks).fit()
