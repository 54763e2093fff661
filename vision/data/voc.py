"""PASCAL VOC reader: ``Annotations/*.xml`` boxes, ``SegmentationClass`` masks, split files.

VOC's XML coordinates are 1-based and pixel-inclusive. By default (``zero_based=True``) boxes are
returned in the continuous 0-based convention every other reader and torchvision use:
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``. Widths are then ``xmax - xmin + 1``, the
devkit's own pixel-inclusive width, so VOC AP computed on these boxes without the devkit's "+1"
equals the devkit on the raw XML. ``zero_based=False`` keeps the raw XML numbers.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from vision.data.io import check_labels, read_mask
from vision.data.sample import IGNORE_INDEX, Sample, with_image
from vision.errors import DataError, SkipLog, handle

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(where, f"a <{tag}> element with a value", "none")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError as e:
        raise DataError(f"{where} <{tag}>", "a number", repr(text)) from e


def parse_voc_xml(
    path: Path,
    class_to_idx: dict[str, int],
    strict: bool = True,
    skips: SkipLog | None = None,
    check_bounds: bool = True,
    zero_based: bool = True,
) -> dict:
    """Parse one VOC annotation file. Bad objects raise, or are skipped and counted."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        line, col = e.position
        raise DataError(f"{path}:{line}:{col}", "well-formed VOC XML", f"parse error: {e}") from e
    except OSError as e:
        raise DataError(str(path), "a readable XML file", str(e)) from e
    size = root.find("size")
    if size is None:
        raise DataError(str(path), "a <size> element with <width> and <height>", "none")
    width, height = int(_number(size, "width", str(path))), int(_number(size, "height", str(path)))
    filename = root.findtext("filename", default="").strip()
    boxes, labels, difficult, truncated = [], [], [], []
    for i, obj in enumerate(root.iter("object")):
        where = f"{path} object #{i}"
        try:
            name = _text(obj, "name", where)
            if name not in class_to_idx:
                raise DataError(f"{where} <name>", f"a class in {sorted(class_to_idx)}", repr(name))
            bb = obj.find("bndbox")
            if bb is None:
                raise DataError(where, "a <bndbox> element", "none")
            x1, y1, x2, y2 = (_number(bb, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
            if not (x2 > x1 and y2 > y1):
                raise DataError(
                    f"{where} <bndbox>",
                    "xmax > xmin and ymax > ymin",
                    f"({x1}, {y1}, {x2}, {y2})",
                    "zero or negative area",
                )
            off = 1.0 if zero_based else 0.0
            x1, y1 = x1 - off, y1 - off
            # one pixel of slack: many real VOC-style files use 0-based xmin or xmax = width + 1
            if check_bounds and (x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1):
                raise DataError(
                    f"{where} <bndbox>",
                    f"a box inside the {width}x{height} image",
                    f"({x1}, {y1}, {x2}, {y2})",
                )
        except DataError as err:
            reason = "unknown class" if "<name>" in err.where else "invalid box"
            handle(err, strict, skips, reason)
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(class_to_idx[name])
        difficult.append(obj.findtext("difficult", "0").strip() in ("1", "true"))
        truncated.append(obj.findtext("truncated", "0").strip() in ("1", "true"))
    return {
        "filename": filename,
        "width": width,
        "height": height,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, np.int64),
        "difficult": np.asarray(difficult, bool),
        "truncated": np.asarray(truncated, bool),
    }


def read_split(root: Path, split: str | Path) -> list[str]:
    """Image ids of a split: a VOC ``ImageSets`` list file or a CSV whose first column is a file
    name (as the raccoon set ships it). Order is kept; duplicates in a CSV collapse."""
    p = Path(split)
    p = p if p.is_absolute() else Path(root) / p
    if not p.is_file():
        raise DataError(
            str(p), "a split file (ImageSets/*.txt or a CSV of file names)", "no such file"
        )
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
        ids = [Path(r[0]).stem for r in rows[1:] if r]
        return list(dict.fromkeys(ids))
    return [line.split()[0] for line in p.read_text().splitlines() if line.strip()]


class VOCDataset:
    """A VOC split as a sequence of :class:`Sample` (images and masks decoded on access).

    ``task='detection'`` reads ``Annotations``; ``task='segmentation'`` also reads
    ``SegmentationClass/<id>.png`` (palette/index or RGB in the VOC colour map; 255 = ignore).
    ``strict=False`` skips bad items and counts them in ``self.skips`` instead of raising.
    """

    background = True  # masks: 0 = background, k + 1 = class k

    def __init__(
        self,
        root: Path | str,
        names: list[str],
        split: str | Path | None = None,
        ids: list[str] | None = None,
        task: str = "detection",
        strict: bool = True,
        check_bounds: bool = True,
    ):
        self.root, self.names, self.task, self.strict = Path(root), list(names), task, strict
        self.skips = SkipLog()
        if ids is None:
            ids = (
                read_split(self.root, split)
                if split is not None
                else sorted(p.stem for p in (self.root / "Annotations").glob("*.xml"))
            )
        class_to_idx = {n: i for i, n in enumerate(self.names)}
        self.samples: list[Sample] = []
        for image_id in ids:
            try:
                self.samples.append(self._record(image_id, class_to_idx, check_bounds))
            except DataError as err:
                handle(err, strict, self.skips, _reason(err))

    def _record(self, image_id: str, class_to_idx: dict[str, int], check_bounds: bool) -> Sample:
        xml = self.root / "Annotations" / f"{image_id}.xml"
        mask_path = self.root / "SegmentationClass" / f"{image_id}.png"
        if self.task == "segmentation" and not mask_path.is_file():
            raise DataError(str(mask_path), "a segmentation mask PNG", "no such file")
        if xml.is_file():
            ann = parse_voc_xml(xml, class_to_idx, self.strict, self.skips, check_bounds)
        elif self.task == "segmentation":
            ann = {"filename": "", "width": 0, "height": 0}
        else:
            raise DataError(str(xml), "an annotation XML for the split's image id", "no such file")
        image = self._find_image(image_id, ann.get("filename", ""))
        sample = Sample(image_id=image_id, path=image, width=ann["width"], height=ann["height"])
        for key in ("boxes", "labels", "difficult", "truncated"):
            if key in ann:
                setattr(sample, key, ann[key])
        sample.crowd = np.zeros(sample.num_objects, bool)
        if self.task == "segmentation":
            sample.mask_path = mask_path
        return sample

    def _find_image(self, image_id: str, filename: str) -> Path:
        folder = self.root / "JPEGImages"
        candidates = [folder / filename] if filename else []
        candidates += [folder / f"{image_id}{ext}" for ext in IMAGE_EXTS]
        for c in candidates:
            if c.is_file():
                return c
        raise DataError(
            str(folder / f"{image_id}.jpg"), "an image file for the annotation", "no such file"
        )

    def limit(self, n: int | None) -> VOCDataset:
        """Keep only the first ``n`` samples (all when ``n`` is None)."""
        if n:
            self.samples = self.samples[:n]
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        rec = self.samples[i]
        out = with_image(rec, exif=False)
        h, w = out.image.shape[:2]
        if (rec.width, rec.height) not in ((w, h), (0, 0)):
            raise DataError(
                str(rec.path),
                f"an image of the annotated size {rec.width}x{rec.height}",
                f"{w}x{h}",
            )
        out.width, out.height = w, h
        if rec.mask_path is not None:
            n = len(self.names) + 1
            m = read_mask(rec.mask_path, n, IGNORE_INDEX)
            out.mask = check_labels(m, n, str(rec.mask_path), IGNORE_INDEX)
            if out.mask.shape != (h, w):
                raise DataError(
                    str(rec.mask_path),
                    f"a mask of the image size {w}x{h}",
                    f"{out.mask.shape[1]}x{out.mask.shape[0]}",
                )
        return out


def _reason(err: DataError) -> str:
    text = f"{err.where} {err.expected} {err.got}"
    if "no such file" in text:
        return "missing file"
    if "XML" in text or "element" in text:
        return "bad XML"
    return "invalid annotation"
