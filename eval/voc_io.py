"""Files for VOC evaluation (``vision eval voc``): a folder of VOC XML ground truth, a JSON list
of detections, and the class list to score."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from vision.errors import DataError, SkipLog


def read_classes(spec: str | None) -> list[str] | None:
    """Class names from a dataset config (``datasets/NAME.yaml``, a known name) or a text file
    with one name per line; ``None`` stays ``None``."""
    if spec is None:
        return None
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or not p.exists():
        from vision.config import load_config

        return list(load_config(spec).names)
    names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    if not names:
        raise DataError(str(p), "class names, one per line", "an empty file")
    return names


def load_voc_folder(
    folder: Path | str, names: list[str] | None = None
) -> tuple[dict, list[str], int]:
    """Ground truth of every XML in ``folder`` (raw devkit coordinates), the class names, and
    the number of objects left out because their class is not in ``names`` (as the reference
    scripts score only the classes they are given). Without ``names``: every class found."""
    folder = Path(folder)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(str(folder), "a folder of VOC XML files", "no *.xml files")
    if names is None:
        found = set()
        for f in files:
            try:
                found |= {n.text.strip() for n in ET.parse(f).getroot().iter("name") if n.text}
            except ET.ParseError as e:
                raise DataError(f"{f}:{e.position[0]}", "well-formed VOC XML", str(e)) from e
        names = sorted(found)
    from vision.data.voc import parse_voc_xml

    idx = {n: i for i, n in enumerate(names)}
    skips = SkipLog()
    gts = {
        f.stem: parse_voc_xml(
            f, idx, strict=False, skips=skips, check_bounds=False, zero_based=False
        )
        for f in files
    }
    other = {r: n for r, n in skips.counts.items() if r != "unknown class"}
    if other:  # only objects of unlisted classes may be left out; anything else is an error
        first = skips.first[sorted(other)[0]]  # an object of that kind, not an unlisted class
        raise DataError(str(folder), "valid VOC objects", f"{skips.summary()}: {first}")
    return gts, names, skips.counts.get("unknown class", 0)


def load_voc_detections(
    path: Path | str, gts: dict, names: list[str], ignore_unknown: bool = False
) -> tuple[list[dict], int]:
    """Validate the detection list and turn ``[x, y, w, h]`` into corners. A detection whose
    ``category`` is not in ``names`` is an error, or with ``ignore_unknown`` left out and
    counted. Returns the detections and that count."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "a JSON file of detections", "no such file")
    text = path.read_text()
    if not text.strip():
        raise DataError(str(path), "a JSON list of detections", "an empty file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}", "valid JSON", e.msg) from e
    if not isinstance(raw, list):
        raise DataError(str(path), "a JSON list of detections", type(raw).__name__)
    idx = {n: i for i, n in enumerate(names)}
    dets, unknown = [], 0
    for i, d in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(d, dict):
            raise DataError(where, "a detection object", type(d).__name__)
        for key in ("image_id", "category", "bbox", "score"):
            if key not in d:
                raise DataError(where, f"field '{key}'", f"fields {sorted(d)}")
        if str(d["image_id"]) not in gts:
            raise DataError(
                f"{where} image_id",
                "the stem of an XML file in the annotations",
                repr(d["image_id"]),
            )
        if d["category"] not in idx:
            if ignore_unknown:
                unknown += 1
                continue
            raise DataError(
                f"{where} category",
                f"a class of the ground truth {names}",
                repr(d["category"]),
                "list the classes to score with --classes, or leave such detections out "
                "with --ignore-unknown",
            )
        b = d["bbox"]
        if not (isinstance(b, list) and len(b) == 4):
            raise DataError(f"{where} bbox", "[x, y, w, h]", repr(b))
        x, y, w, h = (float(v) for v in b)
        if not (w >= 0 and h >= 0):
            raise DataError(f"{where} bbox", "[x, y, w, h] with w >= 0 and h >= 0", repr(b))
        dets.append(
            {
                "image_id": str(d["image_id"]),
                "label": idx[d["category"]],
                "box": [x, y, x + w, y + h],
                "score": float(d["score"]),
            }
        )
    return dets, unknown
