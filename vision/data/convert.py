"""Convert a VOC dataset to COCO instances JSON, to score VOC data with the COCO protocol."""

from __future__ import annotations

import json
from pathlib import Path

from vision.data.voc import VOCDataset


def voc_to_coco(ds: VOCDataset, out: Path | str | None = None) -> dict:
    """COCO JSON of a VOC split. Image ids are 1..N in split order, each image records its VOC
    id (``voc_id``); category ids are 1..K in class-name order. ``difficult`` objects are kept
    with ``iscrowd=0`` and a ``difficult`` flag: the COCO protocol has no "difficult" and counts
    them as ordinary objects (pycocotools derives ``ignore`` from ``iscrowd`` alone).
    Boxes are the reader's 0-based continuous boxes: ``[xmin - 1, ymin - 1, w, h]`` with the
    devkit's pixel-inclusive ``w = xmax - xmin + 1``."""
    images, anns = [], []
    for img_id, s in enumerate(ds.samples, start=1):
        images.append(
            {
                "id": img_id,
                "file_name": s.path.name,
                "width": s.width,
                "height": s.height,
                "voc_id": str(s.image_id),
            }
        )
        for b, k, d in zip(s.boxes.tolist(), s.labels.tolist(), s.difficult.tolist(), strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": k + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "difficult": int(d),
                }
            )
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(ds.names)],
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(data))
    return data
