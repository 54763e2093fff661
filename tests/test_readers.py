"""Readers on real third-party data and on the synthetic set, and their errors on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.coco import COCODataset, load_coco_json
from vision.data.io import read_image, read_mask
from vision.data.voc import VOCDataset, parse_voc_xml
from vision.errors import DataError

from .conftest import CLASSES


def test_raccoon_counts_and_split(real):
    ds = VOCDataset(real / "voc_det/raccoon", ["raccoon"])
    assert len(ds) == 200
    assert sum(s.num_objects for s in ds.samples) == 217
    assert sum(int(s.truncated.sum()) for s in ds.samples) == 59
    train, val = (
        build_dataset("raccoon", "detection", "train"),
        build_dataset("raccoon", "detection", "val"),
    )
    assert (len(train), len(val)) == (160, 40)
    s = ds[0]
    assert s.image.shape == (s.height, s.width, 3)


def test_voc_float_coordinates_zero_based(real):
    ds = VOCDataset(
        real / "voc_det/icevision_fridge", ["carton", "can", "milk_bottle", "water_bottle"]
    )
    raw = parse_voc_xml(
        real / "voc_det/icevision_fridge/Annotations/13.xml",
        {n: i for i, n in enumerate(ds.names)},
        zero_based=False,
    )
    s = next(s for s in ds.samples if s.image_id == "13")
    np.testing.assert_allclose(s.boxes[:, :2], raw["boxes"][:, :2] - 1)
    np.testing.assert_allclose(s.boxes[:, 2:], raw["boxes"][:, 2:])
    assert len(ds) == 6 and sum(x.num_objects for x in ds.samples) == 12


def test_coco_val2014_subset(real):
    ann = real / "coco/cocoapi_val2014_fake100/instances_val2014_100.json"
    ds = COCODataset(ann, real / "none", require_images=False)
    assert len(ds) == 100
    assert sum(s.num_objects for s in ds.samples) == 839
    assert sum(int(s.crowd.sum()) for s in ds.samples) == 9
    assert len(ds.cat_ids) == 80 and ds.cat_ids[ds.label_of[90]] == 90
    i = next(i for i, s in enumerate(ds.samples) if s.crowd.any())
    sem = ds.semantic_mask(i)
    assert (sem == 255).any() and sem.shape == (ds.samples[i].height, ds.samples[i].width)


def test_coco_images_and_rle(real):
    ds = COCODataset(
        real / "coco/icevision_coco/annotations.json",
        real / "coco/icevision_coco/images",
        masks=True,
    )
    assert len(ds) == 6 and sum(s.num_objects for s in ds.samples) == 36
    assert sum(int(s.crowd.sum()) for s in ds.samples) == 1
    for i in range(len(ds)):
        m = ds.instance_masks(i)
        assert m.shape[0] == ds.samples[i].num_objects and m.any(axis=(1, 2)).all()


def test_voc_palette_mask_values(real):
    m = read_mask(real / "voc_seg/icevision_voc/SegmentationClass/2007_000063.png")
    assert set(np.unique(m).tolist()) == {0, 9, 12, 255}


def test_vainf_rgb_masks_convert(real):
    values = set()
    for n in ("1", "23", "114"):
        m = read_mask(real / f"voc_seg/vainf_deeplabv3plus_samples/{n}_target.png")
        assert m.shape == (513, 513)
        values |= set(np.unique(m).tolist())
    assert values == {0, 1, 3, 17, 255}


def test_string_ids_rejected(real):
    with pytest.raises(DataError, match=r"gt_ignore_test\.json images\[0\].*'id'.*int.*str"):
        load_coco_json(real / "coco/faster_coco_eval_small/gt_ignore_test.json")


def test_synthetic_voc_and_coco_agree(shapes_dir):
    for split in ("train", "val"):
        voc = VOCDataset(
            shapes_dir / "VOC", CLASSES, split=f"ImageSets/Main/{split}.txt", task="segmentation"
        )
        coco = COCODataset(
            shapes_dir / f"COCO/annotations/instances_{split}.json",
            shapes_dir / "COCO/images",
            names=CLASSES,
            masks=True,
        )
        assert len(voc) == len(coco) > 0
        for i in range(len(voc)):
            a, b = voc[i], coco[i]
            assert a.path.name == b.path.name
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.image, b.image)


def test_synthetic_sizes_and_determinism(shapes_dir, tmp_path):
    from vision.data.health import size_bucket_counts
    from vision.data.shapes import ShapesSpec, generate

    ds = VOCDataset(shapes_dir / "VOC", CLASSES, split="ImageSets/Main/train.txt")
    buckets = size_bucket_counts(np.concatenate([s.areas() for s in ds.samples]))
    assert all(v > 0 for v in buckets.values()), buckets
    generate(tmp_path, ShapesSpec(train=48, val=16, seed=3), workers=2)
    for rel in (
        "COCO/annotations/instances_val.json",
        "VOC/JPEGImages/000050.jpg",
        "VOC/SegmentationClass/000007.png",
        "VOC/Annotations/000003.xml",
    ):
        assert (tmp_path / rel).read_bytes() == (shapes_dir / rel).read_bytes(), rel


@pytest.fixture
def broken_voc(shapes_dir, tmp_path):
    root = tmp_path / "VOC"
    shutil.copytree(shapes_dir / "VOC", root)
    return root


def test_bad_xml_names_file_and_line(broken_voc):
    xml = broken_voc / "Annotations/000001.xml"
    xml.write_text(xml.read_text().replace("</object>", "", 1))
    with pytest.raises(DataError, match=r"000001\.xml:\d+:\d+.*well-formed"):
        VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt")
    lenient = VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt", strict=False)
    assert len(lenient) == 47 and lenient.skips.counts == {"bad XML": 1}


def test_unknown_class_and_bad_boxes(broken_voc):
    xml = broken_voc / "Annotations/000002.xml"
    text = xml.read_text()
    first = text.index("<name>") + len("<name>")
    text = text[:first] + "hexagon" + text[text.index("</name>") :]
    xml.write_text(text)
    with pytest.raises(DataError, match=r"000002\.xml object #0 <name>.*'hexagon'"):
        VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt")
    xml3 = broken_voc / "Annotations/000003.xml"
    t3 = xml3.read_text()
    i = t3.index("<xmax>") + len("<xmax>")
    xml3.write_text(t3[:i] + "5000" + t3[t3.index("</xmax>") :])
    xml4 = broken_voc / "Annotations/000004.xml"
    t4 = xml4.read_text()
    j = t4.index("<xmax>") + len("<xmax>")
    xmin = t4[t4.index("<xmin>") + 6 : t4.index("</xmin>")]
    xml4.write_text(t4[:j] + xmin + t4[t4.index("</xmax>") :])
    ds = VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt", strict=False)
    assert ds.skips.counts == {"unknown class": 1, "invalid box": 2}
    assert len(ds) == 48


def test_missing_and_truncated_images(broken_voc):
    (broken_voc / "JPEGImages/000005.jpg").unlink()
    with pytest.raises(DataError, match=r"000005\.jpg.*no such file"):
        VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt")
    jpg = broken_voc / "JPEGImages/000006.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    with pytest.raises(DataError, match=r"000006\.jpg.*readable"):
        read_image(jpg)
    ds = VOCDataset(broken_voc, CLASSES, split="ImageSets/Main/train.txt", strict=False)
    assert ds.skips.counts == {"missing file": 1}


def test_coco_missing_field(tmp_path):
    import json

    bad = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1}],
    }
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"annotations\[0\] \(id=7\).*'bbox'"):
        load_coco_json(tmp_path / "a.json")


def test_unknown_dataset_lists_known():
    with pytest.raises(DataError, match=r"voc2007.*shapes|shapes.*voc2007"):
        load_config("imagenet")
    for name in ("voc2007", "voc2012", "coco2017", "shapes", "raccoon"):
        cfg = load_config(name)
        assert cfg.names and (cfg.detection or cfg.segmentation)


def test_a_config_with_skip_invalid_reads_leniently_and_counts(broken_voc):
    from vision.config import parse_config

    xml = broken_voc / "Annotations/000004.xml"
    t = xml.read_text()
    j = t.index("<xmax>") + len("<xmax>")
    xmin = t[t.index("<xmin>") + 6 : t.index("</xmin>")]
    xml.write_text(t[:j] + xmin + t[t.index("</xmax>") :])  # a point box, as BCCD has two
    raw = {"name": "b", "format": "voc", "root": str(broken_voc), "names": CLASSES}
    raw["detection"] = {"train": "ImageSets/Main/train.txt"}
    with pytest.raises(DataError, match=r"000004\.xml object #0 <bndbox>"):
        build_dataset(parse_config(raw), "detection", "train")
    ds = build_dataset(parse_config({**raw, "skip_invalid": True}), "detection", "train")
    assert ds.skips.counts == {"invalid box": 1} and len(ds) == 48
