"""Dataset configs: flat YAML files in the repository's ``datasets/`` folder.

A config names the dataset's format (``voc`` or ``coco``), its root (relative to the data root
given by ``$VISION_DATASETS``, default ``./datasets``; ``{repo}`` expands to the repository
folder), its class names, and one entry per task
and split. VOC splits are ``ImageSets`` list files; COCO splits are ``{images, annotations}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vision.errors import DataError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "datasets"
FORMATS = ("voc", "coco")
TASKS = ("detection", "segmentation")


def data_root() -> Path:
    """The folder datasets live under: ``$VISION_DATASETS`` or ``./datasets``."""
    return Path(os.environ.get("VISION_DATASETS", "datasets")).expanduser()


@dataclass
class DatasetConfig:
    """A parsed dataset YAML."""

    name: str
    format: str
    root: Path
    names: list[str]
    detection: dict[str, object] = field(default_factory=dict)
    segmentation: dict[str, object] = field(default_factory=dict)
    source: Path | None = None
    extra: dict = field(default_factory=dict)

    def splits(self, task: str) -> dict[str, object]:
        if task not in TASKS:
            raise DataError(f"dataset {self.name}", f"a task in {TASKS}", repr(task))
        entries = getattr(self, task)
        if not entries:
            raise DataError(
                f"{self.source or self.name}",
                f"a '{task}' section with splits",
                "none",
                f"this dataset supports: {[t for t in TASKS if getattr(self, t)]}",
            )
        return entries


def known_datasets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> DatasetConfig:
    """Load ``datasets/<name>.yaml`` or a YAML path. Unknown names list the known ones."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise DataError(
            "dataset config",
            f"a YAML file or one of the known datasets {known_datasets()}",
            repr(str(name_or_path)),
        )
    raw = yaml.safe_load(p.read_text()) or {}
    return parse_config(raw, source=p)


def parse_config(raw: dict, source: Path | None = None) -> DatasetConfig:
    where = str(source or "dataset config")
    for key in ("name", "format", "root", "names"):
        if key not in raw:
            raise DataError(where, f"field '{key}'", f"fields {sorted(raw)}")
    if raw["format"] not in FORMATS:
        raise DataError(f"{where}: format", f"one of {FORMATS}", repr(raw["format"]))
    names = raw["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise DataError(f"{where}: names", "a non-empty list of class names", repr(names))
    root = Path(str(raw["root"]).replace("{repo}", str(CONFIG_DIR.parent))).expanduser()
    if not root.is_absolute():
        root = data_root() / root
    known = {"name", "format", "root", "names", *TASKS}
    return DatasetConfig(
        name=str(raw["name"]),
        format=raw["format"],
        root=root,
        names=list(names),
        detection=dict(raw.get("detection") or {}),
        segmentation=dict(raw.get("segmentation") or {}),
        source=source,
        extra={k: v for k, v in raw.items() if k not in known},
    )
