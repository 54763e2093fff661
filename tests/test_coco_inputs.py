"""COCO inputs at their edges, on every engine: ground truth without annotations, ids given
three times, detections built from NumPy values, numbers too large for a float, and the exact
messages of a results file that is not JSON."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from eval import coco_columns
from eval.coco import coco_evaluate
from eval.coco_columns import gt_columns
from vision.errors import DataError

ENGINES = ("numpy", "faster", "pycocotools")


def _gt(n_ann: int = 1) -> dict:
    anns = [
        {"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [10 + 30 * k, 10, 20, 20],
         "area": 400, "iscrowd": 0} for k in range(n_ann)
    ]  # fmt: skip
    return {
        "images": [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 50, "height": 50}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


GOOD = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}


@pytest.mark.parametrize("engine", ENGINES)
def test_ground_truth_without_annotations_scores_nothing_as_the_api_does(engine):
    """No annotation at all: every stat is undefined (NaN, pycocotools' -1), whatever was
    detected, and nothing fails on the empty columns."""
    got = coco_evaluate(_gt(0), [GOOD, {**GOOD, "category_id": 2, "image_id": 2}], "bbox", engine)
    stats = [k for k in got if k not in ("per_class", "pr_curves", "protocol")]
    assert len(stats) == 12 and all(math.isnan(got[k]) for k in stats), engine
    assert all(math.isnan(v) for v in got["per_class"].values())
    assert all(v is None for c in got["pr_curves"]["iou50"].values() for v in c)


def test_empty_ground_truth_columns_have_the_engine_s_dtypes():
    cols = gt_columns(_gt(0), "bbox")
    got = {k: getattr(cols, k).dtype for k in ("image_id", "category_id", "area", "crowd", "ids")}
    assert got == {"image_id": np.int64, "category_id": np.int64, "area": np.float64,
                   "crowd": np.bool_, "ids": np.int64}  # fmt: skip
    assert cols.boxes.dtype == np.float64 and cols.boxes.shape == (0, 4)
    plain = gt_columns(_gt(1), "bbox")  # integer areas and boxes read as floats
    assert plain.area.dtype == np.float64 and plain.boxes.dtype == np.float64


def test_an_id_given_three_times_names_its_first_two_annotations():
    """Twenty annotations, id 43 at positions 4, 15 and 17: the first two are named, in file
    order (a stable sort; an unstable one pairs 15 with 17 here)."""
    ids = [16, 27, 20, 8, 43, 34, 51, 4, 52, 57, 10, 2, 44, 23, 24, 43, 11, 43, 30, 18]
    gt = _gt(20)
    for a, i in zip(gt["annotations"], ids, strict=True):
        a["id"] = i
    with pytest.raises(DataError) as e:
        gt_columns(gt, "bbox")
    assert str(e.value) == (
        "ground truth annotations[4] and annotations[15]: expected unique annotation ids "
        "(the COCO API keeps one annotation per id), got id 43 twice"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_numpy_values_are_read_and_a_later_fault_is_named_not_them(engine):
    """Detections built from NumPy arrays (float32 scores, int64 ids, array boxes) score as
    the same Python values do; when another detection is bad, that one is named."""
    box = np.array([10.0, 10.0, 20.0, 20.0], np.float32)
    from_numpy = {"image_id": np.int64(1), "category_id": np.int32(1), "bbox": box,
                  "score": np.float32(0.9)}  # fmt: skip
    want = coco_evaluate(_gt(), [GOOD], "bbox", engine)["AP"]
    assert coco_evaluate(_gt(), [from_numpy], "bbox", engine)["AP"] == want
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), [from_numpy, {**GOOD, "image_id": 7}], "bbox", engine)
    assert (
        str(e.value) == "predictions[1] image_id: expected an image id of the ground truth, got 7"
    )
    tuple_box = {**GOOD, "bbox": (10, 10, 20, 20)}
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), [tuple_box, {**GOOD, "score": "high"}], "bbox", engine)
    assert str(e.value) == "predictions[1] score: expected a finite number, got 'high'"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_number_too_large_for_a_float_is_named(engine):
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), [GOOD, {**GOOD, "score": 10**400}], "bbox", engine)
    assert str(e.value).startswith("predictions[1] score: expected a finite number, got 1000")
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), [{**GOOD, "bbox": [10, 10, 2**1100, 20]}], "bbox", engine)
    assert str(e.value).startswith("predictions[0] bbox: expected [x, y, width, height], finite")


def test_a_results_file_that_is_not_json_says_where_and_why(tmp_path):
    path = tmp_path / "dt.json"
    path.write_text('[{"image_id": 1,\n {]')
    for engine in ENGINES:
        with pytest.raises(DataError) as e:
            coco_evaluate(_gt(), path, "bbox", engine)
        assert str(e.value) == (
            f"{path}:2:2: expected valid JSON, got unexpected character, expected a string key"
        ), engine


@pytest.mark.parametrize("engine", ["numpy", "pycocotools"])
def test_ids_beyond_float_precision_stay_apart(engine, tmp_path):
    """Image and category ids 2**53 and 2**53 + 1 (hashed ids), which a float merges: each
    detection is scored on its own image and class, given as a list or read from a file."""
    big = 2**53
    gt = _gt(1)
    gt["images"] = [{"id": big, "width": 200, "height": 100},
                    {"id": big + 1, "width": 200, "height": 100}]  # fmt: skip
    gt["categories"] = [{"id": big, "name": "a"}, {"id": big + 1, "name": "b"}]
    gt["annotations"][0].update(image_id=big, category_id=big)
    wrong_image = {**GOOD, "image_id": big + 1, "category_id": big}
    wrong_class = {**GOOD, "image_id": big, "category_id": big + 1}
    right = {**GOOD, "image_id": big, "category_id": big}
    assert coco_evaluate(gt, [wrong_image, wrong_class], "bbox", engine)["AP"] == 0.0
    assert coco_evaluate(gt, [right], "bbox", engine)["AP"] == pytest.approx(1.0, abs=1e-12)
    path = tmp_path / "dt.json"
    path.write_text(json.dumps([wrong_image, wrong_class]))
    assert coco_evaluate(gt, path, "bbox", engine)["AP"] == 0.0


@pytest.mark.parametrize("engine", ENGINES)
def test_annotations_without_a_crowd_flag_are_not_crowds(engine, tmp_path):
    gt = _gt(2)
    found = coco_evaluate(gt, [GOOD], "bbox", engine)
    for a in gt["annotations"]:
        del a["iscrowd"]
    unflagged = coco_evaluate(gt, [GOOD], "bbox", engine)
    assert unflagged["AR100"] == found["AR100"] == 0.5  # one of two found: none ignored
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert coco_evaluate(tmp_path / "gt.json", [GOOD], "bbox", engine)["AR100"] == 0.5


def test_a_results_file_names_a_bad_detection_by_its_place_in_the_file(tmp_path, monkeypatch):
    """Read in slices: a detection of an unknown image in a later slice, and a score of the
    wrong type (the typed decoder refuses it), are named by their index in the file."""
    monkeypatch.setattr(coco_columns, "SLICE", 200)
    dets = [{**GOOD, "score": 0.5 + k / 100} for k in range(30)]
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(dets[:25] + [{**GOOD, "image_id": 9}] + dets[25:]))
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), path)
    assert str(e.value) == f"{path}[25] image_id: expected an image id of the ground truth, got 9"
    path.write_text(json.dumps(dets[:21] + [{**GOOD, "score": "high"}] + dets[21:]))
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), path)
    assert str(e.value) == f"{path}[21] score: expected a finite number, got 'high'"
    path.write_text(json.dumps(dets[:22] + [{**GOOD, "bbox": [1, 2, 3]}] + dets[22:]))
    with pytest.raises(DataError) as e:
        coco_evaluate(_gt(), path)
    want = "bbox: expected [x, y, width, height], finite numbers, got [1, 2, 3]"
    assert str(e.value) == f"{path}[22] {want}"


def test_a_compact_results_file_is_read_in_slices_alone(tmp_path, monkeypatch):
    """No space between objects ("},{"): each slice still starts at an object, so the file is
    never read whole."""

    def refuse(*a, **k):
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(coco_columns, "SLICE", 200)
    dets = [{**GOOD, "score": 0.5 + k / 100} for k in range(30)]
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(dets, separators=(",", ":")))
    want = coco_evaluate(_gt(), dets)["AP"]
    monkeypatch.setattr(coco_columns, "read_json", refuse)
    assert coco_evaluate(_gt(), path)["AP"] == want


def test_mask_results_without_boxes_score_alike_on_every_engine():
    """Mask results with no ``bbox`` (areas from the masks): the same stats on each engine;
    the caller's detections are left as they were."""
    from pycocotools import mask as mask_utils

    gt = _gt(2)
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]

    def rle(x: int, w: int) -> dict:
        m = np.zeros((100, 200), np.uint8, order="F")
        m[10:30, x : x + w] = 1
        r = mask_utils.encode(m)
        return {"size": r["size"], "counts": r["counts"].decode()}

    one = {"image_id": 1, "category_id": 1}
    dets = [{**one, "segmentation": rle(10, 20), "score": 0.9},
            {**one, "segmentation": rle(40, 12), "score": 0.8}]  # fmt: skip
    before = copy.deepcopy(dets)
    got = {e: coco_evaluate(gt, dets, "segm", e) for e in ENGINES}
    assert dets == before
    assert got["numpy"]["AP50"] == pytest.approx(1.0, abs=1e-12)  # IoU 12/20 and 1: both found
    assert got["numpy"]["AP"] < 1.0  # the narrow one only up to IoU 0.6
    for e in ("faster", "pycocotools"):
        for k in ("AP", "AP50", "AP75", "AR1", "AR100"):
            assert got[e][k] == pytest.approx(got["numpy"][k], abs=1e-12), (e, k)


def test_an_id_beyond_64_bits_in_a_results_file_is_named(tmp_path):
    path = tmp_path / "dt.json"
    for big in (2**63, 2**64 - 1):  # beyond int64, within what the JSON parser reads as ints
        path.write_text(json.dumps([GOOD, {**GOOD, "image_id": big}]))
        for engine in ENGINES:
            with pytest.raises(DataError) as e:
                coco_evaluate(_gt(), path, "bbox", engine)
            want = f"{path}[1] image_id: expected an image id of the ground truth, got {big}"
            assert str(e.value) == want, engine


def test_faster_refuses_ids_a_double_cannot_hold():
    gt = _gt(1)
    gt["images"][1]["id"] = 2**53 + 1
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, [GOOD], "bbox", "faster")
    assert str(e.value) == (
        "ground truth images: expected ids within ±2**53 for engine 'faster' (it holds ids as "
        f"doubles); fix: engine 'numpy', got id {2**53 + 1}"
    )
    gt["images"][1]["id"] = 2**53  # exact as a double: scored
    assert coco_evaluate(gt, [GOOD], "bbox", "faster")["AP"] == pytest.approx(1.0)
    gt["categories"][1]["id"] = -(2**53) - 1
    with pytest.raises(DataError, match="^ground truth categories: expected ids within"):
        coco_evaluate(gt, [GOOD], "bbox", "faster")
