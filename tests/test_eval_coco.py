"""COCO scoring on hand-made ground truth: empty result sets against pycocotools, the ground truth
of a reader, id mapping, instance masks, and every error about bad detections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.coco import coco_evaluate
from eval.metrics import build_evaluator

from .test_eval_metrics import INPUTS, NAMES, OUTPUTS, _reader


def _gt_small_and_large() -> dict:
    """A small and a large cat, a dog that is only a crowd region, no medium object; bird has
    no annotation. Areas on the range ends count in both ranges, as in pycocotools."""
    anns = [
        (1, [0, 0, 32, 32], 1, 0),  # area 1024: small and medium's lower end
        (1, [0, 40, 100, 100], 1, 0),
        (2, [0, 0, 50, 50], 2, 1),
    ]
    return {
        "images": [{"id": i, "width": 200, "height": 200} for i in (1, 2, 3)],
        "annotations": [
            {
                "id": n,
                "image_id": i,
                "bbox": b,
                "area": b[2] * b[3],
                "category_id": c,
                "iscrowd": crowd,
            }  # fmt: skip
            for n, (i, b, c, crowd) in enumerate(anns, 1)
        ],
        "categories": [
            {"id": 1, "name": "cat"},
            {"id": 2, "name": "dog"},
            {"id": 3, "name": "bird"},
        ],
    }


@pytest.mark.parametrize("max_dets", [None, [1, 5, 20]])
@pytest.mark.parametrize("medium", [False, True])
def test_no_detections_equal_pycocotools_with_one_harmless_detection(max_dets, medium):
    """Zero detections cannot go through the COCO API; their stats must equal what it reports
    for one detection that can match nothing (a bird where no bird is: 'bird' has no ground
    truth, so its class is skipped), with -1 as NaN."""
    gt = _gt_small_and_large()
    if not medium:  # 1024 is on the small/medium boundary: move it inside "small"
        gt["annotations"][0]["bbox"], gt["annotations"][0]["area"] = [0, 0, 30, 30], 900
    empty = coco_evaluate(gt, [], "bbox", max_dets=max_dets)
    one = [{"image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.5}]
    ref = coco_evaluate(gt, one, "bbox", engine="pycocotools", max_dets=max_dets)
    stats = [k for k in ref if k not in ("per_class", "protocol", "pr_curves")]
    assert stats == [k for k in empty if k not in ("per_class", "protocol", "pr_curves")]
    for k in stats:
        assert (math.isnan(empty[k]) and math.isnan(ref[k])) or empty[k] == ref[k], k
    assert math.isnan(empty["APm"]) != medium
    assert empty["AP"] == 0.0 and empty["APs"] == 0.0 and empty["APl"] == 0.0
    assert empty["per_class"]["cat"] == 0.0
    assert math.isnan(empty["per_class"]["dog"]) and math.isnan(empty["per_class"]["bird"])
    assert math.isnan(ref["per_class"]["dog"]) and ref["per_class"]["cat"] == 0.0


def test_coco_ground_truth_of_a_reader_field_by_field():
    from eval.coco import coco_gt_from_dataset

    r = _reader()
    r.samples[1].crowd = np.array([True])
    gt = coco_gt_from_dataset(r, NAMES)
    assert gt == {
        "images": [
            {"id": 1, "width": 100, "height": 100, "file_name": "1.jpg"},
            {"id": 2, "width": 100, "height": 100, "file_name": "2.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 40.0, 40.0],
             "area": 1600.0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50.0, 50.0, 40.0, 40.0],
             "area": 1600.0, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0],
             "area": 400.0, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }  # fmt: skip
    r.samples[0].image_id, r.samples[1].image_id = "a", "b"  # names: numbered from 1
    r.samples[0].boxes = np.array([[10, 20, 40, 30]], np.float32)
    r.samples[0].labels = np.array([1])
    gt = coco_gt_from_dataset(r, NAMES)
    assert [i["id"] for i in gt["images"]] == [1, 2]
    assert gt["annotations"][0]["bbox"] == [10.0, 20.0, 30.0, 10.0]
    assert gt["annotations"][0]["area"] == 300.0 and gt["annotations"][0]["category_id"] == 2


def test_coco_evaluator_maps_reader_ids_and_reads_lists():
    from eval.coco import COCOEvaluator

    r = _reader()
    r.samples[0].image_id, r.samples[1].image_id = "x", "y"
    ev = COCOEvaluator.from_dataset(r, NAMES)
    assert ev.primary == "coco/AP"
    ev.process([{"image_id": "x"}, {"image_id": "y"}], OUTPUTS)  # lists, not tensors
    got = ev.evaluate()["coco"]
    assert got["AP"] == pytest.approx((67 + 34 * 0.75) / 101, abs=1e-12)
    ev.reset()
    ev.process([{"image_id": "x"}], [{"boxes": [], "scores": [], "labels": []}])
    assert ev.evaluate()["coco"]["AP"] == 0.0  # nothing found: 0, not an error


def test_bad_detections_are_named_exactly():
    from vision.errors import DataError

    gt = _gt_small_and_large()
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    no_box, poly = {k: v for k, v in good.items() if k != "bbox"}, [[0, 0, 5, 0, 5, 5]]
    cases = [
        ({"not": "a list"}, "bbox", "predictions: expected a JSON list of detections, got dict"),
        ([good, 7], "bbox", "predictions[1]: expected a detection object, got int"),
        ([{k: v for k, v in good.items() if k != "score"}], "bbox",
         "predictions[0]: expected field 'score', got fields ['bbox', 'category_id', 'image_id']"),
        ([{k: v for k, v in good.items() if k != "bbox"}], "bbox",
         "predictions[0]: expected field 'bbox', got fields ['category_id', 'image_id', 'score']"),
        ([good], "segm", "predictions[0]: expected field 'segmentation', got fields "
                         "['bbox', 'category_id', 'image_id', 'score']"),
        ([good, {**good, "image_id": 9}], "bbox",
         "predictions[1] image_id: expected an image id of the ground truth, got 9"),
        ([{**good, "category_id": "1"}], "bbox",
         "predictions[0] category_id: expected a category id of the ground truth [1, 2, 3], "
         "got '1'"),
        ([good, {**good, "bbox": [1, 2, 3]}], "bbox",
         "predictions[1] bbox: expected [x, y, width, height], finite numbers, got [1, 2, 3]"),
        ([{**good, "bbox": [0, 0, float("nan"), 5]}], "bbox",
         "predictions[0] bbox: expected [x, y, width, height], finite numbers, got [0, 0, nan, 5]"),
        ([{**good, "score": True}], "bbox",
         "predictions[0] score: expected a finite number, got True"),
        # mask results read a box wherever the first one has a box, as loadRes does
        ([{**good, "segmentation": poly}, {**no_box, "segmentation": poly}], "segm",
         "predictions[1]: expected field 'bbox' (the first detection has one), got fields "
         "['category_id', 'image_id', 'score', 'segmentation']"),
        ([{**no_box, "segmentation": poly}, {**good, "bbox": "x", "segmentation": poly},
          {**no_box, "segmentation": poly, "image_id": 9}], "segm",
         "predictions[2] image_id: expected an image id of the ground truth, got 9"),
    ]  # fmt: skip
    for engine in ("numpy", "faster", "pycocotools"):  # each engine reads them itself
        for dt, iou_type, message in cases:
            with pytest.raises(DataError) as e:
                coco_evaluate(gt, dt, iou_type, engine)
            assert str(e.value) == message, engine


def test_a_results_file_that_is_no_list_is_named(tmp_path):
    from vision.errors import DataError

    path = tmp_path / "dt.json"
    path.write_text('{"image_id": 1}')
    for engine in ("numpy", "faster", "pycocotools"):
        with pytest.raises(DataError) as e:
            coco_evaluate(_gt_small_and_large(), path, "bbox", engine)
        assert str(e.value) == f"{path}: expected a JSON list of detections, got dict", engine


def _box_masks(boxes, size=100) -> np.ndarray:
    out = np.zeros((len(boxes), size, size), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, int).reshape(-1, 4)):
        out[k, y1:y2, x1:x2] = 1
    return out


def test_instance_masks_are_scored_as_coco_segm_when_asked():
    """Masks that fill their boxes: the mask AP equals the box AP, key by key."""
    from vision.errors import DataError

    r = _reader()
    r.instance_masks = lambda i: _box_masks(r.samples[i].boxes)
    ev = build_evaluator("detection", r, NAMES, keys=("coco", "coco_segm"))
    outs = [dict(o, masks=_box_masks(o["boxes"])) for o in OUTPUTS]
    ev.process(INPUTS, outs)
    res = ev.evaluate()
    assert set(res) == {"coco", "coco_segm"} and ev.primary == "coco/AP"
    assert res["coco_segm"]["AP"] == res["coco"]["AP"] == pytest.approx(92.5 / 101, abs=1e-12)
    assert res["coco_segm"]["protocol"].startswith("COCO segm AP")
    boxes_only = build_evaluator("detection", r, NAMES, keys=("coco",))
    boxes_only.process(INPUTS, outs)  # masks given but not asked for: ignored
    assert set(boxes_only.evaluate()) == {"coco"}
    no_masks = build_evaluator("detection", r, NAMES, keys=("coco", "coco_segm"))
    no_masks.process(INPUTS, OUTPUTS)  # masks asked for, none given: named, not a KeyError
    with pytest.raises(DataError) as e:
        no_masks.evaluate()
    assert str(e.value).startswith("predictions[0]: expected field 'segmentation', got fields")


def test_empty_results_protocol_and_annotations_without_a_crowd_flag():
    gt = _gt_small_and_large()
    for a in gt["annotations"][:2]:
        del a["iscrowd"]  # not a crowd when the flag is absent
    empty = coco_evaluate(gt, [], "bbox")
    assert empty["AP"] == 0.0 and empty["per_class"]["cat"] == 0.0
    assert empty["protocol"] == "COCO AP@[.50:.05:.95], 101-point (no detections)"
    assert empty["pr_curves"] == {"recall": [], "iou50": {}, "iou50_95": {}}  # no curve drawn
    for engine in ("faster", "pycocotools"):  # the same answer, not the engine's error
        got = coco_evaluate(gt, [], "bbox", engine, max_dets=[1, 5, 20])
        assert got["pr_curves"] == empty["pr_curves"], engine
        assert [k for k in got if k.startswith("AR")] == ["AR1", "AR5", "AR20", "ARs", "ARm", "ARl"]
        assert got["AP"] == 0.0 and got["per_class"]["cat"] == 0.0, engine


def test_coco_evaluator_options_own_ids_and_duplicate_detections():
    """A ground-truth dict with its own integer ids (no reader, no id map); the engine and
    maxDets reach the protocol; a second detection of an already matched object is a false
    positive whichever detection is listed first (ids of results start at 1: pycocotools
    reads a matched id 0 as unmatched)."""
    from eval.coco import COCOEvaluator, coco_gt_from_dataset

    gt = _gt_small_and_large()
    box = [[0.0, 40.0, 100.0, 140.0]]  # the large cat of image 1, x1y1x2y2
    twice = [{"boxes": box * 2, "scores": [0.9, 0.8], "labels": [0, 0]}]
    want = None
    for engine in ("numpy", "faster", "pycocotools"):
        ev = COCOEvaluator(gt, engine=engine, max_dets=[1, 5, 20])
        ev.process([{"image_id": 1}], twice)
        got = ev.evaluate()["coco"]
        assert got["protocol"].endswith(f"maxDets=[1, 5, 20], engine={engine}")
        # one of two cats found at precision 1 (the duplicate comes after full recall of it)
        assert got["per_class"]["cat"] == pytest.approx(51 / 101, abs=1e-12)
        want = got["AP"] if want is None else want
        assert got["AP"] == pytest.approx(want, abs=1e-12)
    r = _reader()
    r.samples[0].image_id, r.samples[1].image_id = 5, 9
    assert [im["id"] for im in coco_gt_from_dataset(r, NAMES)["images"]] == [5, 9]


def test_coco_files_inputs_left_untouched_quiet_and_restricted(tmp_path, capsys):
    """Detections and ground truth passed as objects are not modified (the engines add keys:
    they get copies); nothing is printed; ``img_ids`` restricts the images scored; per-class AP
    is read at the largest maxDets; bad files and options are named exactly."""
    import copy
    import json

    from eval.coco import coco_gt_from_dataset, summarize
    from vision.errors import DataError

    gt = _gt_small_and_large()
    gt["annotations"] += [  # two more cats on image 1: three there
        {"id": 10 + k, "image_id": 1, "bbox": [150, 10 + 40 * k, 30, 30], "area": 900,
         "category_id": 1, "iscrowd": 0} for k in range(2)
    ]  # fmt: skip
    dt = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in
          (([0, 0, 32, 32], 0.9), ([150, 10, 30, 30], 0.8), ([150, 50, 30, 30], 0.7))]  # fmt: skip
    gt0, dt0 = copy.deepcopy(gt), copy.deepcopy(dt)
    full = coco_evaluate(gt, dt, max_dets=[1, 2, 100])
    assert gt == gt0 and dt == dt0 and capsys.readouterr().out == ""
    for engine in ("numpy", "faster", "pycocotools"):
        coco_evaluate(gt, dt, "bbox", engine)
        assert capsys.readouterr().out == "" and gt == gt0 and dt == dt0, engine
    # image 1: 3 of 4 cats (the large one missed), all at maxDets 100, 2 at maxDets 2
    assert full["per_class"]["cat"] == pytest.approx(76 / 101, abs=1e-12)
    for engine in ("numpy", "faster", "pycocotools"):  # image 2 holds only the crowd dog
        only2 = coco_evaluate(gt, dt, "bbox", engine, img_ids=[2])
        assert math.isnan(only2["per_class"]["cat"]) and math.isnan(only2["AP"]), engine
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(dt))
    assert coco_evaluate(gt, str(path))["AP"] == pytest.approx(coco_evaluate(gt, dt)["AP"])

    def error(dt, **kw) -> str:
        with pytest.raises(DataError) as e:
            coco_evaluate(gt, dt, **kw)
        return str(e.value).replace(str(tmp_path), "T")

    assert error(tmp_path / "none.json") == "T/none.json: expected a JSON file, got no such file"
    path.write_text(" \n")
    assert error(path) == "T/dt.json: expected a JSON list of detections, got an empty file"
    path.write_text("[{]")
    assert error(path).startswith("T/dt.json:1:3: expected valid JSON, got ")
    path.write_text(json.dumps([{"image_id": 1}]))
    assert error(path) == ("T/dt.json[0]: expected field 'category_id', got fields ['image_id']")
    assert error(dt, iou_type="keypoints") == "iou_type: expected 'bbox' or 'segm', got 'keypoints'"
    with pytest.raises(ValueError) as e:
        coco_evaluate(gt, dt, engine="detectron2")
    engines = "('numpy', 'faster', 'pycocotools')"
    assert str(e.value) == f"COCO engine: expected one of {engines}, got 'detectron2'"
    odd = summarize(np.ones((2, 101, 1, 4, 3)), np.ones((2, 1, 4, 3)), np.array([0.6, 0.7]),
                    [1, 10, 100])  # fmt: skip
    assert math.isnan(odd["AP50"]) and math.isnan(odd["AP75"]) and odd["AP"] == 1.0
    r = _reader()

    def left_halves(i: int) -> np.ndarray:  # masks smaller than their boxes: area from the mask
        boxes = r.samples[i].boxes
        m = _box_masks(boxes)
        for k, (x1, _, x2, _) in enumerate(np.asarray(boxes, int).reshape(-1, 4)):
            m[k, :, (x1 + x2) // 2 :] = 0
        return m

    r.instance_masks = left_halves
    segm = coco_gt_from_dataset(r, NAMES, masks=True)
    boxes = coco_gt_from_dataset(r, NAMES)
    assert [a["area"] for a in boxes["annotations"]] == [1600.0, 1600.0, 400.0]
    areas = [float(m.sum()) for i in range(len(r.samples)) for m in left_halves(i)]
    assert [a["area"] for a in segm["annotations"]] == areas == [800.0, 800.0, 200.0]
