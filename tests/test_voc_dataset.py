"""The VOC reader's finer points: blank values and where each error points, the XML's own image
file name, the bounds switch, stored pixels (no EXIF turn) and RGB masks against the class
count; ``read_image`` on its own."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vision.data.colormap import VOID_RGB, voc_colormap
from vision.data.io import read_image
from vision.data.voc import VOCDataset, parse_voc_xml
from vision.errors import DataError, SkipLog

from .voc_files import obj, size_xml, write_voc, xml

NAMES = ["cat", "dog"]
IDX = {n: i for i, n in enumerate(NAMES)}


def turned_png(path, size=(20, 10)):
    """A ``size`` PNG whose EXIF orientation (6) says: shown turned, ``H x W``."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", size, (40, 40, 40)).save(path, exif=exif)


def error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    return str(e.value)


@pytest.mark.parametrize(
    "objects, size, where, message",
    [
        (obj(name="  "), size_xml(20, 10), " object #0", "expected a <name> element with a value"),
        (obj(box=("a", 3, 10, 8)), size_xml(20, 10), " object #0 <xmin>", "expected a number"),
        ("", "<size><width>20</width><height> </height></size>", "", "expected a <height> element"),
        ("", "<size><width>20</width><height>x</height></size>", " <height>", "expected a number"),
    ],
)
def test_blank_and_bad_values_name_the_file_and_element(tmp_path, objects, size, where, message):
    p = tmp_path / "a.xml"
    p.write_text(xml(objects, size=size))
    assert error(parse_voc_xml, p, IDX).startswith(f"{p}{where}: {message}")  # strict by default


def test_lenient_parsing_keeps_what_follows_a_bad_object_and_both_flag_spellings(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(xml(obj("cow") + obj("dog", difficult="true", truncated="1")))
    skips = SkipLog()
    ann = parse_voc_xml(p, IDX, strict=False, skips=skips)
    assert ann["labels"].tolist() == [1] and skips.counts == {"unknown class": 1}
    assert ann["difficult"].tolist() == [True] and ann["truncated"].tolist() == [True]
    p.write_text(xml(""))
    ann = parse_voc_xml(p, IDX)  # no objects: empty arrays of the same types
    assert (ann["labels"].dtype, ann["difficult"].dtype, ann["truncated"].dtype) == (
        np.int64,
        bool,
        bool,
    )


def test_an_unreadable_xml_names_its_path(tmp_path):
    d = tmp_path / "a.xml"
    d.mkdir()
    assert error(parse_voc_xml, d, IDX).startswith(f"{d}: expected a readable XML file, got ")


def test_the_xmls_file_name_comes_first(tmp_path):
    root = write_voc(tmp_path, {"a": obj()})
    (root / "Annotations/a.xml").write_text(xml(obj(), fn="photo.png"))
    Image.new("RGB", (20, 10), (90, 90, 90)).save(root / "JPEGImages/photo.png")
    ds = VOCDataset(root, NAMES)
    assert ds.samples[0].path == root / "JPEGImages/photo.png" and ds[0].image[0, 0, 0] == 90


def test_defaults_bounds_switch_and_crowd_flags(tmp_path):
    root = write_voc(tmp_path, {"a": obj(box=(2, 3, 22, 8))})  # xmax 22: past width 20 + 1
    assert "a box inside the 20x10 image" in error(VOCDataset, root, NAMES)
    ds = VOCDataset(root, NAMES, check_bounds=False)
    assert ds.task == "detection" and ds[0].boxes.tolist() == [[1, 2, 22, 8]]
    assert ds.samples[0].crowd.dtype == bool and ds.samples[0].crowd.tolist() == [False]


def test_images_are_read_as_stored_not_turned_by_exif(tmp_path):
    """VOC boxes and masks are in the stored pixels' frame: an EXIF turn would misplace them."""
    root = write_voc(tmp_path, {"a": obj()})
    turned_png(root / "JPEGImages/a.png")
    for task in ("detection", "segmentation"):
        s = VOCDataset(root, NAMES, task=task)[0]
        assert s.image.shape == (10, 20, 3) and (s.width, s.height) == (20, 10)


def test_rgb_masks_are_read_with_the_class_count_and_void(tmp_path):
    root = write_voc(tmp_path, {"a": obj()})
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :5] = voc_colormap()[2]  # the last class (dog: index 2 with background)
    rgb[:, 5:8] = VOID_RGB
    Image.fromarray(rgb).save(root / "SegmentationClass/a.png")
    m = VOCDataset(root, NAMES, task="segmentation")[0].mask
    assert np.unique(m).tolist() == [0, 2, 255] and (m[:, 5:8] == 255).all()
    rgb[0, 0] = voc_colormap()[3]  # one index past the classes
    Image.fromarray(rgb).save(root / "SegmentationClass/a.png")
    got = error(VOCDataset(root, NAMES, task="segmentation").__getitem__, 0)
    assert got == (
        f"{root / 'SegmentationClass/a.png'}: expected an index mask or an RGB mask in the VOC "
        "colour map, got (128, 128, 0) at pixel (x=0, y=0)"
    )


def test_read_image_applies_exif_unless_told_not_to(tmp_path):
    turned_png(tmp_path / "t.png")
    assert read_image(tmp_path / "t.png").shape == (20, 10, 3)
    assert read_image(tmp_path / "t.png", exif=False).shape == (10, 20, 3)
    none = tmp_path / "none.jpg"
    assert error(read_image, none) == f"{none}: expected an image file, got no such file"


def test_palette_values_past_the_classes_are_an_error_naming_the_mask(tmp_path):
    mask = np.zeros((10, 20), np.uint8)
    mask[0, :3] = (2, 255, 3)  # dog, void, and an index no class has
    root = write_voc(tmp_path, {"a": obj()}, mask=mask)
    got = error(VOCDataset(root, NAMES, task="segmentation").__getitem__, 0)
    assert got == f"{root / 'SegmentationClass/a.png'}: expected values 0..2 or 255, got [3]"
    mask[0, 2] = 0
    write_voc(tmp_path, {"a": obj()}, mask=mask)
    assert VOCDataset(root, NAMES, task="segmentation")[0].mask[0, :3].tolist() == [2, 255, 0]
