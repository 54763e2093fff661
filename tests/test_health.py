"""The dataset health report on a small hand-built VOC set whose every count is known: classes,
size buckets, flags, skipped items, unreadable images, bad masks, duplicates, the terminal table."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from PIL import Image

from vision.config import parse_config
from vision.data.health import check_dataset, format_report, size_bucket_counts
from vision.data.io import write_palette_png

from .conftest import REPO, run_cli
from .voc_files import obj, write_voc

NAMES = ["cat", "dog"]


def config(root, detection: dict, segmentation: dict | None = None):
    raw = {"name": "mini", "format": "voc", "root": str(root), "names": NAMES}
    raw["detection"] = detection
    if segmentation:
        raw["segmentation"] = segmentation
    return parse_config(raw)


@pytest.fixture
def mini(tmp_path):
    root = tmp_path / "VOC"
    objects = {
        "a": obj("cat", (1, 1, 20, 20)) + obj("cat", (1, 1, 50, 50), difficult="1"),
        "b": obj("dog", (1, 1, 150, 90)) + obj("cat", (5, 5, 30, 30)),
        "c": obj("dog", (1, 1, 10, 10)),
        "d": obj("cat", (1, 1, 10, 10)),
    }
    mask = np.zeros((100, 200), np.uint8)  # a 10x10 cat and a 10x10 void corner an image
    mask[:10, :10] = 1
    mask[90:, 190:] = 255
    write_voc(root, objects, (200, 100), {"a": 10, "b": 20, "c": 30, "d": 40}, mask)
    (root / "ImageSets/Main/train.txt").write_text("a\nb\n")
    (root / "ImageSets/Main/val.txt").write_text("c\nd\n")
    return root


def test_a_clean_set_reports_every_count(mini):
    rep = check_dataset(
        config(mini, {"train": "ImageSets/Main/train.txt", "val": "ImageSets/Main/val.txt"})
    )
    assert rep["ok"] and rep["errors"] == [] and rep["warnings"] == []
    assert (rep["dataset"], rep["root"], rep["classes"]) == ("mini", str(mini), NAMES)
    tr = rep["splits"]["detection/train"]
    assert tr["images"] == 2 and tr["objects"] == 4
    assert tr["objects_per_class"] == {"cat": 3, "dog": 1}
    assert tr["images_per_class"] == {"cat": 2, "dog": 1}  # a's two cats count one image
    # areas (0-based, continuous): 20*20, 50*50, 150*90, 26*26 -> small < 32^2 <= medium < 96^2
    assert tr["size_buckets"] == {"small": 2, "medium": 1, "large": 1}
    assert (tr["difficult"], tr["crowd"], tr["unreadable_images"], tr["bad_masks"]) == (1, 0, 0, 0)
    assert tr["skipped"] == {"total": 0, "by_reason": {}, "examples": []}
    assert "pixels_per_class" not in tr
    va = rep["splits"]["detection/val"]
    assert va["objects_per_class"] == {"cat": 1, "dog": 1} and va["images"] == 2
    text = format_report(rep)
    lines = text.splitlines()
    assert lines[0] == f"Dataset mini ({mini})"
    assert lines[1].split() == [
        "split",
        "images",
        "objects",
        "small",
        "medium",
        "large",
        "diff",
        "crowd",
        "skipped",
    ]
    assert lines[3].split() == ["detection/train", "2", "4", "2", "1", "1", "1", "0", "0"]
    assert lines[4].split() == ["detection/val", "2", "2", "2", "0", "0", "0", "0", "0"]
    cat = next(line for line in lines if line.startswith("cat "))
    assert cat.split() == ["cat", "3", "obj", "2", "im", "1", "obj", "1", "im"]
    assert lines[-1] == "OK: no errors"


def test_problems_are_errors_and_duplicates_inside_a_split_warnings(mini):
    (mini / "JPEGImages/b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # unreadable
    Image.new("RGB", (200, 100), (10,) * 3).save(mini / "JPEGImages/d.png")  # = a: a leak
    (mini / "ImageSets/Main/train.txt").write_text("a\nb\nzz\n")  # zz: no annotation
    (mini / "ImageSets/Main/test.txt").write_text("c\n")
    cfg = config(mini, {s: f"ImageSets/Main/{s}.txt" for s in ("train", "val", "test")})
    rep = check_dataset(cfg)
    assert not rep["ok"]
    tr = rep["splits"]["detection/train"]
    assert tr["unreadable_images"] == 1 and tr["images"] == 2
    assert tr["skipped"]["by_reason"] == {"missing file": 1}
    errors = "\n".join(rep["errors"])
    assert f"detection/train: {mini / 'JPEGImages/b.png'}: expected a readable PNG image" in errors
    assert f"detection/train: {mini / 'Annotations/zz.xml'}: expected an annotation XML" in errors
    dup_vt = [e for e in rep["errors"] if e.startswith("duplicate image content")]
    assert len(dup_vt) == 1 and "a.png" in dup_vt[0] and "d.png" in dup_vt[0]  # train/val leak
    assert re.match(r"duplicate image content [0-9a-f]{12}: \['/", dup_vt[0])  # a short digest
    assert rep["warnings"] == []
    Image.new("RGB", (200, 100), (30,) * 3).save(mini / "JPEGImages/d.png")  # = c, both in val
    (mini / "ImageSets/Main/test.txt").write_text("a\n")  # the same file in two splits: fine
    rep = check_dataset(cfg)
    assert len(rep["warnings"]) == 1 and "c.png" in rep["warnings"][0]  # inside val only
    assert rep["warnings"][0].startswith("duplicate image content ")
    assert not any(e.startswith("duplicate") for e in rep["errors"])
    assert check_dataset(cfg, decode=False)["ok"] is False  # the skipped item still counts
    assert "WARNING duplicate image content" in format_report(rep)
    assert format_report(rep).splitlines()[-1] == f"FAILED: {len(rep['errors'])} errors"


def test_segmentation_masks_are_checked_and_their_pixels_counted(mini):
    seg = {"train": "ImageSets/Main/train.txt", "val": "ImageSets/Main/val.txt"}
    cfg = config(mini, {"train": "ImageSets/Main/train.txt"}, seg)
    rep = check_dataset(cfg)
    assert rep["ok"], rep["errors"]
    px = rep["splits"]["segmentation/train"]["pixels_per_class"]
    assert px == {"background": 2 * (20000 - 200), "cat": 200, "dog": 0, "void": 200}
    assert (
        "pixels_per_class" not in check_dataset(cfg, decode=False)["splits"]["segmentation/train"]
    )
    text = format_report(rep)
    assert any(line.split()[:2] == ["cat", "0.50%"] for line in text.splitlines())
    write_palette_png(np.full((100, 200), 7, np.uint8), mini / "SegmentationClass/c.png")
    write_palette_png(np.zeros((99, 200), np.uint8), mini / "SegmentationClass/d.png")
    rep = check_dataset(cfg)
    val = rep["splits"]["segmentation/val"]
    assert val["bad_masks"] == 2 and val["unreadable_images"] == 0 and not rep["ok"]
    c, d = (mini / f"SegmentationClass/{i}.png" for i in "cd")
    assert f"segmentation/val: {c}: expected values 0..2 or 255, got [7]" in rep["errors"]
    assert f"segmentation/val: {d}: expected a 200x100 mask, got 200x99" in rep["errors"]


def test_many_skips_are_summarised_and_a_missing_split_is_an_error(mini):
    (mini / "ImageSets/Main/train.txt").write_text("".join(f"x{i}\n" for i in range(53)))
    rep = check_dataset(config(mini, {"val": "nope.txt", "train": "ImageSets/Main/train.txt"}))
    tr = rep["splits"]["detection/train"]
    assert tr["skipped"]["total"] == 53 and len(tr["skipped"]["examples"]) == 50
    assert tr["images"] == 0 and tr["size_buckets"] == {"small": 0, "medium": 0, "large": 0}
    assert tr["objects_per_class"] == tr["images_per_class"] == {"cat": 0, "dog": 0}
    assert "detection/train: ... and 3 more" in rep["errors"]
    assert f"detection/val: {mini / 'nope.txt'}: expected a split file" in "\n".join(rep["errors"])
    assert "detection/val" not in rep["splits"]
    more = {**rep, "errors": [f"e{i}" for i in range(33)]}
    tail = format_report(more).splitlines()
    assert tail[-3:] == ["ERROR e29", "... 3 more errors in the JSON report", "FAILED: 33 errors"]
    tail = format_report({**rep, "errors": [f"e{i}" for i in range(30)]}).splitlines()
    assert tail[-2:] == ["ERROR e29", "FAILED: 30 errors"]  # all shown: no "more" line
    tail = format_report({**rep, "errors": [f"e{i}" for i in range(31)]}).splitlines()
    assert tail[-2:] == ["... 1 more errors in the JSON report", "FAILED: 31 errors"]


def test_size_buckets_edges():
    areas = np.array([0, 32**2 - 1, 32**2, 96**2 - 0.5, 96**2, 1e9])
    assert size_bucket_counts(areas) == {"small": 2, "medium": 2, "large": 2}


def test_unreadable_images_and_masks_are_counted_and_named(mini):
    seg = {"val": "ImageSets/Main/val.txt"}
    for i in "cd":
        (mini / f"JPEGImages/{i}.png").write_bytes(b"")
    (mini / "SegmentationClass/d.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rep = check_dataset(config(mini, {"train": "ImageSets/Main/train.txt"}, seg))
    val = rep["splits"]["segmentation/val"]
    assert (val["unreadable_images"], val["bad_masks"]) == (2, 1)
    errors = "\n".join(rep["errors"])
    assert (
        f"segmentation/val: {mini / 'JPEGImages/c.png'}: expected a JPEG, PNG or WebP image"
        in errors
    )
    mask = mini / "SegmentationClass/d.png"
    assert f"segmentation/val: {mask}: expected a readable PNG mask, got " in errors


TABLE = """\
Dataset mini (ROOT)
split                     images  objects  small  medium  large  diff  crowd  skipped
-------------------------------------------------------------------------------------
detection/train                2        4      2       1      1     1      0        0
segmentation/val               2        2      2       0      0     0      0        0

class            detection/train
cat                  3 obj     2 im
dog                  1 obj     1 im

pixels          segmentation/val
background                99.00%
cat                        0.50%
dog                        0.00%
void                       0.50%

OK: no errors"""


def test_the_terminal_table(mini):
    both = config(mini, {"train": "ImageSets/Main/train.txt"}, {"val": "ImageSets/Main/val.txt"})
    assert format_report(check_dataset(both)).replace(str(mini), "ROOT") == TABLE
    seg = config(mini, {}, {"val": "ImageSets/Main/val.txt"})
    lines = TABLE.splitlines()
    no_boxes = [*lines[:3], lines[4], "", *lines[10:]]  # no objects-per-class table
    assert format_report(check_dataset(seg)).replace(str(mini), "ROOT").splitlines() == no_boxes
    two = {"train": "ImageSets/Main/train.txt", "val": "ImageSets/Main/val.txt"}
    lines = format_report(check_dataset(config(mini, two, two))).splitlines()
    assert "class            detection/train         detection/val" in lines
    assert "pixels        segmentation/train      segmentation/val" in lines
    # not decoded: no pixel counts either, so the classes are listed alone
    text = format_report(check_dataset(seg, decode=False)).replace(str(mini), "ROOT")
    assert text.splitlines()[4:] == ["", "class", "cat", "dog", "", "OK: no errors"]


def test_crowd_regions_of_a_coco_set_are_counted(tmp_path):
    import json

    imgs = [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 40} for i in (1, 2)]
    anns = [
        {"id": 10 + k, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9], "iscrowd": crowd}
        for k, (i, crowd) in enumerate([(1, 1), (1, 0), (2, 1), (2, 1)])
    ]
    for img in imgs:
        Image.new("RGB", (40, 40), (img["id"] * 50,) * 3).save(tmp_path / img["file_name"])
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    data = {"images": imgs, "annotations": anns, "categories": cats}
    (tmp_path / "a.json").write_text(json.dumps(data))
    raw = {"name": "c", "format": "coco", "root": str(tmp_path), "names": NAMES}
    raw["detection"] = {"train": {"images": ".", "annotations": "a.json"}}
    rep = check_dataset(parse_config(raw))
    tr = rep["splits"]["detection/train"]
    assert rep["ok"] and (tr["crowd"], tr["objects"], tr["difficult"]) == (3, 4, 0)


def test_items_a_config_skips_on_purpose_are_counted_warnings(real, tmp_path, monkeypatch):
    """``vision data check bccd``: the real BCCD set's two point boxes are skipped by its config
    (``skip_invalid: true``), so they are warnings with a count, both named, and the check
    passes; the same set without ``skip_invalid`` fails on them."""
    (tmp_path / "bccd").symlink_to(real / "voc_det" / "bccd" / "BCCD")
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    r = run_cli(["data", "check", "bccd", "--no-decode"])
    assert r.returncode == 0, r.stdout[-2000:]
    warnings = [line for line in r.stdout.splitlines() if line.startswith("WARNING ")]
    assert "WARNING detection/train: 1 items skipped (skip_invalid: true in the config)" in warnings
    assert "WARNING detection/val: 1 items skipped (skip_invalid: true in the config)" in warnings
    assert any("BloodImage_00343" in w for w in warnings)
    assert any("BloodImage_00338" in w for w in warnings)
    assert r.stdout.splitlines()[-1] == "OK: no errors"
    raw = yaml.safe_load((REPO / "datasets" / "bccd.yaml").read_text())
    raw.pop("skip_invalid")
    strict = tmp_path / "bccd_strict.yaml"
    strict.write_text(yaml.safe_dump(raw))
    rep = check_dataset(strict, decode=False)
    assert not rep["ok"] and len(rep["errors"]) == 2 and rep["warnings"] == []
