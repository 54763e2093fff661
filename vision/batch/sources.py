"""What ``vision predict --source`` names, as a sorted list of items.

A source is an image file, a folder (every file under it, hidden ones skipped and counted), a
glob (``"photos/**/*.jpg"``), a ``.txt`` file of paths (one per line, relative to the list's
folder), or a COCO instances ``.json`` whose images are predicted under their own ids (so the
results can be scored as they are). Files that cannot be decoded are not filtered out here:
they reach ``errors.jsonl`` with their reason.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vision.errors import DataError

GLOB_CHARS = set("*?[")
EXPECTED = "an image file, a folder, a glob, a .txt list of paths or a COCO instances .json"


@dataclass(frozen=True)
class Item:
    """One image to predict: its path, its COCO image id, and ``rel``, the name its outputs
    take under the job folder (its path below the sources' common folder, suffix dropped)."""

    path: str
    image_id: int
    rel: str


@dataclass
class Sources:
    items: list[Item]
    categories: list[dict] | None = None  # a COCO JSON's categories, for its category ids
    skipped: dict[str, int] = field(default_factory=dict)  # hidden files, duplicates


def collect(sources: list[str], image_root: str | None = None) -> Sources:
    """Every item the sources name, each path once (absolute, sorted; a COCO JSON's in its
    own order with its ids)."""
    if not sources:
        raise DataError("--source", EXPECTED, "nothing")
    jsons = [s for s in sources if s.endswith(".json")]
    if jsons:
        if len(sources) > 1:
            raise DataError(
                "--source", "a COCO instances JSON alone (its ids are the results' ids)", sources
            )
        return _coco(Path(jsons[0]), image_root)
    paths: list[str] = []
    skipped = {"hidden": 0, "duplicates": 0}
    for src in sources:
        paths += _expand(src, skipped)
    unique = sorted(set(paths))
    skipped["duplicates"] = len(paths) - len(unique)
    rels = _rel_names(unique)
    items = [Item(p, i + 1, r) for i, (p, r) in enumerate(zip(unique, rels, strict=True))]
    return Sources(items, None, skipped)


def _expand(src: str, skipped: dict[str, int]) -> list[str]:
    path = Path(src).expanduser()
    if path.is_dir():
        out = []
        for root, dirs, files in os.walk(path):
            hidden = [d for d in dirs if d.startswith(".")]
            skipped["hidden"] += len(hidden) + sum(f.startswith(".") for f in files)
            dirs[:] = sorted(set(dirs) - set(hidden))
            out += [str((Path(root) / f).resolve()) for f in files if not f.startswith(".")]
        return out
    if path.suffix == ".txt" and path.is_file():
        base = path.resolve().parent
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [str((base / Path(line).expanduser()).resolve()) for line in lines if line]
    if path.is_file():
        return [str(path.resolve())]
    if GLOB_CHARS & set(src):
        found = [p for p in glob.glob(os.path.expanduser(src), recursive=True) if Path(p).is_file()]
        if not found:
            raise DataError(src, f"{EXPECTED} (a glob matching files)", "no file matches")
        return [str(Path(p).resolve()) for p in found]
    raise DataError(src, EXPECTED, "no such file or folder")


def _rel_names(paths: list[str]) -> list[str]:
    """Output names: each path below the common folder without its suffix; where two share a
    name (``a.jpg``, ``a.png``) they keep their suffixes."""
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    rels = [os.path.relpath(p, common) for p in paths]
    stems = [os.path.splitext(r)[0] for r in rels]
    clash = {s for s in stems if stems.count(s) > 1} if len(set(stems)) < len(stems) else set()
    return [r if s in clash else s for r, s in zip(rels, stems, strict=True)]


def _coco(path: Path, image_root: str | None) -> Sources:
    if not path.is_file():
        raise DataError(str(path), "a COCO instances JSON file", "no such file")
    try:
        data = json.loads(path.read_bytes())
        images = data["images"]
        rows = [(int(im["id"]), str(im["file_name"])) for im in images]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            str(path), "COCO instances JSON with images[].id and images[].file_name", repr(e)
        ) from e
    root = _image_root(path, image_root, rows)
    items = [Item(str((root / f).resolve()), i, os.path.splitext(f)[0]) for i, f in rows]
    cats = data.get("categories")
    return Sources(items, cats if isinstance(cats, list) else None, {"hidden": 0, "duplicates": 0})


def _image_root(path: Path, given: str | None, rows: list[tuple[int, str]]) -> Path:
    """Where a COCO JSON's ``file_name``s are: ``--image-root``, else the first of the JSON's
    folder, its parent, ``../images`` and ``../<split>`` (``instances_val2017`` → ``val2017``)
    holding the first image."""
    if given:
        return Path(given).expanduser()
    d = path.resolve().parent
    split = path.stem.removeprefix("instances_")
    candidates = [d, d.parent, d.parent / "images", d.parent / split]
    for c in candidates:
        if not rows or (c / rows[0][1]).is_file():
            return c
    raise DataError(
        str(path),
        f"its images ({rows[0][1]}) in one of {[str(c) for c in candidates]}",
        "not found",
        "give the folder with --image-root",
    )
