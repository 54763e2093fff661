"""Dataset configs: flat YAML files, found by name.

A config names the dataset's format (``voc`` or ``coco``), its root (relative to the data root
given by ``$VISION_DATASETS``, default ``./datasets``; ``{repo}`` expands to the folder above
the config's own folder, the repository for the shipped configs), its class names, and one
entry per task and split. VOC splits are ``ImageSets`` list files; COCO splits are
``{images, annotations}``; ``pairs`` splits (segmentation only) list ``image label`` lines.

Segmentation label maps: ``background: true`` (default) means index ``0`` is background and
``k + 1`` is ``names[k]`` (VOC, COCO, shapes); ``background: false`` means every index is a
real class (CamVid). ``void: V`` reads the value ``V`` as the ignore index; ``colors`` gives
one RGB per mask index (drawings and the service use them).

``load_config(NAME)`` looks for ``NAME.yaml`` in this order (the first found wins):

1. the data root, ``$VISION_DATASETS`` (default ``./datasets``): your own configs beside
   your data;
2. the configs shipped with the package (the repository's ``datasets/*.yaml``, installed as
   the package data ``vision.dataset_configs``, so an installed wheel or a Bento finds them
   without the source tree).

A path ending in ``.yaml``/``.yml`` is read as given.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vision.errors import DataError

FORMATS = ("voc", "coco", "pairs")
TASKS = ("detection", "segmentation")


def shipped_config_dir() -> Path:
    """The folder of the shipped dataset configs (package data, or the checkout's
    ``datasets/``)."""
    spec = importlib.util.find_spec("vision.dataset_configs")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if Path(loc).is_dir():
            return Path(loc)
    return Path(__file__).resolve().parents[1] / "datasets"


def data_root() -> Path:
    """The folder datasets live under: ``$VISION_DATASETS`` or ``./datasets``."""
    return Path(os.environ.get("VISION_DATASETS", "datasets")).expanduser()


def config_search_path() -> list[Path]:
    """Where ``load_config`` looks for ``NAME.yaml``, in order."""
    return [data_root(), shipped_config_dir()]


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
    background: bool = True
    void: int | None = None
    colors: list[list[int]] = field(default_factory=list)

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
    return sorted({p.stem for d in config_search_path() for p in d.glob("*.yaml")})


def find_config(name: str) -> Path | None:
    """The first ``NAME.yaml`` on the search path, or None."""
    for folder in config_search_path():
        p = folder / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def load_config(name_or_path: str | Path) -> DatasetConfig:
    """Load a dataset config by name (see the search order above) or from a YAML path.
    Unknown names list the known ones and where they were looked for."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = find_config(str(name_or_path)) or p
    if not p.is_file():
        raise DataError(
            "dataset config",
            f"a YAML file or one of the known datasets {known_datasets()}",
            repr(str(name_or_path)),
            f"looked in {[str(d) for d in config_search_path()]}",
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
    repo = (source.resolve().parent.parent if source else Path.cwd()).as_posix()
    root = Path(str(raw["root"]).replace("{repo}", repo)).expanduser()
    if not root.is_absolute():
        root = data_root() / root
    background = raw.get("background", True)
    if not isinstance(background, bool):
        raise DataError(f"{where}: background", "true or false", repr(background))
    void = raw.get("void")
    if void is not None and (not isinstance(void, int) or not 0 <= void <= 255):
        raise DataError(f"{where}: void", "a label value 0..255", repr(void))
    n_mask = len(names) + int(background)
    colors = raw.get("colors") or []
    if colors and (
        len(colors) != n_mask
        or not all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in colors
        )
    ):
        raise DataError(
            f"{where}: colors",
            f"{n_mask} [R, G, B] triples of 0..255 (one per mask index"
            f"{', background first' if background else ''})",
            f"{len(colors)} entries: {colors[:3]}...",
        )
    if raw["format"] != "pairs" and (not background or void is not None):
        raise DataError(
            f"{where}: background/void",
            "the format's own convention for a 'voc' or 'coco' dataset (0 = background, "
            "255 = void)",
            f"background={background}, void={void}",
            "label maps with other conventions are read by format: pairs",
        )
    if raw["format"] == "pairs" and raw.get("detection"):
        raise DataError(f"{where}: detection", "no detection section for a 'pairs' dataset", "one")
    known = {"name", "format", "root", "names", "background", "void", "colors", *TASKS}
    return DatasetConfig(
        name=str(raw["name"]),
        format=raw["format"],
        root=root,
        names=list(names),
        detection=dict(raw.get("detection") or {}),
        segmentation=dict(raw.get("segmentation") or {}),
        source=source,
        extra={k: v for k, v in raw.items() if k not in known},
        background=background,
        void=void,
        colors=[list(c) for c in colors],
    )


def weights_root() -> Path:
    """Where fetched weights and compiled models live: ``$VISION_WEIGHTS``, else
    ``~/.cache/vision``."""
    return Path(os.environ.get("VISION_WEIGHTS") or Path.home() / ".cache" / "vision")
