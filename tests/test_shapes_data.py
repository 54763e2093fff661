"""The synthetic shapes set: its VOC and COCO trees agree with each other and with the rendered
pixels, and the set is the same from one version to the next (its figures are in the docs:
a change to the generator must change this test's digest on purpose)."""

from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vision.data.shapes import (
    CLASSES,
    ShapesSpec,
    _box,
    _contrasting,
    _occluded,
    _polygon,
    generate,
    render,
)

SPEC = ShapesSpec(train=3, val=2, min_size=48, max_size=64, max_objects=4, seed=5)
# sha256 over the annotation files, the label PNGs' pixels and the spec of SPEC: the geometry.
# The pixels are pinned by their mean and spread (NumPy's vectorized sin may differ in its last
# bit on another CPU, which can move a pixel by one level: 1e-4 of the mean; a change to the
# generator moves them by more than the tolerance, 1e-3)
PIXELS = [
    (113.2639, 50.984),
    (118.8219, 46.1281),
    (121.7806, 51.7484),
    (120.763, 61.6661),
    (107.3581, 46.8286),
]
DIGEST = "5f72b5e030f3c6690eb72d10ab2e0113b7c5c15d51a8d7532b33c2463a7d1290"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    counts = generate(out, SPEC, workers=1)
    return out, counts


def _objects(xml_path):
    root = ET.parse(xml_path).getroot()
    objs = []
    for o in root.iter("object"):
        b = o.find("bndbox")
        box = tuple(int(b.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        objs.append((o.find("name").text, box, int(o.find("truncated").text)))
    size = root.find("size")
    return objs, (int(size.find("width").text), int(size.find("height").text))


def test_the_set_is_the_same_as_before(tree):
    out, _ = tree
    h = hashlib.sha256()
    for p in sorted((out / "VOC" / "Annotations").iterdir()):
        h.update(p.read_bytes())
    for p in sorted((out / "VOC" / "SegmentationClass").iterdir()):
        h.update(np.asarray(Image.open(p)).tobytes())
    for p in sorted((out / "COCO" / "annotations").iterdir()):
        h.update(p.read_bytes())
    h.update((out / "spec.json").read_bytes())
    assert h.hexdigest() == DIGEST
    for i, (mean, std) in enumerate(PIXELS):
        img = render(i, SPEC)[0].astype(np.float64)
        assert abs(img.mean() - mean) < 0.001 and abs(img.std() - std) < 0.001, i


def test_counts_splits_and_files(tree):
    out, counts = tree
    voc, coco = out / "VOC", out / "COCO"
    assert (voc / "ImageSets/Main/train.txt").read_text() == "000000\n000001\n000002\n"
    assert (voc / "ImageSets/Main/val.txt").read_text() == "000003\n000004\n"
    assert (voc / "ImageSets/Segmentation/val.txt").read_text() == "000003\n000004\n"
    assert json.loads((out / "spec.json").read_text()) == SPEC.__dict__
    for split, n in (("train", 3), ("val", 2)):
        data = json.loads((coco / "annotations" / f"instances_{split}.json").read_text())
        assert data["info"] == {"description": "vision synthetic shapes", "seed": 5}
        assert data["categories"] == [
            {"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(CLASSES)
        ]
        assert counts[split] == {"images": n, "objects": len(data["annotations"])}
        assert [a["id"] for a in data["annotations"]] == list(
            range(1, len(data["annotations"]) + 1)
        )
        first = 1 if split == "train" else 4
        assert [im["id"] for im in data["images"]] == list(range(first, first + n))


@pytest.mark.parametrize("index", range(5))
def test_voc_coco_and_pixels_agree(tree, index):
    out, _ = tree
    stem = f"{index:06d}"
    img, masks, labels = render(index, SPEC)
    h, w = img.shape[:2]
    assert SPEC.min_size <= min(h, w) and max(h, w) <= SPEC.max_size
    assert 1 <= len(labels) <= SPEC.max_objects and masks.shape == (len(labels), h, w)
    jpg = out / "VOC" / "JPEGImages" / f"{stem}.jpg"
    enc = io.BytesIO()
    Image.fromarray(img).save(enc, "JPEG", quality=SPEC.jpeg_quality)
    assert jpg.read_bytes() == enc.getvalue()
    assert (out / "COCO" / "images" / f"{stem}.jpg").read_bytes() == enc.getvalue()
    sem = np.asarray(Image.open(out / "VOC" / "SegmentationClass" / f"{stem}.png"))
    assert sem.shape == (h, w) and not (masks.sum(0) > 1).any()  # visible parts are disjoint
    for m, k in zip(masks, labels, strict=True):
        assert (sem[m] == k + 1).all() and m.sum() > 0
    assert (sem[~masks.any(0)] == 0).all()
    objs, size = _objects(out / "VOC" / "Annotations" / f"{stem}.xml")
    assert size == (w, h)
    split = "train" if index < 3 else "val"
    data = json.loads((out / "COCO" / "annotations" / f"instances_{split}.json").read_text())
    image = next(im for im in data["images"] if im["id"] == index + 1)
    assert image == {"id": index + 1, "file_name": f"{stem}.jpg", "width": w, "height": h}
    anns = [a for a in data["annotations"] if a["image_id"] == index + 1]
    assert len(objs) == len(anns) == len(labels)
    for (name, box, trunc), a, m, k in zip(objs, anns, masks, labels, strict=True):
        x1, y1, x2, y2 = _box(m)
        assert name == CLASSES[k] and box == (x1 + 1, y1 + 1, x2, y2)
        assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1] and a["category_id"] == k + 1
        assert a["area"] == int(m.sum()) and a["iscrowd"] == 0
        rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        assert a["segmentation"]["size"] == [h, w]
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
        full = 0.785 if k == 0 else 0.5
        assert trunc == int(a["area"] < 0.9 * (x2 - x1) * (y2 - y1) * full)


def test_render_is_seeded_and_tight_boxes():
    a, b = render(2, SPEC), render(2, SPEC)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other = render(2, ShapesSpec(**{**SPEC.__dict__, "seed": 6}))
    assert a[0].shape != other[0].shape or not np.array_equal(a[0], other[0])
    m = np.zeros((6, 8), bool)
    m[2:4, 1:6] = True
    assert _box(m) == (1, 2, 6, 4)


def test_polygons():
    sq = np.array(_polygon("square", 10, 20, 5, 0.0))
    assert sq.shape == (4, 2) and np.allclose(sq[0], (15, 20)) and np.allclose(sq[1], (10, 25))
    tri = np.array(_polygon("triangle", 0, 0, 2, np.pi / 2))
    assert tri.shape == (3, 2) and np.allclose(tri[0], (0, 2))
    star = np.array(_polygon("star", 0, 0, 10, 0.0))
    radii = np.hypot(star[:, 0], star[:, 1])
    assert star.shape == (10, 2) and np.allclose(radii[::2], 10) and np.allclose(radii[1::2], 4.5)
    assert np.allclose(np.arctan2(star[1, 1], star[1, 0]), 2 * np.pi / 10)


def test_occluded_below_nine_tenths_of_the_shape_s_share_of_its_box():
    assert not _occluded(9, (0, 0, 4, 5), 1) and _occluded(8, (0, 0, 4, 5), 2)  # 0.9·20·0.5 = 9
    assert _occluded(14, (1, 1, 5, 6), 0) and not _occluded(15, (1, 1, 5, 6), 0)  # circle: 14.13
    assert not _occluded(10, (0, 0, 4, 5), 3)


class _Draws:
    """Stands in for a NumPy generator: ``integers`` gives the listed colours in turn."""

    def __init__(self, *colours):
        self.colours, self.calls = list(colours), 0

    def integers(self, low, high, size):
        assert (low, high, size) == (0, 256, 3)
        self.calls += 1
        return np.array(self.colours.pop(0) if self.colours else (100, 100, 100))


def test_a_shape_s_colour_contrasts_with_what_it_covers():
    mean = np.array([100.0, 100.0, 100.0])
    rng = _Draws((150, 150, 160), (161, 100, 200), (0, 0, 0))  # 160 is not enough; 161 is
    assert _contrasting(rng, mean).tolist() == [161, 100, 200] and rng.calls == 2
    rng = _Draws()  # never far enough: ten draws, then the last one
    assert _contrasting(rng, mean).tolist() == [100, 100, 100] and rng.calls == 10
    assert _contrasting(rng, mean).dtype == np.float32


def test_a_partly_hidden_circle_is_marked_truncated(tmp_path):
    # seed 10's first image: a circle whose visible part fills 58 % of its box, under 90 % of
    # a circle's share (π/4) but over 90 % of the other shapes' (1/2)
    spec = ShapesSpec(train=1, val=1, min_size=32, max_size=40, max_objects=6, seed=10)
    generate(tmp_path, spec, workers=1)
    objs, _ = _objects(tmp_path / "VOC" / "Annotations" / "000000.xml")
    circles = [(box, trunc) for name, box, trunc in objs if name == "circle"]
    (x1, y1, x2, y2), trunc = circles[0]
    area = int(render(0, spec)[1][[n for n, _, _ in objs].index("circle")].sum())
    assert 0.45 < area / ((x2 - x1 + 1) * (y2 - y1 + 1)) < 0.7 and trunc == 1


def test_images_copied_where_a_hard_link_cannot_go(tmp_path):
    import os
    import shutil
    import tempfile

    other = Path(tempfile.mkdtemp(dir="/dev/shm"))  # another file system: os.link fails
    try:
        (tmp_path / "COCO").mkdir()
        (tmp_path / "COCO" / "images").symlink_to(other)
        generate(tmp_path, ShapesSpec(train=1, val=0, min_size=32, max_size=40), workers=1)
        jpg = tmp_path / "VOC" / "JPEGImages" / "000000.jpg"
        copy = other / "000000.jpg"
        assert copy.read_bytes() == jpg.read_bytes() and os.stat(copy).st_nlink == 1
    finally:
        shutil.rmtree(other)


def test_generate_links_images_and_runs_in_worker_processes(tmp_path):
    import os

    one = generate(tmp_path / "a", ShapesSpec(train=2, val=1, min_size=32, max_size=40), workers=1)
    two = generate(tmp_path / "b", ShapesSpec(train=2, val=1, min_size=32, max_size=40), workers=2)
    assert one == two == {"train": one["train"], "val": one["val"]} and one["val"]["images"] == 1
    for name in ("VOC/Annotations/000002.xml", "COCO/annotations/instances_train.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert os.stat(tmp_path / "a" / "COCO" / "images" / "000001.jpg").st_nlink == 2


def test_three_hundred_small_images_are_the_same_as_before():
    """Rare paths of the generator (placement retries, tiny shapes, colour retries, blur) show
    over many images: their geometry pinned exactly, their pixels by mean and spread."""
    spec = ShapesSpec(min_size=40, max_size=56, max_objects=6, min_object=6, seed=11)
    h, total, squares, count, objects = hashlib.sha256(), 0.0, 0.0, 0, 0
    for i in range(300):
        img, masks, labels = render(i, spec)
        assert masks.dtype == bool and labels.dtype == np.int64
        h.update(np.packbits(masks).tobytes() + labels.tobytes())
        x = img.astype(np.float64)
        total, squares, count = total + x.sum(), squares + (x * x).sum(), count + x.size
        objects += len(labels)
    mean = total / count
    assert h.hexdigest() == "14ebc1a01d23be6e4e8e54614299d76190751a546d42178df72c8b92bfe5e6c5"
    assert objects == 1072
    assert abs(mean - 126.9736) < 2e-3 and abs((squares / count - mean**2) ** 0.5 - 52.6494) < 2e-3


def test_workers_default_to_the_cpus(tmp_path):
    spec = ShapesSpec(train=2, val=1, min_size=32, max_size=40)
    assert generate(tmp_path / "a", spec) == generate(tmp_path / "b", spec, workers=1)
    name = "COCO/annotations/instances_train.json"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_an_image_too_small_for_any_shape_has_none():
    img, masks, labels = render(0, ShapesSpec(min_size=4, max_size=4, min_object=1))
    assert img.shape == (4, 4, 3) and masks.shape == (0, 4, 4) and masks.dtype == bool
    assert labels.shape == (0,) and labels.dtype == np.int64


def test_crowded_tiny_shapes_are_the_same_as_before():
    """Many objects in small images: placements retried, shapes too small skipped and drawn
    again (the generator's rare paths), geometry pinned."""
    spec = ShapesSpec(min_size=24, max_size=40, max_objects=12, min_object=2, seed=7)
    h, objects = hashlib.sha256(), 0
    for i in range(300):
        _, masks, labels = render(i, spec)
        h.update(np.packbits(masks).tobytes() + labels.tobytes())
        objects += len(labels)
    assert h.hexdigest() == "e8192f0111f81d8787c1dfd4d01f6679588dbdf968edd0c8685c7e436c75b343"
    assert objects == 1989
