"""COCO inputs at their edges, on every engine: ground truth without annotations, ids given
three times, detections built from NumPy values, numbers too large for a float, and the exact
messages of a results file that is not JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
