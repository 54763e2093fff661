"""COCO instances reader: category ids ↔ contiguous indices, ``iscrowd``, polygon/RLE masks.

Semantic masks are built from the instances: crowd regions become ``ignore_index``, then
instances are painted from the largest to the smallest so small objects stay visible.
"""

from __future__ import annotations

from numbers import Number
from pathlib import Path

import numpy as np
import orjson
from pycocotools import mask as mask_utils

from vision.data.sample import IGNORE_INDEX, Sample, with_image
from vision.errors import DataError, SkipLog, handle

_IMAGE_FIELDS = {"id": int, "file_name": str, "width": int, "height": int}
_ANN_FIELDS = {"id": int, "image_id": int, "category_id": int, "bbox": list}


def _check(obj: dict, fields: dict, where: str) -> None:
    for key, typ in fields.items():
        if key not in obj:
            raise DataError(where, f"field '{key}'", f"fields {sorted(obj)}")
        val = obj[key]
        ok = isinstance(val, typ) and not isinstance(val, bool)
        if typ is int:
            ok = isinstance(val, int) and not isinstance(val, bool)
        if not ok:
            raise DataError(
                f"{where} field '{key}'", f"a {typ.__name__}", f"{type(val).__name__} {val!r}"
            )


# what COCO evaluation reads (pycocotools and faster-coco-eval): image ids, sizes only to turn
# polygons into masks; annotation ids, areas (for the area ranges) and the geometry scored
_EVAL_IMAGE_FIELDS = {"bbox": {"id": int}, "segm": {"id": int, "width": int, "height": int}}
_EVAL_ANN_FIELDS = {
    "bbox": {"id": int, "image_id": int, "category_id": int, "area": Number, "bbox": list},
    "segm": {"id": int, "image_id": int, "category_id": int, "area": Number},
}


def load_coco_json(path: Path | str, evaluate: str | None = None) -> dict:
    """Load and validate a COCO instances file (ids must be integers, as pycocotools needs).

    ``evaluate='bbox'|'segm'``: ground truth for COCO evaluation, which needs less than reading
    the images does (no ``file_name``; image sizes only for ``segm``), but an ``area`` per
    annotation and the geometry being scored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "a COCO annotations JSON file", "no such file")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}", "valid JSON", e.msg) from e
    if not isinstance(data, dict):
        raise DataError(
            str(path), "a JSON object with images/annotations/categories", type(data).__name__
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(str(path), f"a list '{key}'", repr(type(data.get(key)).__name__))
    image_fields = _EVAL_IMAGE_FIELDS[evaluate] if evaluate else _IMAGE_FIELDS
    ann_fields = _EVAL_ANN_FIELDS[evaluate] if evaluate else _ANN_FIELDS
    for i, img in enumerate(data["images"]):
        _check(img, image_fields, f"{path} images[{i}] (id={img.get('id')!r})")
    for i, cat in enumerate(data["categories"]):
        _check(cat, {"id": int, "name": str}, f"{path} categories[{i}]")
    for i, ann in enumerate(data["annotations"]):
        where = f"{path} annotations[{i}] (id={ann.get('id')!r})"
        _check(ann, ann_fields, where)
        if evaluate == "segm" and "segmentation" not in ann:
            raise DataError(
                where, "field 'segmentation' (polygons or RLE)", f"fields {sorted(ann)}"
            )
        bbox = ann.get("bbox")  # required but for 'segm' (_check): a box when it is there
        if bbox is not None and (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, Number) for v in bbox)
        ):
            raise DataError(f"{where} field 'bbox'", "[x, y, width, height] numbers", repr(bbox))
    return data


class COCODataset:
    """A COCO split as a sequence of :class:`Sample`.

    ``cat_ids[k]`` is the COCO category id of contiguous label ``k`` (sorted by id);
    ``label_of[cat_id]`` maps back. With ``masks=True`` each sample gets a semantic mask.
    ``require_images=False`` reads annotations only (e.g. to evaluate without the pictures).
    """

    background = True  # masks: 0 = background, k + 1 = class k

    def __init__(
        self,
        annotations: Path | str,
        images: Path | str,
        names: list[str] | None = None,
        masks: bool = False,
        strict: bool = True,
        check_bounds: bool = True,
        require_images: bool = True,
    ):
        self.ann_file, self.image_dir = Path(annotations), Path(images)
        self.strict, self.masks = strict, masks
        self.skips = SkipLog()
        data = load_coco_json(self.ann_file)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.names = [c["name"] for c in cats]
        if names is not None and list(names) != self.names:
            raise DataError(
                f"{self.ann_file} categories",
                f"the config's class names {names}",
                f"{self.names}",
                "the config and the JSON must list the same classes",
            )
        self.label_of = {cid: k for k, cid in enumerate(self.cat_ids)}
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data["annotations"]:
            where = f"{self.ann_file} annotation id={ann['id']}"
            if ann["image_id"] not in by_image:
                handle(
                    DataError(where, "an image_id listed in 'images'", repr(ann["image_id"])),
                    strict,
                    self.skips,
                    "unknown image",
                )
                continue
            if ann["category_id"] not in self.label_of:
                handle(
                    DataError(where, f"a category_id in {self.cat_ids}", repr(ann["category_id"])),
                    strict,
                    self.skips,
                    "unknown category",
                )
                continue
            by_image[ann["image_id"]].append(ann)
        self.samples: list[Sample] = []
        self._anns: list[list[dict]] = []
        for img in data["images"]:
            anns = self._valid(img, by_image[img["id"]], check_bounds)
            path = self.image_dir / img["file_name"]
            if require_images and not path.is_file():
                handle(
                    DataError(str(path), f"the image file of image id={img['id']}", "no such file"),
                    strict,
                    self.skips,
                    "missing file",
                )
                continue
            self.samples.append(self._sample(img, anns, path))
            self._anns.append(anns)

    def _valid(self, img: dict, anns: list[dict], check_bounds: bool) -> list[dict]:
        keep = []
        w, h = img["width"], img["height"]
        for ann in anns:
            x, y, bw, bh = ann["bbox"]
            where = f"{self.ann_file} annotation id={ann['id']} field 'bbox'"
            if not (bw > 0 and bh > 0):
                handle(
                    DataError(where, "width > 0 and height > 0", repr(ann["bbox"])),
                    self.strict,
                    self.skips,
                    "invalid box",
                )
                continue
            tol = 1.0  # COCO's own boxes overshoot by fractions of a pixel
            if check_bounds and (x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol):
                handle(
                    DataError(where, f"a box inside the {w}x{h} image", repr(ann["bbox"])),
                    self.strict,
                    self.skips,
                    "invalid box",
                )
                continue
            keep.append(ann)
        return keep

    def _sample(self, img: dict, anns: list[dict], path: Path) -> Sample:
        boxes = np.array(
            [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns
            ],
            np.float32,
        ).reshape(-1, 4)
        return Sample(
            image_id=img["id"],
            path=path,
            width=img["width"],
            height=img["height"],
            boxes=boxes,
            labels=np.array([self.label_of[a["category_id"]] for a in anns], np.int64),
            difficult=np.zeros(len(anns), bool),
            crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
            truncated=np.zeros(len(anns), bool),
        )

    def instance_masks(self, i: int) -> np.ndarray:
        """Binary masks ``(N, H, W)`` of sample ``i``'s annotations (polygons or RLE)."""
        s, anns = self.samples[i], self._anns[i]
        out = np.zeros((len(anns), s.height, s.width), np.uint8)
        for j, ann in enumerate(anns):
            out[j] = decode_segmentation(ann, s.height, s.width, f"{self.ann_file} id={ann['id']}")
        return out

    def semantic_mask(self, i: int) -> np.ndarray:
        s, anns = self.samples[i], self._anns[i]
        mask = np.zeros((s.height, s.width), np.uint8)
        inst = self.instance_masks(i).astype(bool)
        for j in np.flatnonzero(s.crowd):
            mask[inst[j]] = IGNORE_INDEX
        areas = inst.reshape(len(anns), -1).sum(1)
        for j in sorted(np.flatnonzero(~s.crowd), key=lambda j: -areas[j]):
            mask[inst[j]] = s.labels[j] + 1
        return mask

    def limit(self, n: int | None) -> COCODataset:
        """Keep only the first ``n`` samples (all when ``n`` is None)."""
        if n:
            self.samples, self._anns = self.samples[:n], self._anns[:n]
        return self

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        rec = self.samples[i]
        out = with_image(rec)
        h, w = out.image.shape[:2]
        if (w, h) != (rec.width, rec.height):
            raise DataError(
                str(rec.path),
                f"an image of the annotated size {rec.width}x{rec.height}",
                f"{w}x{h}",
            )
        if self.masks:
            out.mask = self.semantic_mask(i)
        return out


def decode_segmentation(ann: dict, height: int, width: int, where: str) -> np.ndarray:
    """Decode a COCO ``segmentation`` (polygons, uncompressed or compressed RLE) to ``(H, W)``."""
    seg = ann.get("segmentation")
    if seg is None:
        raise DataError(where, "a 'segmentation' field (polygons or RLE)", "none")
    try:
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
            rle = seg  # compressed RLE: pycocotools reads its counts as str (JSON) or bytes
        else:
            raise DataError(where, "polygons or an RLE dict", repr(type(seg).__name__))
        return mask_utils.decode(rle)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - pycocotools raises bare Exception and IndexError too
        raise DataError(f"{where} field 'segmentation'", "valid polygons or RLE", str(e)) from e
