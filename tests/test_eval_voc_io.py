"""VOC evaluation files: XML folders (raw corners, unlisted classes), class lists and detection
JSON, every error word for word."""

from __future__ import annotations

import json

import numpy as np
import pytest

# The eleven VOC07 recall thresholds as the references hold them, written out as literals:
# the Python ports' np.arange(0, 1.1, 0.1), and the MATLAB devkit's 0:0.1:1 (colon operator:
# first half k*0.1, second half 1 - (10 - k)*0.1)


def _xml(path, objects, size=(100, 80)) -> None:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_voc_files_raw_coordinates_unlisted_classes_and_errors(tmp_path):
    """The reference scripts' conventions: raw 1-based corners kept, boxes past the image
    edge accepted (as the devkit does), objects of unlisted classes counted; bad files named."""
    from eval.voc_io import load_voc_folder, read_classes
    from vision.errors import DataError

    _xml(tmp_path / "a.xml", [("cat", (1, 2, 30, 40)), ("dog", (50, 10, 130, 90))])
    _xml(tmp_path / "b.xml", [("bird", (5, 5, 9, 9))])
    gts, names, unlisted = load_voc_folder(tmp_path)
    assert names == ["bird", "cat", "dog"] and unlisted == 0
    np.testing.assert_array_equal(gts["a"]["boxes"], [[1, 2, 30, 40], [50, 10, 130, 90]])
    gts, names, unlisted = load_voc_folder(tmp_path, ["dog", "cat"])
    assert names == ["dog", "cat"] and unlisted == 1 and list(gts["a"]["labels"]) == [1, 0]
    (tmp_path / "text.txt").write_text("dog\n\n cat \n")
    assert read_classes(str(tmp_path / "text.txt")) == ["dog", "cat"]
    assert read_classes(None) is None
    assert read_classes("shapes") == ["circle", "square", "triangle", "star"]  # a config name
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError) as e:
        read_classes(str(tmp_path / "empty.txt"))
    assert (
        str(e.value)
        == f"{tmp_path / 'empty.txt'}: expected class names, one per line, got an empty file"
    )
    with pytest.raises(DataError) as e:
        load_voc_folder(tmp_path / "text.txt")
    assert str(e.value) == (
        f"{tmp_path / 'text.txt'}: expected a folder of VOC XML files, got no *.xml files"
    )
    _xml(tmp_path / "c.xml", [("cat", (30, 5, 10, 9))])  # xmax < xmin
    with pytest.raises(DataError) as e:
        load_voc_folder(tmp_path, ["cat"])
    assert str(e.value).startswith(
        f"{tmp_path}: expected valid VOC objects, got skipped 3 items: 1 invalid box, "
        f"2 unknown class: {tmp_path / 'c.xml'} object #0 <bndbox>: expected xmax > xmin"
    )
    (tmp_path / "c.xml").write_text("<annotation>\n<size></annotation>")
    with pytest.raises(DataError) as e:
        load_voc_folder(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'c.xml'}:2: expected well-formed VOC XML, got ")
    assert "mismatched tag: line 2, column" in str(e.value)


def test_voc_detection_files_every_error_word_for_word(tmp_path):
    from eval.voc_io import load_voc_detections
    from vision.errors import DataError

    gts = {"a": {}, "7": {}}
    good = {"image_id": "a", "category": "cat", "bbox": [1, 2, 3, 4], "score": 0.5}

    def error(content, ignore=False) -> str:
        path = tmp_path / "d.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(DataError) as e:
            load_voc_detections(path, gts, ["cat", "dog"], ignore)
        return str(e.value).replace(str(path), "F")

    with pytest.raises(DataError) as e:
        load_voc_detections(tmp_path / "none.json", gts, ["cat"])
    assert (
        str(e.value)
        == f"{tmp_path / 'none.json'}: expected a JSON file of detections, got no such file"
    )
    assert error(" \n") == "F: expected a JSON list of detections, got an empty file"
    assert (
        error("[{]")
        == "F:1:3: expected valid JSON, got Expecting property name enclosed in double quotes"
    )
    assert error({"a": 1}) == "F: expected a JSON list of detections, got dict"
    assert error([good, 3]) == "F[1]: expected a detection object, got int"
    assert error([{"image_id": "a", "category": "cat", "bbox": [1, 2, 3, 4]}]) == (
        "F[0]: expected field 'score', got fields ['bbox', 'category', 'image_id']"
    )
    assert error([{**good, "image_id": "b"}]) == (
        "F[0] image_id: expected the stem of an XML file in the annotations, got 'b'"
    )
    assert error([{**good, "category": "cow"}]) == (
        "F[0] category: expected a class of the ground truth ['cat', 'dog'], got 'cow' (list "
        "the classes to score with --classes, or leave such detections out with "
        "--ignore-unknown)"
    )
    assert error([{**good, "bbox": [1, 2, 3]}]) == "F[0] bbox: expected [x, y, w, h], got [1, 2, 3]"
    assert error([{**good, "bbox": [1, 2, -3, 4]}]) == (
        "F[0] bbox: expected [x, y, w, h] with w >= 0 and h >= 0, got [1, 2, -3, 4]"
    )
    path = tmp_path / "ok.json"
    cow = {**good, "category": "cow"}
    path.write_text(json.dumps([good, cow, {**good, "image_id": 7, "category": "dog"}, cow]))
    dets, unknown = load_voc_detections(path, gts, ["cat", "dog"], ignore_unknown=True)
    assert unknown == 2
    assert dets == [
        {"image_id": "a", "label": 0, "box": [1.0, 2.0, 4.0, 6.0], "score": 0.5},
        {"image_id": "7", "label": 1, "box": [1.0, 2.0, 4.0, 6.0], "score": 0.5},
    ]


def test_voc_detection_defaults_zero_size_boxes_and_yaml_class_lists(tmp_path):
    """Unknown classes are an error unless asked otherwise; a box of zero or sub-pixel width
    or height is valid; a class list with a .yml or .yaml suffix is read as a dataset config."""
    from eval.voc_io import load_voc_detections, read_classes
    from vision.errors import DataError

    path = tmp_path / "d.json"
    dets = [{"image_id": "a", "category": "cat", "bbox": b, "score": 0.5}
            for b in ([1, 2, 0, 4], [1, 2, 3, 0], [1, 2, 0.5, 0.5])]  # fmt: skip
    path.write_text(json.dumps(dets))
    got, unknown = load_voc_detections(path, {"a": {}}, ["cat"])
    assert unknown == 0 and [d["box"] for d in got] == [
        [1.0, 2.0, 1.0, 6.0], [1.0, 2.0, 4.0, 2.0], [1.0, 2.0, 1.5, 2.5]]  # fmt: skip
    path.write_text(json.dumps([{**dets[0], "category": "cow"}]))
    with pytest.raises(DataError, match="expected a class of the ground truth"):
        load_voc_detections(path, {"a": {}}, ["cat"])
    for suffix in (".yml", ".yaml"):
        cfg = tmp_path / f"pets{suffix}"
        cfg.write_text("name: pets\nformat: voc\nroot: .\nnames: [cat, dog]\n")
        assert read_classes(str(cfg)) == ["cat", "dog"]
    listed = tmp_path / "pets.txt"
    listed.write_text("cat\n\ndog\n")
    assert read_classes(str(listed)) == ["cat", "dog"] and read_classes(None) is None
