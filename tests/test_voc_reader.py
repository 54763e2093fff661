"""The VOC and image-label-pairs readers on small hand-written sets: coordinates as VOC means them,
split files, and each kind of bad item raised with its place or skipped and counted by reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vision.data.io import write_palette_png
from vision.data.pairs import PairsDataset, read_pairs
from vision.data.voc import VOCDataset, parse_voc_xml, read_split
from vision.errors import DataError, SkipLog

from .voc_files import obj, write_voc, xml

NAMES = ["cat", "dog"]
IDX = {n: i for i, n in enumerate(NAMES)}


def write(path, text: str):
    path.write_text(text)
    return path


def test_boxes_are_zero_based_and_flags_read(tmp_path):
    text = xml(obj(difficult="1", truncated="true") + obj("dog", (1, 1, 20, 10), "0"), fn="a.jpg")
    p = write(tmp_path / "a.xml", text)
    ann = parse_voc_xml(p, IDX)
    assert (ann["filename"], ann["width"], ann["height"]) == ("a.jpg", 20, 10)
    assert ann["boxes"].dtype == np.float32 and ann["boxes"].tolist() == [
        [1, 2, 10, 8],
        [0, 0, 20, 10],
    ]
    assert ann["labels"].tolist() == [0, 1] and ann["labels"].dtype == np.int64
    assert ann["difficult"].tolist() == [True, False] and ann["truncated"].tolist() == [True, False]
    raw = parse_voc_xml(p, IDX, zero_based=False)
    assert raw["boxes"].tolist() == [[2, 3, 10, 8], [1, 1, 20, 10]]
    empty = parse_voc_xml(write(tmp_path / "e.xml", xml("")), IDX)
    assert empty["boxes"].shape == (0, 4) and empty["filename"] == ""


AREA, ZERO = "xmax > xmin and ymax > ymin", " (zero or negative area)"
INSIDE = "a box inside the 20x10 image"
BAD = [
    # (object XML, where, expected, got, reason)
    ("<object><bndbox/></object>", "", "a <name> element with a value", "none", "invalid box"),
    (obj("cow"), " <name>", "a class in ['cat', 'dog']", "'cow'", "unknown class"),
    ("<object><name>cat</name></object>", "", "a <bndbox> element", "none", "invalid box"),
    (obj(box=(2, 3, "x", 8)), " <xmax>", "a number", "'x'", "invalid box"),
    (obj(box=(5, 3, 5, 8)), " <bndbox>", AREA, "(5.0, 3.0, 5.0, 8.0)" + ZERO, "invalid box"),
    (obj(box=(2, 6, 9, 6)), " <bndbox>", AREA, "(2.0, 6.0, 9.0, 6.0)" + ZERO, "invalid box"),
    (obj(box=(-0.5, 3, 9, 8)), " <bndbox>", INSIDE, "(-1.5, 2.0, 9.0, 8.0)", "invalid box"),
    (obj(box=(2, -0.5, 9, 8)), " <bndbox>", INSIDE, "(1.0, -1.5, 9.0, 8.0)", "invalid box"),
    (obj(box=(2, 3, 21.5, 8)), " <bndbox>", INSIDE, "(1.0, 2.0, 21.5, 8.0)", "invalid box"),
    (obj(box=(2, 3, 9, 11.5)), " <bndbox>", INSIDE, "(1.0, 2.0, 9.0, 11.5)", "invalid box"),
]


@pytest.mark.parametrize("bad", BAD, ids=range(len(BAD)))
def test_each_bad_object_raises_with_its_place_or_is_counted(tmp_path, bad):
    o, where, expected, got, reason = bad
    p = write(tmp_path / "a.xml", xml(obj() + o))
    with pytest.raises(DataError) as e:
        parse_voc_xml(p, IDX)
    assert str(e.value) == f"{p} object #1{where}: expected {expected}, got {got}"
    skips = SkipLog()
    ann = parse_voc_xml(p, IDX, strict=False, skips=skips)
    assert ann["labels"].tolist() == [0] and skips.counts == {reason: 1}
    if expected == INSIDE:  # bounds checks can be turned off
        assert len(parse_voc_xml(p, IDX, check_bounds=False)["boxes"]) == 2


def test_the_one_pixel_slack_at_every_edge(tmp_path):
    p = write(tmp_path / "a.xml", xml(obj(box=(0, 0, 21, 11))))  # 0-based xmin, xmax = W + 1
    assert parse_voc_xml(p, IDX)["boxes"].tolist() == [[-1, -1, 21, 11]]


def test_file_level_errors(tmp_path):
    p = write(tmp_path / "a.xml", "<annotation><size>")
    with pytest.raises(DataError, match=r"a\.xml:1:\d+: expected well-formed VOC XML, got parse"):
        parse_voc_xml(p, IDX)
    with pytest.raises(DataError, match=r"^\S+: expected a readable XML file, got .*directory"):
        parse_voc_xml(tmp_path, IDX)
    p = write(tmp_path / "a.xml", xml(obj(), size=""))
    with pytest.raises(DataError) as e:
        parse_voc_xml(p, IDX)
    assert str(e.value) == f"{p}: expected a <size> element with <width> and <height>, got none"
    p = write(tmp_path / "a.xml", xml(obj(), size="<size><width>2O</width></size>"))
    with pytest.raises(DataError) as e:
        parse_voc_xml(p, IDX)
    assert str(e.value) == f"{p} <width>: expected a number, got '2O'"


def test_split_files_txt_and_csv(tmp_path):
    write(tmp_path / "s.txt", "b 1\n\na -1\n  \nc\n")
    assert read_split(tmp_path, "s.txt") == ["b", "a", "c"]
    assert read_split(tmp_path, tmp_path / "s.txt") == ["b", "a", "c"]  # absolute path
    write(tmp_path / "s.csv", "filename,w\nx.jpg,1\nsub/y.png,2\n\nx.jpg,3\n")
    assert read_split(tmp_path, "s.csv") == ["x", "y"]
    with pytest.raises(DataError) as e:
        read_split(tmp_path, "none.txt")
    assert str(e.value) == (
        f"{tmp_path / 'none.txt'}: expected a split file (ImageSets/*.txt or a CSV of file "
        "names), got no such file"
    )


def voc_root(tmp_path, ids=("a", "b")):
    return write_voc(tmp_path, {i: obj() for i in ids})


def test_voc_dataset_items_and_problems(tmp_path):
    root = voc_root(tmp_path)
    ds = VOCDataset(root, NAMES)  # no split: every annotation, sorted
    assert [s.image_id for s in ds.samples] == ["a", "b"] and len(ds.limit(1)) == 1
    assert ds.samples[0].path == root / "JPEGImages/a.png" and not ds.samples[0].crowd.any()
    write(root / "Annotations/b.xml", xml(obj(), fn="b.png"))
    seg = VOCDataset(root, NAMES, ids=["a", "b"], task="segmentation")
    s = seg[1]
    assert s.image.shape == (10, 20, 3) and s.mask.tolist() == np.ones((10, 20)).tolist()
    (root / "Annotations/a.xml").unlink()  # segmentation sets may have no XML: size from the image
    s = VOCDataset(root, NAMES, ids=["a"], task="segmentation")[0]
    assert (s.width, s.height) == (20, 10)
    with pytest.raises(DataError) as e:
        VOCDataset(root, NAMES, ids=["a"])
    assert str(e.value) == (
        f"{root / 'Annotations/a.xml'}: expected an annotation XML for the split's image id, "
        "got no such file"
    )
    with pytest.raises(DataError, match=r"c\.png: expected a segmentation mask PNG, got no such"):
        VOCDataset(root, NAMES, ids=["c"], task="segmentation")
    (root / "JPEGImages/b.png").rename(root / "JPEGImages/b.bmp")
    with pytest.raises(DataError) as e:  # the XML's file name is gone; no id.ext either
        VOCDataset(root, NAMES, ids=["b"])
    assert str(e.value) == (
        f"{root / 'JPEGImages/b.jpg'}: expected an image file for the annotation, got no such file"
    )


def test_voc_sizes_must_match_and_problems_are_counted(tmp_path):
    root = voc_root(tmp_path, ids=("a", "b", "c", "d"))
    Image.new("RGB", (21, 10)).save(root / "JPEGImages/a.png")
    write_palette_png(np.ones((10, 21), np.uint8), root / "SegmentationClass/b.png")
    ds = VOCDataset(root, NAMES, task="segmentation")
    with pytest.raises(DataError) as e:
        ds[0]
    assert (
        str(e.value)
        == f"{root / 'JPEGImages/a.png'}: expected an image of the annotated size 20x10, got 21x10"
    )
    with pytest.raises(DataError) as e:
        ds[1]
    assert (
        str(e.value)
        == f"{root / 'SegmentationClass/b.png'}: expected a mask of the image size 20x10, got 21x10"
    )
    write(root / "Annotations/a.xml", "<annotation>")
    write(root / "Annotations/b.xml", xml(obj(), size=""))
    write(root / "Annotations/c.xml", xml(obj(), size="<size><width>w</width></size>"))
    (root / "JPEGImages/d.png").unlink()
    ds = VOCDataset(root, NAMES, ids=["a", "b", "c", "d", "e"], strict=False)
    assert len(ds) == 0
    assert ds.skips.counts == {"bad XML": 2, "invalid annotation": 1, "missing file": 2}
    assert ds.skips.first["invalid annotation"].startswith(f"{root / 'Annotations/c.xml'} <width>")
    assert "b.xml: expected a <size> element" in " ".join(ds.skips.messages)


def test_pairs_split_files_and_void(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (4, 2)).save(tmp_path / "train/x.png")
    write_palette_png(np.array([[0, 11, 3, 11], [1, 2, 11, 0]]), tmp_path / "train/x_L.png")
    write(tmp_path / "s.txt", "train/x.png /SegNet/CamVid/train/x_L.png\n\n")
    pairs = read_pairs(tmp_path, "s.txt")
    assert pairs == [
        (tmp_path / "train/x.png", tmp_path / "train/x_L.png", f"{tmp_path / 's.txt'}:1")
    ]
    ds = PairsDataset(tmp_path, ["a"] * 11, "s.txt", void=11)
    s = ds[0]
    assert (s.width, s.height, s.image_id) == (4, 2, "x") and not ds.background
    assert s.mask.tolist() == [[0, 255, 3, 255], [1, 2, 255, 0]]
    assert PairsDataset(tmp_path, ["a"] * 12, "s.txt").semantic_mask(0)[0, 1] == 11  # no void
    with_bg = PairsDataset(tmp_path, ["a"] * 3, "s.txt", void=11, background=True)
    assert with_bg[0].mask[0, 2] == 3  # index 0 is background: 3 is the last class
    with pytest.raises(DataError) as e:  # label values past the classes: an error, not a crash
        PairsDataset(tmp_path, ["a"] * 3, "s.txt", void=11)[0]
    assert str(e.value) == f"{tmp_path / 'train/x_L.png'}: expected values 0..2 or 255, got [3]"
    write(tmp_path / "s.txt", "train/x.png train/x_L.png\ntrain/y.png train/x_L.png\n")
    with pytest.raises(DataError) as e:
        PairsDataset(tmp_path, ["a"], "s.txt")
    where = f"{tmp_path / 's.txt'}:2 {tmp_path / 'train/y.png'}"
    assert str(e.value) == f"{where}: expected an existing image file, got no such file"
    lenient = PairsDataset(tmp_path, ["a"], "s.txt", strict=False)
    assert len(lenient) == 1 and lenient.skips.counts == {"missing file": 1}
    assert len(lenient.limit(5)) == 1
    write(tmp_path / "s.txt", "train/x.png\n")
    with pytest.raises(DataError) as e:
        read_pairs(tmp_path, "s.txt")
    assert (
        str(e.value)
        == f"{tmp_path / 's.txt'}:1: expected two paths, 'image label', got 'train/x.png'"
    )
    with pytest.raises(DataError, match=r"none\.txt: expected a split file of 'image label' lines"):
        read_pairs(tmp_path, "none.txt")
    write(tmp_path / "s.txt", "train/x.png train/x_L.png\n")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": label maps match the stored pixels, so it is not applied
    Image.new("RGB", (4, 2)).save(tmp_path / "train/x.png", exif=exif)
    assert PairsDataset(tmp_path, ["a"] * 12, "s.txt")[0].image.shape == (2, 4, 3)
    Image.new("RGB", (5, 2)).save(tmp_path / "train/x.png")
    with pytest.raises(DataError) as e:
        PairsDataset(tmp_path, ["a"] * 12, "s.txt")[0]
    assert (
        str(e.value)
        == f"{tmp_path / 'train/x_L.png'}: expected a label map of the image size 5x2, got 4x2"
    )


def test_pairs_lists_blank_lines_missing_files_and_unknown_sizes(tmp_path):
    (tmp_path / "train").mkdir()
    for i in ("x", "y"):
        Image.new("RGB", (4, 2)).save(tmp_path / f"train/{i}.png")
        write_palette_png(np.zeros((2, 4), np.uint8), tmp_path / f"train/{i}_L.png")
    write(tmp_path / "s.txt", "train/x.png train/z_L.png\n\n" + "train/y.png train/y_L.png\n")
    with pytest.raises(DataError) as e:
        PairsDataset(tmp_path, ["a"], "s.txt")
    where = f"{tmp_path / 's.txt'}:1 {tmp_path / 'train/z_L.png'}"
    assert str(e.value) == f"{where}: expected an existing label map file, got no such file"
    ds = PairsDataset(tmp_path, ["a"], "s.txt", strict=False)  # the line after a bad one is read
    assert [s.image_id for s in ds.samples] == ["y"] and ds.task == "segmentation"
    assert (ds.samples[0].width, ds.samples[0].height) == (0, 0)  # known once the image is read
    assert len(read_pairs(tmp_path, "s.txt")) == 2
    with pytest.raises(DataError) as e:
        read_pairs(tmp_path, "none.txt")
    want = (
        f"{tmp_path / 'none.txt'}: expected a split file of 'image label' lines, got no such file"
    )
    assert str(e.value) == want
