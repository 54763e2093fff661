"""Small library pieces checked one behaviour at a time, in process and in well under a second
each: the error types, the letterbox's edges, the sample type, VOC → COCO conversion, the
reader builder, the shape fitting of pruned checkpoints, the registry and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vision.config import parse_config
from vision.data.build import build_dataset
from vision.data.convert import voc_to_coco
from vision.data.io import ImageError
from vision.data.letterbox import Letterbox
from vision.data.sample import IGNORE_INDEX, Sample, mask_classes, with_image
from vision.errors import DataError, SkipLog, handle

from .voc_files import obj, write_voc

# ---- vision.errors --------------------------------------------------------------------------


def test_data_error_message_and_fields():
    e = DataError("a.xml: box", "x1 < x2", "x1=3, x2=2", "drop the box")
    assert str(e) == "a.xml: box: expected x1 < x2, got x1=3, x2=2 (drop the box)"
    assert (e.where, e.expected, e.got, e.fix) == (
        "a.xml: box",
        "x1 < x2",
        "x1=3, x2=2",
        "drop the box",
    )
    assert isinstance(e, ValueError)
    plain = DataError("w", "e", "g")
    assert str(plain) == "w: expected e, got g" and plain.fix is None


def test_skip_log_counts_first_messages_and_cap():
    log = SkipLog(keep=3)
    assert log.total == 0 and log.summary() == "skipped 0 items"
    for i in range(4):
        log.add("zero_size", f"z{i}")
    log.add("bad_label", "b0")
    assert log.total == 5
    assert log.counts == {"zero_size": 4, "bad_label": 1}
    assert log.first == {"zero_size": "z0", "bad_label": "b0"}
    assert log.messages == ["z0", "z1", "z2"]  # the first `keep`, in order
    assert log.summary() == "skipped 5 items: 1 bad_label, 4 zero_size"
    assert log.as_dict() == {
        "total": 5,
        "by_reason": {"zero_size": 4, "bad_label": 1},
        "examples": ["z0", "z1", "z2"],
    }
    assert SkipLog().keep == 50 and SkipLog().messages == [] and SkipLog().first == {}


def test_handle_raises_when_strict_or_without_a_log():
    err = DataError("w", "e", "g")
    log = SkipLog()
    with pytest.raises(DataError):
        handle(err, True, log, "r")
    with pytest.raises(DataError):
        handle(err, False, None, "r")
    assert log.total == 0
    handle(err, False, log, "r")
    assert log.counts == {"r": 1} and log.messages == ["w: expected e, got g"]


# ---- vision.data.letterbox ------------------------------------------------------------------


def test_letterbox_places_the_resized_image_top_left():
    img = np.full((10, 20, 3), 7, np.uint8)
    out, info = Letterbox(40).one(img)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert info == {"orig_size": (10, 20), "scale": 2.0}
    assert (out[:20, :40] == 7).all() and (out[20:] == 0).all()
    grey = np.full((3, 100), 9, np.uint8)  # a 2-D image: one row after resizing to 40
    out, info = Letterbox(40).one(grey)
    assert out.shape == (40, 40) and (out[:1] == 9).all() and (out[1:] == 0).all()
    assert info["scale"] == 0.4
    tall = np.full((100, 3, 3), 5, np.uint8)  # one column after resizing to 40
    out, _ = Letterbox(40).one(tall)
    assert (out[:, :1] == 5).all() and (out[:, 1:] == 0).all()
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(Letterbox(4).one(same)[0], same)


def test_letterbox_refuses_what_resizes_to_nothing():
    with pytest.raises(ImageError, match=r"resizing the longer side to 10, got 100x1") as e:
        Letterbox(10).one(np.zeros((1, 100, 3), np.uint8))
    assert e.value.reason == "unusable" and e.value.where == "image"


def test_letterbox_batch_and_bytes():
    a, b = np.full((8, 4, 3), 1, np.uint8), np.full((4, 4, 3), 2, np.uint8)
    outs, infos = Letterbox(8)([a, b])
    assert [o.shape for o in outs] == [(8, 8, 3), (8, 8, 3)]
    assert [i["orig_size"] for i in infos] == [(8, 4), (4, 4)]
    ok, png = cv2.imencode(".png", np.full((6, 3, 3), 200, np.uint8))
    out, info = Letterbox(12).prepare(png.tobytes())
    assert info == {"orig_size": (6, 3), "scale": 2.0} and (out[:12, :6] == 200).all()
    assert (out[:, 6:] == 0).all()
    from vision.data.io import DecodeLimits

    with pytest.raises(ImageError) as e:
        Letterbox(12).prepare(png.tobytes(), DecodeLimits(max_bytes=10))
    assert e.value.reason == "too_large"


# ---- vision.data.sample ---------------------------------------------------------------------


def test_sample_defaults_and_areas(tmp_path):
    s = Sample(1, tmp_path / "a.png", 10, 5)
    assert s.boxes.shape == (0, 4) and s.boxes.dtype == np.float32
    assert s.labels.shape == (0,) and s.labels.dtype == np.int64
    for f in (s.difficult, s.crowd, s.truncated):
        assert f.shape == (0,) and f.dtype == bool
    assert s.image is None and s.mask is None and s.mask_path is None
    assert s.ignore_index == IGNORE_INDEX == 255 and s.num_objects == 0
    s.boxes = np.array([[1, 2, 4, 8], [5, 5, 3, 9], [0, 4, 2, 1]], np.float32)
    s.labels = np.array([0, 1, 2])
    assert s.num_objects == 3 and isinstance(s.num_objects, int)
    assert s.areas().tolist() == [18.0, 0.0, 0.0]


def test_mask_classes():
    assert mask_classes(["a", "b"]) == ["background", "a", "b"]
    assert mask_classes(["a", "b"], background=False) == ["a", "b"]


def test_with_image_decodes_a_copy(tmp_path):
    rotated = np.zeros((2, 4, 3), np.uint8)
    from PIL import Image

    im = Image.fromarray(rotated)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    im.save(tmp_path / "a.jpg", exif=exif)
    rec = Sample("a", tmp_path / "a.jpg", 4, 2)
    out = with_image(rec)
    assert out is not rec and rec.image is None and out.image_id == "a"
    assert out.image.shape == (4, 2, 3)
    assert with_image(rec, exif=False).image.shape == (2, 4, 3)


# ---- vision.data.convert --------------------------------------------------------------------


class _Split:
    names = ["cat", "dog"]

    def __init__(self, root: Path):
        self.samples = [
            Sample(
                "2007_01",
                root / "x" / "a.jpg",
                20,
                10,
                boxes=np.array([[1, 2, 5, 9], [0, 0, 3, 3]], np.float32),
                labels=np.array([1, 0]),
                difficult=np.array([False, True]),
            ),
            Sample("2007_02", root / "b.jpg", 8, 6),
        ]


def test_voc_to_coco_layout_and_file(tmp_path):
    out = tmp_path / "new" / "deeper" / "coco.json"
    data = voc_to_coco(_Split(tmp_path), out)
    assert voc_to_coco(_Split(tmp_path), out) == data  # written again over the first
    assert data["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 20, "height": 10, "voc_id": "2007_01"},
        {"id": 2, "file_name": "b.jpg", "width": 8, "height": 6, "voc_id": "2007_02"},
    ]
    assert data["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 4.0, 7.0], "area": 28.0,
         "iscrowd": 0, "difficult": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 3.0, 3.0], "area": 9.0,
         "iscrowd": 0, "difficult": 1},
    ]  # fmt: skip
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert json.loads(out.read_text()) == data
    assert voc_to_coco(_Split(tmp_path)) == data and len(list(tmp_path.iterdir())) == 1
    broken = _Split(tmp_path)
    broken.samples[0].labels = np.array([1])  # two boxes, one label: never dropped silently
    with pytest.raises(ValueError, match="zip"):
        voc_to_coco(broken)


# ---- vision.data.build ----------------------------------------------------------------------


def _config(tmp_path: Path, **raw):
    base = {"name": "tiny", "format": "voc", "root": str(tmp_path), "names": ["cat", "dog"]}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump({**base, **raw}))
    return p


def test_build_dataset_voc_from_a_path_and_the_config_strictness(tmp_path):
    write_voc(tmp_path, {"a": obj("cat"), "b": obj("cat", box=(5, 5, 5, 5))})
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\nb\n")
    p = _config(tmp_path, detection={"train": "ImageSets/Main/train.txt"})
    with pytest.raises(DataError, match="b.xml"):
        build_dataset(p, "detection", "train")
    lenient = _config(tmp_path, detection={"train": "ImageSets/Main/train.txt"}, skip_invalid=True)
    ds = build_dataset(lenient, "detection", "train")
    assert len(ds) == 2 and ds.skips.total == 1  # the point box skipped, counted
    with pytest.raises(DataError):
        build_dataset(lenient, "detection", "train", strict=True)
    assert build_dataset(p, "detection", "train", strict=False).skips.total == 1


def test_build_dataset_check_bounds_goes_to_the_reader(tmp_path):
    # a: past the 20-pixel width; c: not in the split
    write_voc(tmp_path, {"a": obj("cat", box=(2, 3, 30, 8)), "c": obj("dog")})
    (tmp_path / "ImageSets/Main/val.txt").write_text("a\n")
    p = _config(tmp_path, detection={"val": "ImageSets/Main/val.txt"})
    with pytest.raises(DataError, match="a.xml"):
        build_dataset(p, "detection", "val")
    assert len(build_dataset(p, "detection", "val", check_bounds=False)) == 1


def test_build_dataset_errors_name_split_and_root(tmp_path):
    p = _config(tmp_path, detection={"val": "v.txt"})
    with pytest.raises(
        DataError, match=r"tiny.yaml detection: expected a split in \['val'\], got 'test'"
    ):
        build_dataset(p, "detection", "test")
    cfg = parse_config({**yaml.safe_load(p.read_text()), "root": str(tmp_path / "nowhere")})
    with pytest.raises(
        DataError,
        match=r"dataset tiny: expected its data under .*nowhere, got no such folder \(see data",
    ):
        build_dataset(cfg, "detection", "val")
    cfg.source = None
    cfg.root = tmp_path
    with pytest.raises(DataError, match=r"^tiny detection: expected a split in"):
        build_dataset(cfg, "detection", "test")


def _coco_files(tmp_path: Path, anns: list[dict]) -> dict:
    from PIL import Image

    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "img" / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    return {"images": "img", "annotations": "ann.json"}


def _ann(i: int, bbox: list, cat: int = 2) -> dict:
    x, y, w, h = bbox
    poly = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, "area": w * h,
            "iscrowd": 0, "segmentation": poly}  # fmt: skip


def test_build_dataset_coco_names_masks_and_strictness(tmp_path):
    split = _coco_files(tmp_path, [_ann(1, [1, 1, 3, 3])])
    other = _config(tmp_path, format="coco", names=["dog", "cat"], detection={"val": split})
    with pytest.raises(DataError, match="the config's class names"):  # checked against the JSON
        build_dataset(other, "detection", "val")
    p = _config(tmp_path, format="coco", detection={"val": split}, segmentation={"val": split})
    det = build_dataset(p, "detection", "val")
    assert len(det) == 1 and det[0].labels.tolist() == [1] and det[0].mask is None
    seg = build_dataset(p, "segmentation", "val")
    assert seg[0].mask is not None and int(seg[0].mask.max()) == 2
    split = _coco_files(tmp_path, [_ann(1, [1, 1, 3, 3]), _ann(2, [2, 2, 0, 0])])
    p = _config(tmp_path, format="coco", names=["cat", "dog"], detection={"val": split})
    with pytest.raises(DataError):
        build_dataset(p, "detection", "val")
    lenient = _config(tmp_path, format="coco", names=["cat", "dog"], detection={"val": split},
                      skip_invalid=True)  # fmt: skip
    ds = build_dataset(lenient, "detection", "val")
    assert ds.skips.total == 1 and ds[0].labels.tolist() == [1]
    with pytest.raises(DataError):
        build_dataset(lenient, "detection", "val", strict=True)
    split = _coco_files(tmp_path, [_ann(1, [4, 1, 9, 3])])  # past the 8-pixel width
    p = _config(tmp_path, format="coco", names=["cat", "dog"], detection={"val": split})
    with pytest.raises(DataError):
        build_dataset(p, "detection", "val")
    assert len(build_dataset(p, "detection", "val", check_bounds=False)[0].labels) == 1


def test_build_dataset_coco_split_must_name_images_and_annotations(tmp_path):
    bad = _config(tmp_path, format="coco", detection={"val": {"images": "img"}})
    with pytest.raises(
        DataError,
        match=r"tiny.yaml detection.val: expected \{images: DIR, annotations: JSON\}, "
        r"got \{'images': 'img'\}",
    ):
        build_dataset(bad, "detection", "val")
    with pytest.raises(DataError, match="annotations: JSON}, got 'x'"):
        build_dataset(_config(tmp_path, format="coco", detection={"val": "x"}), "detection", "val")


def test_build_dataset_voc_segmentation(tmp_path):
    mask = np.zeros((10, 20), np.uint8)
    mask[2:5, 3:9] = 2
    write_voc(tmp_path, {"a": obj("dog")}, mask=mask)
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/val.txt").write_text("a\n")
    p = _config(tmp_path, segmentation={"val": "ImageSets/Segmentation/val.txt"})
    ds = build_dataset(p, "segmentation", "val")
    assert len(ds) == 1 and ds.task == "segmentation" and np.array_equal(ds[0].mask, mask)


def test_build_dataset_pairs_void_background_and_strictness(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "img" / "a.png")
    label = np.full((6, 8), 1, np.uint8)
    label[0, 0] = 9
    Image.fromarray(label).save(tmp_path / "a_L.png")
    (tmp_path / "pairs.txt").write_text("img/a.png a_L.png\n")
    pairs = _config(tmp_path, format="pairs", segmentation={"val": "pairs.txt"}, background=False,
                    void=9)  # fmt: skip
    ds = build_dataset(pairs, "segmentation", "val")
    assert len(ds) == 1 and ds.background is False and ds.void == 9
    assert ds[0].mask[0, 0] == IGNORE_INDEX and int(ds[0].mask[1:].max()) == 1
    (tmp_path / "pairs2.txt").write_text("img/a.png a_L.png\nimg/gone.png a_L.png\n")
    two = _config(tmp_path, format="pairs", segmentation={"val": "pairs2.txt"}, void=9)
    with pytest.raises(DataError, match="gone.png"):
        build_dataset(two, "segmentation", "val")
    assert build_dataset(two, "segmentation", "val", strict=False).skips.total == 1
    assert build_dataset(two, "segmentation", "val", strict=False).background is True
