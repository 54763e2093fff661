"""COCO ground truth and detection results as columns for :mod:`eval.coco_engine`, with the
checks that name the first bad detection (field, index, what was expected and found).

A box results file is decoded in slices of about 32 MB (split between two top-level objects)
by msgspec into typed, garbage-collector-free structs (every field's type checked as it is
read), each slice turned into columns and dropped: no dict per detection, so five million
detections fit in well under 2 GB. A file that cannot be split that way, and mask results, are
parsed whole.
"""

from __future__ import annotations

import math
import re
from itertools import chain
from pathlib import Path
from typing import Annotated, NoReturn

import msgspec
import numpy as np
import orjson

from eval.coco_engine import Columns
from vision.errors import DataError

SLICE = 32 << 20
_BETWEEN = re.compile(rb"\}\s*,\s*\{")


def read_json(path: Path) -> object:
    """A JSON file, with its error location and a clear message when missing or empty."""
    if not path.is_file():
        raise DataError(str(path), "a JSON file", "no such file")
    text = path.read_bytes()
    if not text.strip():
        raise DataError(str(path), "a JSON list of detections", "an empty file")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}", "valid JSON", e.msg) from e


def gt_columns(gt: dict, iou_type: str) -> Columns:
    """The evaluated ground truth: ids, areas, crowd flags and boxes or encoded masks."""
    anns = gt["annotations"]
    cols = Columns(
        image_id=np.array([a["image_id"] for a in anns], np.int64),
        category_id=np.array([a["category_id"] for a in anns], np.int64),
        area=np.array([a["area"] for a in anns], np.float64),
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        ids=np.array([a["id"] for a in anns], np.int64),
    )
    _unique_ids(cols.ids)
    if iou_type == "bbox":
        cols.boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    else:
        sizes = _image_sizes(gt)
        cols.rles = [to_rle(a["segmentation"], *sizes[a["image_id"]]) for a in anns]
    return cols


def _image_sizes(gt: dict) -> dict:
    return {im["id"]: (im["height"], im["width"]) for im in gt["images"]}


def _unique_ids(ids: np.ndarray) -> None:
    """Annotation ids must be unique: the COCO API keeps one annotation per id and would score
    the last of two twice, so two ids alike are an error, not a silent difference."""
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        i, j = sorted(order[same[0] : same[0] + 2].tolist())
        raise DataError(
            f"ground truth annotations[{i}] and annotations[{j}]",
            "unique annotation ids (the COCO API keeps one annotation per id)",
            f"id {int(ids[i])} twice",
        )


def to_rle(segm, h: int, w: int) -> dict:
    """An annotation's mask (polygons, uncompressed or compressed RLE) as compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def dt_columns(dt: list | str | Path, gt: dict, iou_type: str) -> Columns:
    """Detections (a list of COCO result objects or a results file) as columns, each field
    checked; a bad detection raises :class:`DataError` naming it."""
    where = "predictions"
    if isinstance(dt, (str, Path)):
        path, where = Path(dt), str(dt)
        if iou_type == "bbox" and path.is_file():
            cols = _box_file_columns(path, gt)
            if cols is not None:
                return cols
        dt = read_json(path)
    return _concat([checked_columns(dt, gt, iou_type, where)], iou_type, gt)


def checked_columns(dt: object, gt: dict, iou_type: str, where: str) -> Columns:
    """A list of detections as columns (masks as given), every detection checked as every
    engine needs it: ids of the ground truth, a finite score, the IoU type's field and a box
    of four finite numbers where ``loadRes`` reads one (box results, or mask results whose
    first detection has a box); the first bad one raises :class:`DataError` naming it."""
    if not isinstance(dt, list):
        raise DataError(where, "a JSON list of detections", type(dt).__name__)
    need_box = iou_type == "bbox" or (bool(dt) and _has_box(dt[0]))
    try:
        c = _part_columns(dt, iou_type, need_box)
        ok = _KnownIds(gt)(c)
    except _Bad:
        ok = False
    if not ok:
        explain_bad_dt(dt, gt, iou_type, where, need_box=need_box)
    return c


class _KnownIds:
    """The ground truth's image and category ids, read once: ``known(cols)`` says whether
    every detection names ids of the ground truth."""

    def __init__(self, gt: dict):
        self.images = np.array([im["id"] for im in gt["images"]], np.int64)
        self.categories = np.array([c["id"] for c in gt["categories"]], np.int64)

    def __call__(self, c: Columns) -> bool:
        return bool(
            np.isin(c.image_id, self.images).all() and np.isin(c.category_id, self.categories).all()
        )


def _box_file_columns(path: Path, gt: dict) -> Columns | None:
    """A box results file decoded slice by slice into typed structs (no dict per detection,
    never more than two slices of the file in memory); None when it must be read whole (not
    a list, or a slice boundary fell inside a string)."""
    parts: list[Columns] = []
    known, decoder = _KnownIds(gt), _box_decoder()
    seen = 0  # detections decoded so far: a bad one is named by its index in the file
    with open(path, "rb") as f:
        buf = f.read(SLICE).lstrip()
        if not buf.startswith(b"["):
            return None
        buf, eof = buf[1:], False
        while not eof:
            more = f.read(SLICE)
            eof = not more
            buf += more
            if eof:
                body = buf.rstrip()
                if not body.endswith(b"]"):
                    return None
                chunk, buf = body[:-1], b""
            else:
                cut = _last_boundary(buf)
                if cut is None:  # one object longer than a slice: read on
                    continue
                chunk, buf = buf[: cut[0]], buf[cut[1] :]
            c = _decode_boxes(b"[" + chunk + b"]", decoder, gt, known, path, seen)
            if c is None:
                return None
            parts.append(c)
            seen += len(c.scores)
    return _concat(parts, "bbox", gt)


def _last_boundary(buf: bytes) -> tuple[int, int] | None:
    """(end of the last complete object, start of the next) in ``buf``, between two
    top-level objects of a results list, or None."""
    pos = len(buf)
    while (pos := buf.rfind(b"}", 0, pos)) >= 0:
        m = _BETWEEN.match(buf, pos)
        if m:
            return pos + 1, m.end() - 1
    return None


def _decode_boxes(
    chunk: bytes, decoder: msgspec.json.Decoder, gt: dict, known: _KnownIds, path: Path, seen: int
) -> Columns | None:
    """One slice (a JSON list) as columns; a bad detection raises, naming its index in the
    file; None when the slice is not valid JSON (the caller reads the file whole)."""
    try:
        dets = decoder.decode(chunk)
    except msgspec.ValidationError:  # a field of the wrong type or range: named by the checks
        try:
            parsed = orjson.loads(chunk)
        except orjson.JSONDecodeError:  # e.g. 1e400: the whole read says where
            return None
        explain_bad_dt(parsed, gt, "bbox", str(path), seen)
    except msgspec.DecodeError:
        return None
    n = len(dets)
    c = Columns(
        np.fromiter((d.image_id for d in dets), np.int64, n),
        np.fromiter((d.category_id for d in dets), np.int64, n),
        np.zeros(0),
        boxes=np.fromiter(chain.from_iterable(d.bbox for d in dets), np.float64, 4 * n),
        scores=np.fromiter((d.score for d in dets), np.float64, n),
    )
    c.boxes = c.boxes.reshape(n, 4)
    if not known(c):  # JSON numbers that decode are finite: ids are left to check
        explain_bad_dt(orjson.loads(chunk), gt, "bbox", str(path), seen)
    return c


_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # ids as the columns hold them


def _box_decoder() -> msgspec.json.Decoder:
    """A decoder of box results into typed structs (made per file: a few microseconds)."""
    det = msgspec.defstruct(
        "Det",
        [
            ("image_id", _Int64),
            ("category_id", _Int64),
            ("score", float),
            ("bbox", tuple[float, float, float, float]),
        ],  # fmt: skip
        gc=False,
    )
    return msgspec.json.Decoder(list[det])


class _Bad(Exception):
    pass


def _array(values: list, kinds: str) -> np.ndarray:
    """``values`` as an array whose dtype kind is one of ``kinds`` (numpy would read True as
    1 and "3" as 3 when asked for numbers; neither passes here)."""
    a = np.array(values)
    if a.size and (a.dtype.kind not in kinds or bool in set(map(type, values))):
        raise _Bad
    return a


def _part_columns(dets: list, iou_type: str, need_box: bool) -> Columns:
    n = len(dets)
    try:
        img = _array([d["image_id"] for d in dets], "iu").astype(np.int64)
        cat = _array([d["category_id"] for d in dets], "iu").astype(np.int64)
        score = _array([d["score"] for d in dets], "iuf").astype(np.float64)
        boxes = (
            _array([d["bbox"] for d in dets], "iuf").astype(np.float64).reshape(n, 4)
            if need_box
            else None
        )
        rles = [d["segmentation"] for d in dets] if iou_type == "segm" else None
    except (KeyError, TypeError, ValueError) as e:
        raise _Bad from e
    if not np.isfinite(score).all() or (boxes is not None and not np.isfinite(boxes).all()):
        raise _Bad
    return Columns(img, cat, np.zeros(n), boxes=boxes, rles=rles, scores=score)


def _has_box(d: dict) -> bool:
    return isinstance(d, dict) and bool(d.get("bbox"))


def _concat(parts: list[Columns], iou_type: str, gt: dict) -> Columns:
    """One column set; detection areas as the COCO API's ``loadRes`` sets them: the box's
    ``w * h`` when the first result carries a box, the mask's area otherwise."""

    def cat(key: str) -> np.ndarray:  # one column at a time, each part's copy released
        arrays = [getattr(p, key) for p in parts]  # >= 1 part, its ids already int64
        for p in parts:
            setattr(p, key, None)
        return np.concatenate(arrays)

    cols = Columns(cat("image_id"), cat("category_id"), np.zeros(0), scores=cat("scores"))
    if all(p.boxes is not None for p in parts):
        cols.boxes = cat("boxes").reshape(-1, 4)
    if iou_type == "segm":
        from pycocotools import mask as mask_utils

        rles, sizes = [r for p in parts for r in p.rles], _image_sizes(gt)
        cols.rles = [
            to_rle(r, *sizes[i]) for r, i in zip(rles, cols.image_id.tolist(), strict=True)
        ]
        if cols.boxes is not None:
            cols.area = cols.boxes[:, 2] * cols.boxes[:, 3]
        else:
            cols.area = np.array([float(mask_utils.area(r)) for r in cols.rles], np.float64)
        cols.boxes = None
    else:
        cols.area = cols.boxes[:, 2] * cols.boxes[:, 3] if cols.boxes is not None else cols.area
    return cols


def explain_bad_dt(
    dt: list, gt: dict, iou_type: str, where: str, first: int = 0, need_box: bool = True
) -> NoReturn:
    """Raise an error naming the first bad detection of ``dt`` (index ``first`` onwards in the
    file); ``need_box``: every detection must carry a box. Called when a faster check failed,
    so it always raises: a general error if no detection breaks these rules (the same ones as
    ``_part_columns``' and the typed decoder's, so in practice never)."""
    field = "bbox" if iou_type == "bbox" else "segmentation"
    img_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, d in enumerate(dt, first):
        if not isinstance(d, dict):
            raise DataError(f"{where}[{i}]", "a detection object", type(d).__name__)
        for key in ("image_id", "category_id", "score", field):
            if key not in d:
                raise DataError(f"{where}[{i}]", f"field '{key}'", f"fields {sorted(d)}")
        if not _is_int(d["image_id"]) or d["image_id"] not in img_ids:
            raise DataError(
                f"{where}[{i}] image_id", "an image id of the ground truth", repr(d["image_id"])
            )
        if not _is_int(d["category_id"]) or d["category_id"] not in cat_ids:
            raise DataError(
                f"{where}[{i}] category_id",
                f"a category id of the ground truth {sorted(cat_ids)}",
                repr(d["category_id"]),
            )
        if not _is_number(d["score"]):
            raise DataError(f"{where}[{i}] score", "a finite number", repr(d["score"]))
        if need_box and "bbox" not in d:
            raise DataError(f"{where}[{i}]", "field 'bbox' (the first detection has one)",
                            f"fields {sorted(d)}")  # fmt: skip
        box = d["bbox"] if need_box else None
        if need_box and not (
            isinstance(box, (list, tuple, np.ndarray))
            and len(box) == 4
            and all(_is_number(v) for v in box)
        ):
            raise DataError(f"{where}[{i}] bbox", "[x, y, width, height], finite numbers",
                            repr(box))  # fmt: skip
    raise DataError(where, "COCO detection results", "a detection that cannot be read")


def _is_int(v) -> bool:
    """A Python or NumPy integer, not a bool (what ``_part_columns`` reads as an id)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """A finite Python or NumPy number, not a bool; an integer too large for a float is not."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False
