"""Training recipes: every training option defined once, here, with its help text and its
allowed values; recipe files; and the command-line options generated from them.

A recipe is a YAML mapping of ``TrainConfig`` fields (the shipped ones in ``vision/recipes/``,
``vision train detect --config NAME``). Precedence, lowest first: the defaults below, the
recipe file (or a checkpoint's stored recipe), the options given on the command line, then
``--set key=value``. Everything is checked before any work starts: an unknown key names the
closest valid one, a wrong type or an out-of-range value says what was expected. The command
line's options are generated from these fields (``vision_cli.options``). This module imports
no torch, so the command line parses fast.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from vision.errors import DataError

RECIPES = Path(__file__).resolve().parent / "recipes"  # shipped inside the package
KD_MODES = ("pixel", "channel", "channel+pixel")
KD_DECAYS = ("none", "linear", "cosine")
KD_LOGIT_LOSSES = ("binary", "focal")


def opt(default, help: str, choices=None, low=None, high=None, open_low=False, **kw):
    """A training option: its default, help text, allowed values (``choices``, or a range
    ``low`` ≤ value ≤ ``high``, ``open_low``: strictly above ``low``), CLI details in ``kw``."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "open_low": open_low, **kw}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """One training run's recipe (the checkpoint stores it whole, as ``args``)."""

    task: str = opt(None, "detection or segmentation (the command's subcommand)",
                    ("detection", "segmentation"), cli=False)  # fmt: skip
    data: str = opt(None, "dataset: a config name (datasets/NAME.yaml, shipped) or a YAML path")
    model: str = opt(None, "a registered model name (vision.models.list_models())")
    out: str = opt(None, "run folder (default runs/MODEL)")
    epochs: int = opt(10, "training epochs", low=1)
    img_size: int = opt(192, "square input size in pixels (letterbox)", low=16)
    batch: int = opt(16, "images per step (per process)", low=1)
    optimizer: str = opt("adamw", "optimizer", ("adamw", "sgd"))
    lr: float = opt(1e-3, "base learning rate", low=0, open_low=True)
    weight_decay: float = opt(1e-4, "weight decay", low=0)
    momentum: float = opt(0.9, "SGD momentum", low=0, high=1)
    schedule: str = opt("cosine", "learning-rate schedule after warm-up", ("cosine", "poly"))
    warmup_iters: int = opt(100, "linear warm-up iterations", low=0)
    clip: float = opt(0.0, "gradient norm clip (0: off)", low=0)
    workers: int = opt(2, "data loader processes", low=0)
    seed: int = opt(0, "random seed (weights, data order, augmentation)")
    amp: bool = opt(True, "float16 autocast + gradient scaling on CUDA", flag="--no-amp")
    bf16: bool = opt(False, "bfloat16 autocast on the CPU (1.4-1.6x faster steps on CPUs with "
                     "AVX512-BF16)")  # fmt: skip
    val_every: int = opt(1, "validate every N epochs and after the last", low=1)
    patience: int | None = opt(None, "early stopping: stop after this many validations in a "
                               "row without a new best", low=1)  # fmt: skip
    seg_loss: str = opt("ce", "segmentation loss", ("ce", "ce+dice"))
    channels_last: bool = opt(False, "channels-last memory format (fastest for Lite0 on CPUs)")
    resume: str | None = opt(None, "continue a run (auto: OUT/last.pt)", const="auto")
    weights: str | None = opt(None, "initialize from a checkpoint (transfer learning)")
    freeze_backbone: bool = opt(False, "keep the backbone frozen")
    freeze_backbone_epochs: int = opt(0, "backbone frozen for the first N epochs", low=0)
    backbone_lr_mult: float = opt(1.0, "backbone learning rate = lr x this", low=0)
    freeze_bn: bool = opt(False, "keep the backbone's BatchNorm statistics")
    limit_train: int | None = opt(None, "training images used (smoke tests)", low=1)
    limit_val: int | None = opt(None, "validation images used", low=1)
    max_iters: int | None = opt(None, "iterations per epoch (smoke tests)", low=1)
    stop_after: int | None = opt(None, "epochs to run now, continue later with --resume", low=1)
    threads: int | None = opt(None, "torch threads", low=1)
    model_kwargs: dict = opt({}, "extra model constructor arguments (upsample=bilinear...)",
                             flag="--model-arg")  # fmt: skip
    teacher: str | None = opt(None, "a checkpoint to distill from (frozen)")
    kd_weight: float = opt(1.0, "distillation loss weight", low=0)
    kd_temperature: float = opt(2.0, "distillation temperature", low=0, open_low=True)
    kd_mode: str = opt("pixel", "segmentation KD: per pixel (Hinton), channel-wise (Shu et al. "
                       "2021) or both", KD_MODES)  # fmt: skip
    kd_cache: bool = opt(False, "KD: the teacher's outputs for every training image (and its "
                         "mirror) computed once before training")  # fmt: skip
    kd_stride: int = opt(1, "segmentation KD on logits average-pooled by this", low=1)
    kd_decay: str = opt("none", "the KD weight falling to 0 over the epochs", KD_DECAYS)
    kd_logit_loss: str = opt("binary", "detection logit KD: binary KL, or focal", KD_LOGIT_LOSSES)
    kd_box_weight: float = opt(0.0, "detection KD: > 0 adds box imitation at this weight", low=0)
    kd_teacher_runtime: str = opt("torch", "run a segmentation teacher in ONNX Runtime",
                                  ("torch", "onnx", "int8"))  # fmt: skip


FIELDS = {f.name: f for f in fields(TrainConfig)}
REQUIRED = ("task", "data", "model", "out")


def field_kind(name: str) -> tuple[type, bool]:
    """(base type, optional) of a field, from its annotation."""
    ann = str(FIELDS[name].type)
    optional = "None" in ann
    base = ann.replace("| None", "").strip()
    return {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}[base], optional


def expected(name: str) -> str:
    """What a field accepts, in words."""
    f, (kind, optional) = FIELDS[name], field_kind(name)
    m = f.metadata
    if m["choices"]:
        text = "one of " + ", ".join(map(str, m["choices"]))
    else:
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                dict: "a mapping"}[kind]  # fmt: skip
        if m["low"] is not None:
            text += f" {'>' if m['open_low'] else '≥'} {m['low']}"
        if m["high"] is not None:
            text += f" and ≤ {m['high']}"
    return text + (" (or null)" if optional else "")


def check_value(name: str, value, where: str):
    """``value`` as field ``name`` takes it, or a ``DataError`` saying what was expected."""
    kind, optional = field_kind(name)
    m = FIELDS[name].metadata
    if value is None:
        if optional or name in REQUIRED:
            return None
        raise DataError(f"{where}: key '{name}'", expected(name), "null")
    if kind in (int, float) and isinstance(value, str):  # YAML 1.1 reads 3e-3 as a string
        with contextlib.suppress(ValueError):
            value = kind(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and ok:
        ok = math.isfinite(value)
    if not ok or (m["choices"] and value not in m["choices"]):
        raise DataError(f"{where}: key '{name}'", expected(name), repr(value))
    if m["low"] is not None and (value <= m["low"] if m["open_low"] else value < m["low"]):
        raise DataError(f"{where}: key '{name}'", expected(name), repr(value))
    if m["high"] is not None and value > m["high"]:
        raise DataError(f"{where}: key '{name}'", expected(name), repr(value))
    return value


def check_keys(raw: dict, where: str, allowed=None) -> None:
    """Every key a training option; an unknown one names the closest valid key."""
    allowed = list(allowed or FIELDS)
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "see `vision train detect -h`"
            raise DataError(f"{where}: key '{key}'", "a training option", "an unknown key", hint)


def validate(raw: dict, where: str = "recipe") -> TrainConfig:
    """A whole recipe checked (keys, types, ranges) and made a ``TrainConfig``."""
    check_keys(raw, where)
    values = {k: check_value(k, v, where) for k, v in raw.items()}
    missing = [k for k in REQUIRED if values.get(k) is None]
    if missing:
        raise DataError(where, f"values for {', '.join(missing)}", "none")
    return TrainConfig(**values)


def find_recipe(name: str | Path) -> Path:
    """A recipe file: a path that exists, else a shipped recipe's name."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES / f"{path.stem if path.suffix in ('.yaml', '.yml') else path.name}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise DataError(str(name), f"a recipe YAML, a checkpoint, or a shipped recipe ({names})",
                    "no such file or recipe")  # fmt: skip


def read_recipe(name: str | Path) -> dict:
    """A recipe's mapping: a YAML file or shipped name, or a checkpoint's stored recipe (its
    ``args``: what that run trained with, whole). Keys are checked here; values later, once
    every source is merged."""
    path = find_recipe(name)
    if path.suffix in (".pt", ".pth"):
        from vision.engine.checkpoint import load_checkpoint

        raw = dict(load_checkpoint(path, mmap=True).get("args") or {})
    else:
        raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise DataError(str(path), "a mapping of training options", type(raw).__name__)
    check_keys(raw, str(path))
    return raw


def parse_sets(pairs: list[str]) -> dict:
    """``--set key=value`` pairs, values read as YAML scalars (``lr=2e-3``, ``bf16=true``)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise DataError("--set", "key=value", repr(pair))
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    check_keys(out, "--set")
    return out


def resolve(
    task: str, config=None, given: dict | None = None, sets=(), defaults=None
) -> TrainConfig:
    """The run's recipe: ``defaults`` (the command's), ``config`` (a recipe file, shipped
    name or checkpoint), ``given`` (options typed on the command line), ``sets``
    (``--set``), later ones winning; then checked whole."""
    raw = dict(defaults or {})
    where = "recipe"
    if config:
        raw.update(read_recipe(config))
        where = str(config)
    raw.update(given or {})
    raw.update(parse_sets(list(sets)))
    raw["task"] = task
    if not raw.get("out") and raw.get("model"):
        raw["out"] = f"runs/{raw['model']}"
    return validate(raw, where)


def to_yaml(cfg: TrainConfig) -> str:
    """A recipe file of ``cfg`` (every option, so the run can be repeated from it)."""
    return yaml.safe_dump(asdict(cfg), sort_keys=False)
