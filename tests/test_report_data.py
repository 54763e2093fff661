"""What the report figures are drawn from, against hand-computed cases: the detection confusion
matrix (background row and column, greedy IoU matching, difficult boxes), the F1–confidence
points, COCO's per-class precision–recall curves, each image's own quality, and the choice of
samples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from eval.coco import coco_evaluate
from eval.confusion import detection_confusion, image_confusion
from eval.prf import f1_at
from eval.samples import Quality, detection_quality, segmentation_quality
from eval.voc import ClassMatches

A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]


def test_confusion_counts_right_wrong_missed_and_false_alarms():
    gts = {1: {"boxes": np.array([A, B, C], float), "labels": np.array([0, 1, 1]),
               "difficult": np.zeros(3, bool)}}  # fmt: skip
    dets = [
        {"image_id": 1, "label": 0, "box": A, "score": 0.9},  # right
        {"image_id": 1, "label": 0, "box": B, "score": 0.8},  # a 1 taken for a 0
        {"image_id": 1, "label": 1, "box": [50, 50, 60, 60], "score": 0.7},  # false alarm
        {"image_id": 1, "label": 1, "box": A, "score": 0.2},  # below the confidence: not seen
    ]
    out = detection_confusion(gts, dets, ["cat", "dog"], iou=0.5, conf=0.25)
    assert out["labels"] == ["cat", "dog", "background"]
    # rows: true cat, dog, background; columns: predicted cat, dog, background (C missed)
    assert out["matrix"] == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    assert out["settings"] == {"iou": 0.5, "conf": 0.25}


def test_confusion_matches_the_highest_iou_first_and_skips_difficult_boxes():
    near, far = [0, 0, 10, 9], [0, 0, 10, 6]  # IoU 0.9 and 0.6 with A
    m = image_confusion(np.array([A], float), np.array([0]), np.array([far, near], float),
                        np.array([1, 0]), 2, 0.5)  # fmt: skip
    assert m.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]  # near matched; far a false alarm
    hard = image_confusion(np.array([A, B], float), np.array([0, 1]), np.array([A], float),
                           np.array([1]), 2, 0.5, difficult=np.array([True, True]))  # fmt: skip
    assert hard.sum() == 0  # matched to a difficult box: dropped; B unmatched: not missed
    assert image_confusion(np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 4)),
                           np.zeros(0, int), 2).sum() == 0  # fmt: skip


def test_f1_at_each_confidence():
    m = ClassMatches(np.array([0.9, 0.8, 0.3]), np.array([True, False, True]), npos=2)
    got = f1_at([m], np.array([0.0, 0.3, 0.5, 0.85, 0.95]))
    assert got == pytest.approx([0.8, 0.8, 0.5, 2 / 3, 0.0])
    assert f1_at([ClassMatches(np.zeros(0), np.zeros(0, bool), 0)], np.array([0.5])) == [None]


def test_coco_pr_curves_per_class_at_iou_50_and_50_95():
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [50, 50, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "exact"}, {"id": 2, "name": "loose"}],
    }
    dt = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 6], "score": 0.8},  # IoU 0.6
    ]
    for engine in ("faster", "pycocotools"):
        curves = coco_evaluate(gt, dt, engine=engine)["pr_curves"]
        assert len(curves["recall"]) == 101 and curves["recall"][-1] == 1.0
        assert curves["iou50"]["exact"] == pytest.approx([1.0] * 101)
        assert curves["iou50_95"]["exact"] == pytest.approx([1.0] * 101)
        assert curves["iou50"]["loose"] == pytest.approx([1.0] * 101)
        # found at IoU .50, .55 and .60 of the ten thresholds: 3/10 at every recall point
        assert curves["iou50_95"]["loose"] == pytest.approx([0.3] * 101)


def test_coco_pr_curves_read_all_areas_at_the_largest_max_dets_value_by_value():
    """``pr_curves`` on arrays whose every cell differs: each class's curve is its column at
    area "all" and the last maxDets; the .50:.95 curve averages the defined thresholds only;
    a cell undefined at every threshold is None; no 0.5 threshold, no IoU-50 curves."""
    from eval.coco import pr_curves

    rng = np.random.default_rng(3)
    p = rng.random((3, 4, 2, 4, 3))  # (T, R, K, A, M)
    p[0, 1, 0, 0, 2] = -1  # undefined at IoU .5 only
    p[:, 2, 1, 0, 2] = -1  # undefined at every threshold
    p[1:, 3, 0, 0, 2] = -1  # defined at one threshold: its value is the mean
    p[0, 0, 1, 0, 2] = 0.0  # a precision of 0 is a value, not undefined
    thrs, rec = np.array([0.5, 0.75, 0.9]), np.linspace(0, 1, 4)
    got = pr_curves(p, thrs, rec, ["a", "b"])
    assert got["recall"] == rec.tolist() and list(got["iou50"]) == ["a", "b"]
    for k, name in enumerate("ab"):
        col = p[:, :, k, 0, 2]
        want50 = [None if v < 0 else v for v in col[0]]
        want = [None if (c < 0).all() else c[c >= 0].mean() for c in col.T]
        assert got["iou50"][name] == pytest.approx(want50, abs=1e-15)
        assert got["iou50_95"][name] == pytest.approx(want, abs=1e-15)
        assert all(type(v) is float for v in got["iou50_95"][name] if v is not None)
    assert got["iou50"]["a"][1] is None and got["iou50_95"]["a"][1] is not None
    assert got["iou50_95"]["b"][2] is None and got["iou50"]["b"][0] == 0.0
    assert got["iou50_95"]["a"][3] == p[0, 3, 0, 0, 2]
    no50 = pr_curves(p, np.array([0.55, 0.75, 0.9]), rec, ["a", "b"])
    assert no50["iou50"] == {} and no50["iou50_95"] == got["iou50_95"]
    at75 = pr_curves(p, np.array([0.75, 0.5, 0.9]), rec, ["a", "b"])  # 0.5 found where it is
    want = [None if v < 0 else v for v in p[1, :, 1, 0, 2]]
    assert at75["iou50"]["b"] == pytest.approx(want, abs=1e-15) and want[2] is None


def _sample(boxes, labels, mask=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return SimpleNamespace(boxes=boxes, labels=np.asarray(labels), mask=mask,
                           difficult=np.zeros(len(boxes), bool))  # fmt: skip


def test_each_image_scored_on_its_own():
    s = _sample([A, B], [0, 1])
    out = {"boxes": np.array([A, C], float), "scores": np.array([0.9, 0.8]),
           "labels": np.array([0, 1])}  # fmt: skip
    # pooled: TP at 0.9 (recall 1/2, precision 1), FP at 0.8 → all-point AP 0.5
    assert detection_quality(s, out, 2) == pytest.approx(0.5)
    none = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    assert detection_quality(s, none, 2) == 0.0
    empty = _sample(np.zeros((0, 4)), [])
    assert detection_quality(empty, none, 2) == 1.0
    assert detection_quality(empty, out, 2) == 0.0  # detections where there is nothing
    gt = np.array([[0, 0], [1, 1], [255, 255]])
    pred = {"mask": np.array([[0, 1], [1, 1], [0, 0]])}
    # void row left out; class 0: 1/2, class 1: 2/3
    assert segmentation_quality(_sample([], [], gt), pred) == pytest.approx((0.5 + 2 / 3) / 2)


def test_samples_are_the_worst_then_typical_ones():
    q = Quality("segmentation", 2)
    q.values = [0.9, 0.1, 0.52, 0.7, 0.3, 0.6, 0.55]  # median 0.55; 0.52 next nearest
    chosen = q.choose(worst=2, typical=2)
    assert chosen[:2] == [(1, "worst", 0.1), (4, "worst", 0.3)]
    assert [c[0] for c in chosen[2:]] == [2, 6] and {c[1] for c in chosen[2:]} == {"typical"}


def test_training_curves_and_tensorboard_hold_the_same_values(tiny_checkpoints):
    """The report's training curves read the run's metrics.jsonl; TensorBoard's epoch/ scalars
    were written from the same rows, value for value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eval.bench import training_rows

    run = tiny_checkpoints["detection"].parent
    rows = training_rows(tiny_checkpoints["detection"])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    for key in ("train_loss", "lr", "coco/AP"):
        logged = {e.step: e.value for e in events.Scalars(f"epoch/{key}")}
        assert logged == pytest.approx({r["epoch"]: r[key] for r in rows if key in r}), key
