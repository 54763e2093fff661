"""Augmentation pipelines, collate, health report, conversion and the data CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from vision.data.build import build_dataset
from vision.data.convert import voc_to_coco
from vision.data.health import check_dataset
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_segmentation,
)

VISION = [sys.executable, "-m", "vision_cli"]


@pytest.mark.parametrize("train", [True, False])
def test_detection_pipeline_keeps_boxes_valid(shapes_cfg, train):
    ds = build_dataset(shapes_cfg, "detection", "train")
    t = DetectionTransform(96, train=train, min_box=5.0)
    loader = torch.utils.data.DataLoader(
        TransformedDataset(ds, t), batch_size=8, collate_fn=collate_detection
    )
    kept = 0
    for images, targets in loader:
        assert images.shape[1:] == (3, 96, 96) and images.min() >= 0 and images.max() <= 1
        for tg in targets:
            b = tg["boxes"]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert (b >= 0).all() and (b <= 96).all()
            assert len(tg["labels"]) == len(b)
            kept += len(b)
    total = sum(s.num_objects for s in ds.samples)
    assert kept + t.dropped == total  # every object is either kept or counted as dropped
    if not train:
        assert t.dropped > 0  # 10-px objects shrink below 5 px at 96 px and are counted


def test_segmentation_pipeline_nearest_masks(shapes_cfg):
    ds = build_dataset(shapes_cfg, "segmentation", "val")
    t = SegmentationTransform(128, train=True)
    images, masks = collate_segmentation([t(ds[i]) for i in range(4)])
    assert images.shape == (4, 3, 128, 128) and masks.shape == (4, 128, 128)
    allowed = set(range(len(shapes_cfg.names) + 1)) | {255}
    assert set(masks.unique().tolist()) <= allowed
    assert (masks == 255).any()  # padding uses the ignore index
    for i in range(4):  # nearest neighbour: no class appears that the image does not have
        assert set(masks[i].unique().tolist()) <= set(np.unique(ds[i].mask).tolist()) | {255}


@pytest.mark.parametrize("size", [128, 24])  # up- and down-sampling
def test_segmentation_masks_keep_sharp_class_edges(size):
    """Classes 1 and 4 side by side: linear interpolation would invent 2 and 3 on the edge."""
    from vision.data.sample import Sample

    mask = np.ones((50, 70), np.uint8)
    mask[:, 35:] = 4
    mask[20:30, 10:60] = 1
    s = Sample("x", None, 70, 50, image=np.zeros((50, 70, 3), np.uint8), mask=mask)
    for train in (False, True):
        _, m = SegmentationTransform(size, train=train)(s)
        assert set(m.unique().tolist()) <= {1, 4, 255}


def test_health_ok_and_errors(shapes_cfg, shapes_dir, tmp_path):
    report = check_dataset(shapes_cfg)
    assert report["ok"], report["errors"]
    assert report["splits"]["detection/train"]["images"] == 48
    root = tmp_path / "VOC"
    shutil.copytree(shapes_dir / "VOC", root)
    (root / "JPEGImages/000001.jpg").write_bytes(b"")
    shutil.copyfile(root / "JPEGImages/000002.jpg", root / "JPEGImages/000050.jpg")
    cfg = shapes_cfg.__class__(**{**shapes_cfg.__dict__, "root": root})
    bad = check_dataset(cfg)
    assert not bad["ok"]
    assert bad["splits"]["detection/train"]["unreadable_images"] == 1
    assert any("duplicate image content" in e for e in bad["errors"])  # train/val leak


def test_convert_voc_to_coco_loads_in_pycocotools(shapes_cfg, tmp_path):
    ds = build_dataset(shapes_cfg, "detection", "val")
    data = voc_to_coco(ds, tmp_path / "val.json")
    coco = COCO(str(tmp_path / "val.json"))
    assert len(coco.getImgIds()) == len(ds) == 16
    assert len(coco.getAnnIds()) == sum(s.num_objects for s in ds.samples)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    np.testing.assert_allclose(first["bbox"][:2], ds.samples[0].boxes[0, :2])
    assert data["images"][0]["voc_id"] == ds.samples[0].image_id


def test_cli_generate_check_convert(tmp_path):
    out = tmp_path / "shapes"
    r = subprocess.run(
        [
            *VISION,
            "data",
            "shapes",
            "--out",
            str(out),
            "--train",
            "12",
            "--val",
            "4",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        f"name: mine\nformat: voc\nroot: {out / 'VOC'}\nnames: [circle, square, "
        "triangle, star]\ndetection: {train: ImageSets/Main/train.txt}\n"
    )
    r = subprocess.run(
        [*VISION, "data", "check", str(cfg), "--json", str(tmp_path / "h.json")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: no errors" in r.stdout
    assert (
        json.loads((tmp_path / "h.json").read_text())["splits"]["detection/train"]["images"] == 12
    )
    r = subprocess.run(
        [
            *VISION,
            "data",
            "convert",
            str(cfg),
            "--split",
            "train",
            "--out",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "12 images" in r.stdout
    (out / "VOC/Annotations/000003.xml").write_text("<annotation><size>")
    r = subprocess.run([*VISION, "data", "check", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and "000003.xml" in r.stdout
    r = subprocess.run([*VISION, "data", "check", "nosuchset"], capture_output=True, text=True)
    assert r.returncode == 2 and "shapes" in r.stderr and "Traceback" not in r.stderr
