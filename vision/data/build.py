"""Build a reader from a dataset config: ``build_dataset(cfg, task, split)``."""

from __future__ import annotations

from pathlib import Path

from vision.config import DatasetConfig, load_config
from vision.data.coco import COCODataset
from vision.data.pairs import PairsDataset
from vision.data.voc import VOCDataset
from vision.errors import DataError


def build_dataset(
    cfg: DatasetConfig | str | Path,
    task: str,
    split: str,
    strict: bool | None = None,
    check_bounds: bool = True,
) -> VOCDataset | COCODataset | PairsDataset:
    """The ``split`` of ``task`` ('detection' or 'segmentation') of a dataset config.

    ``strict=None`` follows the config: ``skip_invalid: true`` (a set with known bad
    annotations, such as BCCD's two point boxes) skips bad items and counts them in the
    reader's ``skips``; otherwise the first bad item raises."""
    if not isinstance(cfg, DatasetConfig):
        cfg = load_config(cfg)
    if strict is None:
        strict = not cfg.extra.get("skip_invalid", False)
    splits = cfg.splits(task)
    if split not in splits:
        raise DataError(
            f"{cfg.source or cfg.name} {task}", f"a split in {sorted(splits)}", repr(split)
        )
    entry = splits[split]
    if not cfg.root.is_dir():
        raise DataError(
            f"dataset {cfg.name}",
            f"its data under {cfg.root}",
            "no such folder",
            "see datasets/README.md for the layout, or set $VISION_DATASETS",
        )
    if cfg.format == "pairs":
        return PairsDataset(
            cfg.root, cfg.names, str(entry), cfg.void, cfg.background, strict=strict
        )
    if cfg.format == "voc":
        return VOCDataset(
            cfg.root,
            cfg.names,
            split=str(entry),
            task=task,
            strict=strict,
            check_bounds=check_bounds,
        )
    if not isinstance(entry, dict) or not {"images", "annotations"} <= set(entry):
        raise DataError(
            f"{cfg.source} {task}.{split}", "{images: DIR, annotations: JSON}", repr(entry)
        )
    return COCODataset(
        cfg.root / entry["annotations"],
        cfg.root / entry["images"],
        names=cfg.names,
        masks=task == "segmentation",
        strict=strict,
        check_bounds=check_bounds,
    )
