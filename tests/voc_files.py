"""Hand-written VOC files for reader and health tests: XML pieces that may be broken on purpose,
and a small VOC folder whose every pixel and box is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vision.data.io import write_palette_png


def size_xml(width: int, height: int) -> str:
    return f"<size><width>{width}</width><height>{height}</height></size>"


def obj(name="cat", box=(2, 3, 10, 8), difficult=None, truncated=None) -> str:
    """One ``<object>``; ``box`` is written as given (VOC's 1-based numbers, or anything bad)."""
    flags = "".join(
        f"<{k}>{v}</{k}>" for k, v in (("difficult", difficult), ("truncated", truncated)) if v
    )
    coords = "".join(
        f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
    )
    return f"<object><name>{name}</name>{flags}<bndbox>{coords}</bndbox></object>"


def xml(objects: str, size: str = size_xml(20, 10), fn="") -> str:
    name = f"<filename>{fn}</filename>" if fn else ""
    return f"<annotation>{name}{size}{objects}</annotation>"


def write_voc(
    root: Path,
    objects: dict[str, str],
    size: tuple[int, int] = (20, 10),
    grey: dict[str, int] | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """A VOC folder: for each image id its ``objects`` XML, a ``size`` (W, H) PNG of one ``grey``
    level (0 by default) and a palette mask (``mask``, or all class index 1)."""
    for d in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    w, h = size
    mask = np.ones((h, w), np.uint8) if mask is None else mask
    for i, o in objects.items():
        (root / "Annotations" / f"{i}.xml").write_text(xml(o, size_xml(w, h)))
        level = (grey or {}).get(i, 0)
        Image.new("RGB", size, (level,) * 3).save(root / "JPEGImages" / f"{i}.png")
        write_palette_png(mask, root / "SegmentationClass" / f"{i}.png")
    return root
