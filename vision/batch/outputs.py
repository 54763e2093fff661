"""The job folder of batch prediction: what is done, each image's line and files, the totals.

``predictions.jsonl`` and ``errors.jsonl`` get one line per image, appended a batch at a time
after the image's files (mask, overlay) are in place, so a crash leaves at most a partial last
line, which the next run drops before it reads which images are done. Every other file is
written to a temporary name beside it and renamed: none is ever left half-written.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
from PIL import Image


def atomic_write(path: Path, data: bytes) -> None:
    """``data`` at ``path``, through a temporary file beside it and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def recover_lines(path: Path) -> list[dict]:
    """The complete lines of a JSONL file; a partial or unreadable last line (an interrupted
    write) and anything after it are cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    rows, pos = [], 0
    while (nl := data.find(b"\n", pos)) >= 0:
        try:
            rows.append(orjson.loads(data[pos:nl]))
        except orjson.JSONDecodeError:
            break
        pos = nl + 1
    if pos != len(data):
        with open(path, "r+b") as f:
            f.truncate(pos)
    return rows


def index_png(mask: np.ndarray, colors: list[tuple[int, int, int]] | None) -> bytes:
    """A class map as an index PNG: greyscale, or with ``colors`` as its palette (the values
    read back are the class indices either way)."""
    im = Image.fromarray(mask.astype(np.uint8))
    if colors:
        im.putpalette([v for c in colors for v in c])
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


class JobFolder:
    """``OUT/``: ``predictions.jsonl``, ``errors.jsonl``, ``masks/``, ``drawn/``,
    ``coco_results.json``, ``summary.json`` (and ``.shards/`` while a Ray job runs)."""

    def __init__(self, out: Path | str):
        self.out = Path(out)
        self.predictions = self.out / "predictions.jsonl"
        self.errors = self.out / "errors.jsonl"
        self.shards = self.out / ".shards"
        self._files: dict[str, object] = {}

    def done(self, retry_errors: bool = False) -> tuple[set[str], dict[str, int]]:
        """Paths already predicted (or failed, unless ``retry_errors``: their error lines are
        then dropped), and what recovery found: ``{"predicted", "failed", "retried"}``."""
        self.out.mkdir(parents=True, exist_ok=True)
        predicted = {r["path"] for r in recover_lines(self.predictions)}
        errors = recover_lines(self.errors)
        if retry_errors and errors:
            atomic_write(self.errors, b"")
        failed = set() if retry_errors else {r["path"] for r in errors}
        counts = {"predicted": len(predicted), "failed": len(failed)}
        counts["retried"] = len(errors) if retry_errors else 0
        return predicted | failed, counts

    def append(self, kind: str, lines: list[dict]) -> None:
        """Lines to ``predictions.jsonl`` (``kind="predictions"``) or ``errors.jsonl``."""
        if not lines:
            return
        f = self._files.get(kind)
        if f is None:
            f = self._files[kind] = open(getattr(self, kind), "ab")  # noqa: SIM115
        f.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            os.fsync(f.fileno())
            f.close()
        self._files.clear()

    def merge_shards(self) -> dict[str, int]:
        """Lines the Ray workers wrote to ``.shards/`` appended to the job's files, sorted by
        path, each image once (a retried batch may have written one twice); then the shards
        go. Returns ``{"predictions": n, "errors": n, "duplicates": n}``."""
        counts = {"predictions": 0, "errors": 0, "duplicates": 0}
        if not self.shards.is_dir():
            return counts
        seen = {r["path"] for r in recover_lines(self.predictions)}
        seen |= {r["path"] for r in recover_lines(self.errors)}
        for kind in ("predictions", "errors"):
            rows = []
            for shard in sorted(self.shards.glob(f"*.{kind}.jsonl")):
                rows += recover_lines(shard)
            rows.sort(key=lambda r: r["path"])
            fresh = []
            for r in rows:
                if r["path"] in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(r["path"])
                fresh.append(r)
            self.append(kind, fresh)
            counts[kind] = len(fresh)
        self.close()
        for shard in self.shards.glob("*"):
            shard.unlink()
        self.shards.rmdir()
        return counts

    # -- totals over every run of the job ------------------------------------------------
    def write_coco_results(self, task: str, category_ids: list[int], classes: list[str]) -> int:
        """``coco_results.json`` from every line of ``predictions.jsonl``, streamed: boxes as
        ``[x, y, w, h]`` (detection) or each class's pixels as RLE (segmentation; ``classes``:
        the class of each class-map index). Returns the number of results."""
        from pycocotools import mask as mask_utils

        index = {c: k for k, c in enumerate(classes)}
        tmp = self.out / f".coco_results.json.tmp-{os.getpid()}"
        n = 0
        with open(tmp, "wb") as f:
            f.write(b"[")
            for row in _lines(self.predictions):
                for rec in _coco_records(row, task, category_ids, index, self.out, mask_utils):
                    f.write((b",\n" if n else b"\n") + orjson.dumps(rec))
                    n += 1
            f.write(b"\n]\n")
        os.replace(tmp, self.out / "coco_results.json")
        return n

    def totals(self, task: str, classes: list[str]) -> dict:
        """Images predicted and failed over every run, failures by reason, and per class: a
        detector's detections, a segmenter's images and pixels."""
        per_class: dict[str, dict[str, int]] = {c: {} for c in classes}
        images = 0
        for row in _lines(self.predictions):
            images += 1
            if task == "detection":
                for d in row["detections"]:
                    c = per_class[d["label"]]
                    c["detections"] = c.get("detections", 0) + 1
            else:
                for name, px in row["pixel_counts"].items():
                    if px:
                        c = per_class[name]
                        c["images"] = c.get("images", 0) + 1
                        c["pixels"] = c.get("pixels", 0) + px
        reasons = Counter(r["reason"] for r in _lines(self.errors))
        return {
            "images": images,
            "errors": sum(reasons.values()),
            "errors_by_reason": dict(sorted(reasons.items())),
            "per_class": per_class,
        }

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.out / "summary.json", json.dumps(summary, indent=1).encode() + b"\n")


def _lines(path: Path):
    if path.is_file():
        with open(path, "rb") as f:
            for line in f:
                yield orjson.loads(line)


def _coco_records(row: dict, task: str, cat_ids: list[int], index: dict, out: Path, mask_utils):
    image_id = row["image_id"]
    if task == "detection":
        for d in row["detections"]:
            x1, y1, x2, y2 = d["box"]
            yield {
                "image_id": image_id,
                "category_id": cat_ids[d["class_id"]],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": d["score"],
            }
        return
    mask = row["mask"]
    if isinstance(mask, str):  # an index PNG
        m = np.asarray(Image.open(out / mask))
        for k in np.unique(m).tolist():
            rle = mask_utils.encode(np.asfortranarray((m == k).astype(np.uint8)))
            yield {
                "image_id": image_id,
                "category_id": cat_ids[k],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            }
    else:  # per-class RLE in the line, by class name
        for name, rle in mask["per_class"].items():
            yield {"image_id": image_id, "category_id": cat_ids[index[name]], "segmentation": rle}
