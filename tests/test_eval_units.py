"""Evaluator protocol pieces: composite, IoU primitives, COCOEvaluator on perfect outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.base import Evaluators, nan_to_none
from eval.coco import COCOEvaluator
from eval.iou import box_iou, mask_iou
from eval.seg import SegEvaluator
from vision.data.build import build_dataset


def test_box_and_mask_iou():
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou.numpy(), [[50 / 150, 0.0]])
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b = np.zeros((2, 4, 4), bool)
    b[0, 1:3] = True
    np.testing.assert_allclose(mask_iou(a, b), [[4 / 12, 0.0]])


def test_composite_refuses_duplicate_tasks():
    class Fake(SegEvaluator):
        pass

    both = Evaluators([SegEvaluator(2), Fake(2)])
    both.process([{"mask": np.zeros((2, 2), int)}], [{"mask": np.zeros((2, 2), int)}])
    with pytest.raises(ValueError, match="seg"):
        both.evaluate()
    assert nan_to_none({"a": [math.nan, 1.0]}) == {"a": [None, 1.0]}


@pytest.mark.parametrize("iou_types", [("bbox",), ("bbox", "segm")])
def test_coco_evaluator_on_perfect_outputs(shapes_cfg, iou_types):
    reader = build_dataset(
        shapes_cfg.__class__(
            **{
                **shapes_cfg.__dict__,
                "format": "coco",
                "root": shapes_cfg.root.parent / "COCO",
                "detection": shapes_cfg.extra["coco"],
                "segmentation": {},
            }
        ),
        "detection",
        "val",
    )
    ev = COCOEvaluator.from_dataset(reader, shapes_cfg.names, iou_types=iou_types)
    for i, s in enumerate(reader.samples):
        out = {"boxes": s.boxes, "scores": np.ones(s.num_objects), "labels": s.labels}
        if "segm" in iou_types:
            out["masks"] = reader.instance_masks(i).astype(bool)
        ev.process([{"image_id": s.image_id}], [out])
    res = ev.evaluate()
    assert set(res) == {{"bbox": "coco", "segm": "coco_segm"}[t] for t in iou_types}
    for key in res:
        assert res[key]["AP"] == pytest.approx(1.0) and res[key]["AP50"] == pytest.approx(1.0)


def test_mask_iou_reads_any_nonzero_as_foreground_and_empty_pairs_as_zero():
    from eval.iou import mask_iou

    a = np.zeros((1, 3, 3), np.uint8)
    a[0, 0, 0] = 255  # a one-pixel mask stored as 0/255
    b = np.zeros((3, 3, 3), np.uint8)
    b[0, 0, 0] = 1
    b[1, 0, :2] = 7
    np.testing.assert_array_equal(mask_iou(a, b), [[1.0, 0.5, 0.0]])
    empty = mask_iou(np.zeros((40, 2, 2), bool), np.zeros((40, 2, 2), bool))
    assert empty.shape == (40, 40) and not empty.any()


def test_best_f1_thresholds_sit_after_whole_ties_and_outcomes_cover_every_class():
    """Scores 0.9 (FP), 0.5 (TP), 0.5 (FP), one positive: a threshold can only fall after
    both 0.5s (F1 2/4 = 0.5), never between them (which would give 2/3)."""
    from eval.prf import best_f1, detection_outcomes, prf_from_matches
    from eval.voc import ClassMatches

    m = ClassMatches(np.array([0.9, 0.5, 0.5]), np.array([False, True, False]), 1)
    assert best_f1([m]) == {"conf": 0.5, "f1": 0.5, "precision": 1 / 3, "recall": 1.0}
    assert math.isnan(best_f1([])["f1"])
    gts = {"i": {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 1]}}
    dets = [{"image_id": "i", "label": k, "box": b, "score": s}
            for k, b, s in ((0, [0, 0, 10, 10], 0.9), (1, [20, 20, 30, 30], 0.6))]  # fmt: skip
    assert detection_outcomes(gts, dets, ["a", "b"]) == [(0.9, True), (0.6, True)]
    perfect = ClassMatches(np.array([0.6]), np.array([True]), 1)
    r = prf_from_matches([perfect], ["a"])  # defaults: confidence 0.5, IoU 0.5, 101 points
    assert r["settings"] == {"conf": 0.5, "iou": 0.5} and r["TP"] == 1
    assert len(r["pr_curves"]["a"]["recall"]) == 101
