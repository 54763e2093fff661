"""``vision train detect|segment``: train a registered model with the evaluation suite's
validation (``eval.metrics.build_evaluator``)."""

from __future__ import annotations

import json

from vision.errors import DataError

# vision.models.DEFAULT_DETECTOR / DEFAULT_SEGMENTER and vision.engine.distill.MODES, spelled
# out so that the command line starts without importing torch (a test keeps them equal)
TRAIN_DEFAULTS = (
    ("detect", "detection", "fcos_lite0"),
    ("segment", "segmentation", "fcn8s_lite0"),
)
KD_MODES = ("pixel", "channel", "channel+pixel")
KD_DECAYS = ("none", "linear", "cosine")
KD_LOGIT_LOSSES = ("binary", "focal")


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a detector or a segmenter")
    p = p.add_subparsers(dest="cmd", required=True)
    for cmd, task, default in TRAIN_DEFAULTS:
        t = p.add_parser(cmd, help=f"train a {task} model")
        t.set_defaults(func=cmd_train, task=task)
        t.add_argument("--data", default="shapes", help="datasets/NAME.yaml or a known name")
        t.add_argument("--model", default=default, help="a registered model name")
        t.add_argument("--epochs", type=int, default=10)
        t.add_argument("--img-size", type=int, default=192)
        t.add_argument("--batch", type=int, default=16)
        t.add_argument("--out", default=None, help="run folder (default runs/MODEL)")
        t.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
        t.add_argument("--lr", type=float, default=1e-3)
        t.add_argument("--weight-decay", type=float, default=1e-4)
        t.add_argument("--schedule", default="cosine", choices=["cosine", "poly"])
        t.add_argument("--warmup-iters", type=int, default=100)
        t.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: off)")
        t.add_argument("--workers", type=int, default=2)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--no-amp", dest="amp", action="store_false", help="disable AMP on CUDA")
        t.add_argument(
            "--bf16",
            action="store_true",
            help="bfloat16 autocast on the CPU (1.4-1.6x faster on CPUs with AVX512-BF16)",
        )
        t.add_argument(
            "--val-every", type=int, default=1, help="validate every N epochs and after the last"
        )
        t.add_argument(
            "--seg-loss", default="ce", choices=["ce", "ce+dice"], help="segmentation loss"
        )
        t.add_argument("--channels-last", action="store_true")
        t.add_argument(
            "--resume",
            nargs="?",
            const="auto",
            default=None,
            help="continue a run (default: OUT/last.pt)",
        )
        t.add_argument("--weights", default=None, help="initialize from a checkpoint (transfer)")
        t.add_argument("--freeze-backbone", action="store_true")
        t.add_argument(
            "--freeze-backbone-epochs", type=int, default=0, help="backbone frozen at first"
        )
        t.add_argument(
            "--backbone-lr-mult", type=float, default=1.0, help="backbone rate = lr x this"
        )
        t.add_argument("--freeze-bn", action="store_true", help="keep backbone BN statistics")
        t.add_argument("--limit-train", type=int, default=None)
        t.add_argument("--limit-val", type=int, default=None)
        t.add_argument("--max-iters", type=int, default=None, help="per epoch (smoke tests)")
        t.add_argument("--threads", type=int, default=None)
        t.add_argument(
            "--stop-after",
            type=int,
            default=None,
            help="run this many epochs now, continue later with --resume",
        )
        t.add_argument("--teacher", default=None, help="a checkpoint to distill from (frozen)")
        t.add_argument("--kd-weight", type=float, default=1.0, help="distillation loss weight")
        t.add_argument("--kd-temperature", type=float, default=2.0)
        t.add_argument(
            "--kd-mode",
            default="pixel",
            choices=KD_MODES,
            help="segmentation KD: per-pixel (Hinton), channel-wise (Shu et al. 2021) or both",
        )
        t.add_argument(
            "--kd-cache",
            action="store_true",
            help="KD: the teacher's outputs for every training image (and its mirror) computed "
            "once before training, not in every step (the teacher misses the colour jitter)",
        )
        t.add_argument(
            "--kd-stride",
            type=int,
            default=1,
            help="segmentation KD on logits average-pooled by this (4: 16x fewer positions)",
        )
        t.add_argument(
            "--kd-decay",
            default="none",
            choices=KD_DECAYS,
            help="the KD weight falling to 0 over the epochs: the labels have the last word",
        )
        t.add_argument(
            "--kd-logit-loss",
            default="binary",
            choices=KD_LOGIT_LOSSES,
            help="detection logit KD: binary KL averaged over every logit, or focal (weighted "
            "by the squared probability gap, divided by the teacher's soft foreground count)",
        )
        t.add_argument(
            "--kd-box-weight",
            type=float,
            default=0.0,
            help="detection KD: > 0 adds box imitation (L1 to the teacher's box regression and "
            "its centerness where the teacher sees objects) at this weight",
        )
        t.add_argument(
            "--kd-teacher-runtime",
            default="torch",
            choices=["torch", "onnx", "int8"],
            help="run a segmentation teacher in ONNX Runtime (float32 or static int8)",
        )
        t.add_argument(
            "--model-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="extra model constructor argument, e.g. upsample=bilinear",
        )


def model_kwargs(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs (values read as YAML scalars) → constructor keyword arguments."""
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataError("--model-arg", "KEY=VALUE", repr(pair))
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def cmd_train(a) -> int:
    from eval.metrics import build_evaluator
    from vision.engine.train import TrainConfig, train

    fields = set(TrainConfig.__dataclass_fields__) - {"task", "out", "model_kwargs"}
    cfg = TrainConfig(
        task=a.task,
        out=a.out or f"runs/{a.model}",
        model_kwargs=model_kwargs(a.model_arg),
        **{k: getattr(a, k) for k in fields if hasattr(a, k)},
    )
    summary = train(cfg, build_evaluator)
    print(json.dumps(summary))
    return 0
