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
