"""The built-in synthetic dataset: shapes on textured backgrounds, written as VOC and COCO.

Every image is a pure function of ``(seed, index)``, so a dataset regenerates bit-identically.
Objects overlap and occlude each other (each keeps at least half of itself visible), and sizes
are drawn log-uniformly so COCO's small (< 32²), medium and large (≥ 96²) buckets are all present.
Boxes and masks describe the *visible* part of each object.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from vision.data.io import write_palette_png

CLASSES = ("circle", "square", "triangle", "star")


@dataclass
class ShapesSpec:
    train: int = 2000
    val: int = 400
    min_size: int = 160
    max_size: int = 256
    max_objects: int = 6
    min_object: int = 10
    seed: int = 0
    jpeg_quality: int = 92


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        n, radii = 4, [r]
    elif kind == "triangle":
        n, radii = 3, [r]
    else:  # star
        n, radii = 10, [r, r * 0.45]
    pts = []
    for i in range(n):
        a = angle + 2 * np.pi * i / n
        rad = radii[i % len(radii)]
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def _shape_mask(kind: str, w: int, h: int, cx: float, cy: float, r: float, angle: float):
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=1)
    return np.asarray(im, bool)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    g = int(rng.integers(3, 8))
    coarse = rng.integers(0, 256, (g, g, 3), dtype=np.uint8)
    bg = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
    bg = 0.6 * bg + 0.4 * rng.uniform(60, 200)  # less saturated than raw noise
    if rng.random() < 0.5:  # stripes
        period, phase = rng.uniform(6, 30), rng.uniform(0, 6.3)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        wave = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period + phase)
        bg += wave[..., None] * rng.uniform(10, 35)
    bg += rng.normal(0, rng.uniform(3, 12), (h, w, 3))
    return bg


def _contrasting(rng: np.random.Generator, mean: np.ndarray, tries: int = 10) -> np.ndarray:
    """A random colour at least 160 levels (summed over RGB) from ``mean``, what the shape
    covers; after ``tries`` draws, the last one."""
    for _ in range(tries):
        color = rng.integers(0, 256, 3).astype(np.float32)
        if np.abs(color - mean).sum() > 160:
            break
    return color


def render(index: int, spec: ShapesSpec):
    """Render image ``index``: RGB uint8 array, visible instance masks ``(N, H, W)``, labels."""
    rng = np.random.default_rng([spec.seed, index])
    w = int(rng.integers(spec.min_size, spec.max_size + 1))
    h = int(rng.integers(spec.min_size, spec.max_size + 1))
    img = _background(rng, w, h)
    full: list[np.ndarray] = []
    labels: list[int] = []
    visible: list[np.ndarray] = []
    n_obj = int(rng.integers(1, spec.max_objects + 1))
    for _ in range(n_obj):
        for _try in range(20):
            k = int(rng.integers(len(CLASSES)))
            size = float(np.exp(rng.uniform(np.log(spec.min_object), np.log(0.8 * min(w, h)))))
            r = size / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            m = _shape_mask(CLASSES[k], w, h, cx, cy, r, rng.uniform(0, 2 * np.pi))
            if m.sum() < 16:
                continue
            new_vis = [v & ~m for v in visible]
            if all(nv.sum() >= 0.5 * f.sum() for nv, f in zip(new_vis, full, strict=True)):
                visible = new_vis + [m]
                full.append(m)
                labels.append(k)
                color = _contrasting(rng, img[m].mean(0))
                shade = rng.normal(0, 4, (int(m.sum()), 3))
                img[m] = color + shade
                break
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    masks = np.stack(visible) if visible else np.zeros((0, h, w), bool)
    return np.asarray(pil), masks, np.asarray(labels, np.int64)


def _box(m: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box of a mask as 0-based pixel edges ``(x1, y1, x2, y2)`` (``x2`` exclusive)."""
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _occluded(area: int, box: tuple[int, int, int, int], label: int) -> bool:
    """VOC's "truncated" flag here: an object partly hidden by others, its visible area under
    90 % of what the shape fills of its box (a circle π/4 of it, a square, triangle or star
    about half: a rotated square's tight box is up to twice its area)."""
    full = 0.785 if label == 0 else 0.5
    return area < 0.9 * (box[2] - box[0]) * (box[3] - box[1]) * full


def _voc_xml(stem: str, w: int, h: int, boxes, labels, occluded) -> str:
    objs = []
    for (x1, y1, x2, y2), k, occ in zip(boxes, labels, occluded, strict=True):
        objs.append(
            f"  <object>\n    <name>{CLASSES[k]}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>{int(occ)}</truncated>\n    <difficult>0</difficult>\n"
            f"    <bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n  </object>\n"
        )
    return (
        f"<annotation>\n  <folder>VOC</folder>\n  <filename>{stem}.jpg</filename>\n"
        f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
        f"  <segmented>1</segmented>\n{''.join(objs)}</annotation>\n"
    )


def _write_one(args) -> dict:
    index, spec, out = args
    img, masks, labels = render(index, spec)
    h, w = img.shape[:2]
    stem = f"{index:06d}"
    voc, coco = out / "VOC", out / "COCO"
    jpg = voc / "JPEGImages" / f"{stem}.jpg"
    Image.fromarray(img).save(jpg, quality=spec.jpeg_quality)
    link = coco / "images" / f"{stem}.jpg"
    link.unlink(missing_ok=True)
    try:
        os.link(jpg, link)
    except OSError:
        shutil.copyfile(jpg, link)
    sem = np.zeros((h, w), np.uint8)
    for m, k in zip(masks, labels, strict=True):
        sem[m] = k + 1
    write_palette_png(sem, voc / "SegmentationClass" / f"{stem}.png")
    boxes = [_box(m) for m in masks]
    areas = [int(m.sum()) for m in masks]
    occluded = [_occluded(a, b, k) for a, b, k in zip(areas, boxes, labels, strict=True)]
    (voc / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, w, h, boxes, labels, occluded))
    anns = []
    for m, b, k, a in zip(masks, boxes, labels, areas, strict=True):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "category_id": int(k) + 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": a,
                "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
            }
        )
    return {"id": index + 1, "file_name": f"{stem}.jpg", "width": w, "height": h, "anns": anns}


def generate(out: Path | str, spec: ShapesSpec | None = None, workers: int | None = None) -> dict:
    """Write the dataset under ``out`` (``VOC/`` and ``COCO/`` trees). Returns counts."""
    spec = spec or ShapesSpec()
    out = Path(out)
    voc, coco = out / "VOC", out / "COCO"
    for d in (
        voc / "JPEGImages",
        voc / "Annotations",
        voc / "SegmentationClass",
        voc / "ImageSets" / "Main",
        voc / "ImageSets" / "Segmentation",
        coco / "images",
        coco / "annotations",
    ):
        d.mkdir(parents=True, exist_ok=True)
    splits = {"train": range(spec.train), "val": range(spec.train, spec.train + spec.val)}
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(i, spec, out) for i in range(spec.train + spec.val)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            records = list(ex.map(_write_one, jobs, chunksize=32))
    else:
        records = [_write_one(j) for j in jobs]
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)]
    counts = {}
    for split, idx in splits.items():
        ids = "".join(f"{i:06d}\n" for i in idx)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(ids)
        images, anns = [], []
        for i in idx:
            rec = records[i]
            images.append({k: rec[k] for k in ("id", "file_name", "width", "height")})
            for a in rec["anns"]:
                anns.append({"id": len(anns) + 1, "image_id": rec["id"], **a})
        data = {
            "info": {"description": "vision synthetic shapes", "seed": spec.seed},
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        counts[split] = {"images": len(images), "objects": len(anns)}
    (out / "spec.json").write_text(json.dumps(spec.__dict__, indent=1))
    return counts
