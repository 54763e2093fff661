"""The COCO reader on a small hand-written file: every kind of bad annotation raises with its
place, or is skipped and counted by reason; boxes, labels, crowd flags and masks as COCO means
them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vision.data.coco import COCODataset, decode_segmentation, load_coco_json
from vision.errors import DataError

W, H = 20, 10
GOOD = [
    # (id, category, bbox, iscrowd)
    (1, 5, [1.0, 2.0, 4.0, 3.0], 0),
    (2, 3, [-1.0, -1.0, W + 2.0, H + 2.0], 0),  # on the 1-pixel tolerance: kept
    (3, 5, [2.0, 2.0, 10.0, 6.0], 1),
    (4, 3, [3.0, 4.0, 0.5, 0.25], None),  # a sub-pixel box is still a box; no iscrowd: not crowd
]
BAD = [
    # (id, category, bbox, reason)
    (10, 5, [1.0, 1.0, 0.0, 3.0], "invalid box"),  # zero width
    (11, 5, [1.0, 1.0, 3.0, 0.0], "invalid box"),  # zero height
    (12, 5, [-1.5, 1.0, 3.0, 3.0], "invalid box"),  # left of the image
    (13, 5, [1.0, -1.5, 3.0, 3.0], "invalid box"),  # above
    (14, 5, [10.0, 1.0, W - 8.5, 3.0], "invalid box"),  # right edge beyond W + 1
    (15, 5, [1.0, 5.0, 3.0, H - 3.5], "invalid box"),  # bottom edge beyond H + 1
    (16, 4, [1.0, 1.0, 3.0, 3.0], "unknown category"),
]


def write_coco(tmp_path, anns: list[dict], images: bool = True) -> tuple:
    imgs = [
        {"id": 7, "file_name": "a.png", "width": W, "height": H},
        {"id": 8, "file_name": "b.png", "width": W, "height": H},
        {"id": 9, "file_name": "c.png", "width": W, "height": H},
    ]
    cats = [{"id": 5, "name": "cat"}, {"id": 3, "name": "dog"}]  # not in id order
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    if images:
        for name in ("a.png", "c.png"):  # b.png is missing
            Image.new("RGB", (W, H), (9, 9, 9)).save(tmp_path / name)
    return path, tmp_path


def ann(i: int, cat: int, bbox: list, crowd: int | None = 0, image: int = 7, **extra) -> dict:
    out = {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, **extra}
    return out if crowd is None else {**out, "iscrowd": crowd}


def test_good_annotations_become_xyxy_boxes_contiguous_labels_and_crowd_flags(tmp_path):
    path, root = write_coco(tmp_path, [ann(i, c, b, cr) for i, c, b, cr in GOOD])
    ds = COCODataset(path, root, require_images=False)
    assert ds.cat_ids == [3, 5] and ds.names == ["dog", "cat"] and ds.label_of == {3: 0, 5: 1}
    s = ds.samples[0]
    assert (s.image_id, s.width, s.height, s.path) == (7, W, H, root / "a.png")
    assert s.boxes.dtype == np.float32
    assert s.boxes.tolist() == [
        [1, 2, 5, 5],
        [-1, -1, W + 1, H + 1],
        [2, 2, 12, 8],
        [3, 4, 3.5, 4.25],
    ]
    assert s.labels.tolist() == [1, 0, 1, 0] and s.crowd.tolist() == [False, False, True, False]
    for flags in (s.crowd, s.difficult, s.truncated):
        assert flags.dtype == bool and flags.shape == (4,)
    assert not s.difficult.any() and not s.truncated.any()
    empty = ds.samples[1]  # no annotations: empty arrays of the same kinds
    assert empty.boxes.shape == (0, 4) and empty.labels.dtype == np.int64
    assert empty.crowd.dtype == bool and empty.crowd.shape == (0,)
    assert len(ds.limit(1)) == 1 and len(ds.limit(None)) == 1


@pytest.mark.parametrize("bad", BAD, ids=[str(b[0]) for b in BAD])
def test_each_bad_annotation_raises_with_its_place(tmp_path, bad):
    i, cat, bbox, reason = bad
    path, root = write_coco(tmp_path, [ann(*GOOD[0][:3]), ann(i, cat, bbox)])
    with pytest.raises(DataError) as e:
        COCODataset(path, root, require_images=False)
    where = f"{path} annotation id={i}"
    if reason == "unknown category":
        assert str(e.value) == f"{where}: expected a category_id in [3, 5], got 4"
    elif bbox[2] <= 0 or bbox[3] <= 0:
        assert (
            str(e.value) == f"{where} field 'bbox': expected width > 0 and height > 0, got {bbox}"
        )
    else:
        assert (
            str(e.value)
            == f"{where} field 'bbox': expected a box inside the 20x10 image, got {bbox}"
        )
    if reason == "invalid box" and bbox[2] > 0 and bbox[3] > 0:  # bounds checks can be turned off
        ds = COCODataset(path, root, require_images=False, check_bounds=False)
        assert ds.samples[0].num_objects == 2


def test_lenient_reading_skips_and_counts_every_bad_annotation(tmp_path):
    anns = [ann(20, 5, [1.0, 1.0, 2.0, 2.0], image=99)]  # an image not in 'images'
    anns += [ann(i, c, b, cr) for i, c, b, cr in GOOD] + [ann(i, c, b) for i, c, b, _ in BAD]
    anns.append(ann(30, 5, [1.0, 1.0, 2.0, 2.0], image=9))
    path, root = write_coco(tmp_path, anns)  # b.png is not on disk
    ds = COCODataset(path, root, strict=False)
    assert [s.image_id for s in ds.samples] == [7, 9]
    assert ds.samples[0].num_objects == len(GOOD) and ds.samples[1].num_objects == 1
    assert ds.skips.counts == {
        "invalid box": 6,
        "unknown category": 1,
        "unknown image": 1,
        "missing file": 1,
    }
    assert ds.skips.first["unknown image"] == (
        f"{path} annotation id=20: expected an image_id listed in 'images', got 99"
    )
    assert ds.skips.first["missing file"] == (
        f"{root / 'b.png'}: expected the image file of image id=8, got no such file"
    )
    with pytest.raises(DataError) as e:
        COCODataset(path, root, names=["cat", "dog"], strict=False)
    assert str(e.value) == (
        f"{path} categories: expected the config's class names ['cat', 'dog'], got ['dog', "
        "'cat'] (the config and the JSON must list the same classes)"
    )
    with pytest.raises(DataError, match=r"id=20: expected an image_id listed in 'images', got 99"):
        COCODataset(path, root)  # strict: the first bad item raises
    path, root = write_coco(tmp_path, [ann(*GOOD[0][:3])])
    with pytest.raises(DataError, match=r"b\.png: expected the image file of image id=8"):
        COCODataset(path, root)


def test_items_decode_their_image_and_semantic_mask(tmp_path):
    poly = [[0, 0, 8, 0, 8, 8, 0, 8]]  # an 8x8 square: the larger instance
    small = mask_utils.encode(
        np.asfortranarray(np.pad(np.ones((2, 2), np.uint8), ((3, 5), (3, 15))))
    )
    small["counts"] = small["counts"].decode()  # compressed RLE as JSON stores it
    crowd = {"size": [H, W], "counts": [H * 15, H * 5]}  # uncompressed RLE: the last 5 columns
    anns = [
        ann(1, 5, [3.0, 3.0, 2.0, 2.0], segmentation=small),
        ann(2, 3, [0.0, 0.0, 8.0, 8.0], segmentation=poly),
        ann(3, 5, [15.0, 0.0, 5.0, 10.0], crowd=1, segmentation=crowd),
    ]
    path, root = write_coco(tmp_path, anns)
    ds = COCODataset(path, root, masks=True, strict=False)
    out = ds[0]
    assert out.image.shape == (H, W, 3) and out.mask.dtype == np.uint8
    assert out.mask[3:5, 3:5].tolist() == [[2, 2], [2, 2]]  # the small cat painted last
    assert out.mask[0, 0] == 1 and out.mask[7, 7] == 1 and out.mask[9, 0] == 0
    assert (out.mask[:, 15:] == 255).all() and (out.mask[:, 8:15] == 0).all()
    inst = ds.instance_masks(0)
    assert inst.dtype == np.uint8 and inst.shape == (3, H, W)
    assert inst.sum(axis=(1, 2)).tolist() == [4, 64, 50]
    assert COCODataset(path, root, strict=False)[0].mask is None  # masks only when asked
    ds._anns[0][0]["segmentation"] = 5
    with pytest.raises(DataError, match=rf"^{path} id=1: expected polygons or an RLE dict"):
        ds.instance_masks(0)
    Image.new("RGB", (W + 1, H)).save(tmp_path / "a.png")
    with pytest.raises(DataError) as e:
        ds[0]
    assert (
        str(e.value)
        == f"{root / 'a.png'}: expected an image of the annotated size 20x10, got 21x10"
    )


def test_decode_segmentation_errors_name_the_annotation():
    with pytest.raises(DataError) as e:
        decode_segmentation({}, 4, 4, "f.json id=3")
    assert (
        str(e.value) == "f.json id=3: expected a 'segmentation' field (polygons or RLE), got none"
    )
    with pytest.raises(DataError) as e:
        decode_segmentation({"segmentation": 5}, 4, 4, "f.json id=3")
    assert str(e.value) == "f.json id=3: expected polygons or an RLE dict, got 'int'"
    for bad in ([[1, 2, "x", 4, 5, 6]], [["a"]], {"size": [4], "counts": [1, 2]}):
        with pytest.raises(DataError, match=r"^f\.json id=3 field 'segmentation': expected valid"):
            decode_segmentation({"segmentation": bad}, 4, 4, "f.json id=3")
    with pytest.raises(DataError) as e:
        decode_segmentation({"segmentation": [[1, 2, "x", 4, 5, 6]]}, 4, 4, "f.json id=3")
    assert str(e.value) == (
        "f.json id=3 field 'segmentation': expected valid polygons or RLE, got could not convert "
        "string to float: 'x'"
    )
    rle = mask_utils.encode(np.asfortranarray(np.eye(4, dtype=np.uint8)))
    assert np.array_equal(decode_segmentation({"segmentation": rle}, 4, 4, "x"), np.eye(4))


def test_load_coco_json_errors(tmp_path):
    p = tmp_path / "a.json"
    with pytest.raises(DataError, match=r"a\.json: expected a COCO annotations JSON file, got no"):
        load_coco_json(p)
    p.write_text('{"images": [1,')
    with pytest.raises(DataError) as e:
        load_coco_json(p)
    assert str(e.value) == f"{p}:1:15: expected valid JSON, got unexpected end of data"
    p.write_text("[]")
    with pytest.raises(DataError) as e:
        load_coco_json(p)
    assert (
        str(e.value) == f"{p}: expected a JSON object with images/annotations/categories, got list"
    )
    p.write_text(json.dumps({"images": [], "annotations": {}, "categories": []}))
    with pytest.raises(DataError) as e:
        load_coco_json(p)
    assert str(e.value) == f"{p}: expected a list 'annotations', got 'dict'"
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
    for field, value, got in (
        ("bbox", [0, 0, 1], "[0, 0, 1]"),
        ("bbox", [0, 0, "1", 1], "[0, 0, '1', 1]"),
    ):
        data = {"images": [], "categories": [], "annotations": [{**good, field: value}]}
        p.write_text(json.dumps(data))
        with pytest.raises(DataError) as e:
            load_coco_json(p)
        where = f"{p} annotations[0] (id=1) field 'bbox'"
        assert str(e.value) == f"{where}: expected [x, y, width, height] numbers, got {got}"
    data = {"images": [], "categories": [], "annotations": [{**good, "category_id": True}]}
    p.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_coco_json(p)
    assert (
        str(e.value)
        == f"{p} annotations[0] (id=1) field 'category_id': expected a int, got bool True"
    )
    for key, bad, where, expected in (
        (
            "images",
            {"id": 1, "file_name": 5, "width": 4, "height": 4},
            "images[0] (id=1) field 'file_name'",
            "a str, got int 5",
        ),
        ("categories", {"id": 1}, "categories[0]", "field 'name', got fields ['id']"),
        (
            "annotations",
            {**good, "bbox": None},
            "annotations[0] (id=1) field 'bbox'",
            "a list, got NoneType None",
        ),
    ):
        p.write_text(json.dumps({"images": [], "categories": [], "annotations": [], key: [bad]}))
        with pytest.raises(DataError) as e:
            load_coco_json(p)
        assert str(e.value) == f"{p} {where}: expected {expected}"
    seg = {"id": 2, "image_id": 1, "category_id": 1, "area": True, "segmentation": []}
    p.write_text(json.dumps({"images": [], "categories": [], "annotations": [seg]}))
    with pytest.raises(DataError, match=r"\(id=2\) field 'area': expected a Number, got bool"):
        load_coco_json(p, evaluate="segm")
    data = {"images": [{"id": 1, "width": 4, "height": 4}], "categories": [], "annotations": []}
    p.write_text(json.dumps(data))
    assert load_coco_json(p, evaluate="segm")["images"][0]["id"] == 1  # no file_name needed
    with pytest.raises(DataError, match=r"images\[0\] \(id=1\): expected field 'file_name'"):
        load_coco_json(p)
    seg = {"id": 2, "image_id": 1, "category_id": 1, "area": 3.0}
    p.write_text(json.dumps({**data, "annotations": [seg]}))
    with pytest.raises(DataError) as e:
        load_coco_json(p, evaluate="segm")
    assert str(e.value) == (
        f"{p} annotations[0] (id=2): expected field 'segmentation' (polygons or RLE), got fields "
        "['area', 'category_id', 'id', 'image_id']"
    )
    with pytest.raises(DataError, match=r"\(id=2\): expected field 'bbox', got fields \['area'"):
        load_coco_json(p, evaluate="bbox")
    p.write_text(json.dumps({**data, "annotations": [{**seg, "segmentation": [], "bbox": [1]}]}))
    with pytest.raises(DataError, match=r"\(id=2\) field 'bbox': expected \[x, y, width, height\]"):
        load_coco_json(p, evaluate="segm")  # a bbox, when there is one, must be a box
