"""``vision train detect|segment``: train a registered model with the evaluation suite's
validation (``eval.metrics.build_evaluator``), from a recipe file and/or options.

Every option is a field of ``vision.recipe.TrainConfig`` (defined there once, with its help
text and allowed values); this parser is generated from it."""

from __future__ import annotations

import json

# vision.models.DEFAULT_DETECTOR / DEFAULT_SEGMENTER, spelled out so that the command line
# starts without importing torch (a test keeps them equal)
TRAIN_DEFAULTS = (
    ("detect", "detection", "fcos_lite0"),
    ("segment", "segmentation", "fcn8s_lite0"),
)


def add_recipe_arguments(t) -> None:
    """``--config``, ``--set`` and ``--print-config``."""
    t.add_argument(
        "--config",
        default=None,
        help="a recipe: a YAML file, a shipped recipe's name (vision/recipes: default_fcos_lite0,"
        " camvid_fcn8s_lite0...), or a checkpoint (the recipe it was trained with)",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (repeatable; last wins over everything)",
    )
    t.add_argument(
        "--print-config", action="store_true", help="print the resolved recipe as YAML and stop"
    )


def add_commands(sub) -> None:
    from vision_cli.options import add_options

    p = sub.add_parser("train", help="train a detector or a segmenter")
    p = p.add_subparsers(dest="cmd", required=True)
    for cmd, task, default in TRAIN_DEFAULTS:
        t = p.add_parser(cmd, help=f"train a {task} model")
        t.set_defaults(func=cmd_train, task=task, default_model=default)
        add_recipe_arguments(t)
        add_options(t)


def given_options(a) -> dict:
    """The training options typed on the command line (the others are absent)."""
    from vision.recipe import FIELDS

    return {k: v for k, v in vars(a).items() if k in FIELDS and k != "task"}


def cmd_train(a) -> int:
    from vision.recipe import resolve, to_yaml

    defaults = {"data": "shapes", "model": a.default_model}
    cfg = resolve(a.task, a.config, given_options(a), a.set, defaults)
    if a.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from eval.metrics import build_evaluator
    from vision.engine.train import train

    summary = train(cfg, build_evaluator)
    print(json.dumps(summary))
    return 0
