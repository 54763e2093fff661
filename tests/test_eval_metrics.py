"""The metric vocabulary (``eval.metrics``), the devkit evaluator and the evaluator protocol on
hand-made ground truth and outputs whose scores are worked out by hand, and COCO's empty
result set against pycocotools."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval.base import Evaluator, Evaluators, flatten
from eval.devkit import VOCEvaluator
from eval.metrics import KEYS, PRIMARY, build_evaluator, check_label_layout, primary_value
from vision.data.sample import Sample

NAMES = ["cat", "dog"]


def _reader(background: bool = True) -> SimpleNamespace:
    """Two 100×100 images: image 1 holds two cats (one marked difficult on image 2)."""

    def sample(i, boxes, labels, difficult):
        return Sample(
            image_id=i,
            path=Path(f"{i}.jpg"),
            width=100,
            height=100,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            labels=np.asarray(labels, np.int64),
            difficult=np.asarray(difficult, bool),
            crowd=np.zeros(len(labels), bool),
        )

    samples = [
        sample(1, [[0, 0, 40, 40], [50, 50, 90, 90]], [0, 0], [False, False]),
        sample(2, [[10, 10, 30, 30]], [0], [True]),
    ]
    return SimpleNamespace(samples=samples, background=background)


# cat: d1 (0.9) hits GT 1, d2 (0.8) misses, d3 (0.7) hits GT 2, d4 (0.95) sits on the difficult
# GT of image 2 and counts neither way. Sorted: TP, FP, TP over 2 positives:
# precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
#   VOC12 (all points): 1/2 * 1 + 1/2 * 2/3 = 5/6
#   VOC07 (11 points): 6 thresholds (0..0.5) at 1, 5 (0.6..1) at 2/3 -> (6 + 10/3) / 11
#   P/R/F1 at confidence 0.5: TP 2, FP 1, FN 0 -> 2/3, 1, 0.8
INPUTS = [{"image_id": 1}, {"image_id": 2}]
OUTPUTS = [
    {
        "boxes": [[0, 0, 40, 40], [60, 0, 99, 30], [50, 50, 90, 90]],
        "scores": [0.9, 0.8, 0.7],
        "labels": [0, 0, 0],
    },
    {"boxes": [[10, 10, 30, 30]], "scores": [0.95], "labels": [0]},
]


def _tensors(outputs):
    """As a model's outputs; the float ones still attached to a graph, which the evaluators
    must detach (``numpy()`` refuses such tensors)."""
    return [
        {
            k: torch.tensor(v, dtype=torch.float32, requires_grad=True)
            if k != "labels"
            else torch.tensor(v)
            for k, v in o.items()
        }
        for o in outputs
    ]


def test_devkit_scores_worked_out_by_hand():
    ev = VOCEvaluator.from_dataset(_reader(), NAMES)
    ev.process(INPUTS, _tensors(OUTPUTS))
    r = ev.evaluate()
    assert set(r) == {"voc07", "voc12", "prf"}
    assert r["voc12"]["per_class"]["cat"] == pytest.approx(5 / 6, abs=1e-12)
    assert r["voc07"]["per_class"]["cat"] == pytest.approx((6 + 10 / 3) / 11, abs=1e-12)
    assert math.isnan(r["voc12"]["per_class"]["dog"])  # no dog anywhere: undefined, not 0
    assert r["voc12"]["mAP"] == pytest.approx(5 / 6, abs=1e-12)  # the mean of defined classes
    p = r["prf"]
    assert (p["TP"], p["FP"], p["FN"]) == (2, 1, 0)
    assert p["precision"] == pytest.approx(2 / 3) and p["recall"] == 1.0
    assert p["F1"] == pytest.approx(0.8)
    # the same outputs as lists give the same numbers; reset forgets them
    again = VOCEvaluator.from_dataset(_reader(), NAMES, keys=("voc12",))
    again.process(INPUTS, OUTPUTS)
    assert set(again.evaluate()) == {"voc12"}
    assert again.evaluate()["voc12"]["mAP"] == r["voc12"]["mAP"]
    again.reset()
    assert again.evaluate()["voc12"]["mAP"] == 0.0  # ground truth, no detections
    with pytest.raises(ValueError, match=r"expected some of .*got \['voc10'\]"):
        VOCEvaluator({}, NAMES, keys=("voc07", "voc10"))


def test_devkit_iou_and_confidence_thresholds_are_used():
    strict = VOCEvaluator.from_dataset(_reader(), NAMES, iou=0.95, conf=0.85)
    moved = [dict(OUTPUTS[0], boxes=[[0, 0, 40, 44], [60, 0, 99, 30], [50, 50, 90, 90]])]
    strict.process(INPUTS[:1], moved)
    r = strict.evaluate()
    # IoU 1600/1760 < 0.95: d1 is now a false positive; at confidence 0.85 only d1 counts
    assert (r["prf"]["TP"], r["prf"]["FP"], r["prf"]["FN"]) == (0, 1, 2)
    assert r["voc12"]["per_class"]["cat"] == pytest.approx(1 / 3 * 1 / 2, abs=1e-12)


@pytest.mark.parametrize(
    "keys,primary",
    [
        (None, "coco/AP"),
        (("voc07",), "voc07/mAP"),
        (("voc12", "prf"), "voc12/mAP"),
        (("prf",), "prf/F1"),
        (("coco", "voc07"), "coco/AP"),
    ],
)
def test_build_evaluator_keys_and_primary(keys, primary):
    ev = build_evaluator("detection", _reader(), NAMES, keys=keys)
    assert ev.primary == primary
    ev.process(INPUTS, _tensors(OUTPUTS))
    results = ev.evaluate()
    assert set(results) == set(keys or KEYS["detection"])
    if "voc07" in results:
        assert results["voc07"]["mAP"] == pytest.approx((6 + 10 / 3) / 11, abs=1e-12)
    if "coco" in results:
        # COCO has no "difficult": 3 cats, and every hit is exact (IoU 1, so AP = AP50).
        # Sorted TP, TP, FP, TP: precision 1 up to recall 2/3, then 3/4; of the 101 recall
        # points 0.00..0.66 (67) get 1 and 0.67..1.00 (34) get 3/4
        assert results["coco"]["AP50"] == pytest.approx((67 + 34 * 0.75) / 101, abs=1e-12)
        assert results["coco"]["AP"] == results["coco"]["AP50"]
        assert primary_value("detection", results) == results["coco"]["AP"]


def test_build_evaluator_refuses_unknown_tasks_and_keys():
    with pytest.raises(ValueError, match=r"task: expected one of \('detection', 'segmentation'\)"):
        build_evaluator("classification", _reader(), NAMES)
    with pytest.raises(ValueError, match=r"detection metric keys: .*got \['seg'\]"):
        build_evaluator("detection", _reader(), NAMES, keys=("coco", "seg"))
    with pytest.raises(ValueError, match=r"got \['coco_segm'\]"):
        build_evaluator("segmentation", _reader(), NAMES, keys=("coco_segm",))


@pytest.mark.parametrize("background", [True, False])
def test_segmentation_evaluator_follows_the_label_layout(background):
    ev = build_evaluator("segmentation", _reader(background), NAMES)
    assert ev.primary == PRIMARY["segmentation"] == "seg/mIoU"
    k = len(NAMES) + background
    truth = np.arange(k).repeat(4).reshape(k, 4)
    ev.process([{"mask": truth}], [{"mask": truth}])
    r = ev.evaluate()
    assert list(r["seg"]["per_class_iou"]) == (["background"] if background else []) + NAMES
    assert primary_value("segmentation", r) == r["seg"]["mIoU"] == 1.0


def test_label_layout_mismatch_is_refused():
    meta = SimpleNamespace(name="fcn8s_lite0", background=False)
    check_label_layout(meta, _reader(background=False))  # alike: fine
    with pytest.raises(ValueError, match="index 0 = background.*every index a class"):
        check_label_layout(meta, _reader(background=True))


def test_flatten_keeps_scalars_and_undefined_only():
    results = {
        "coco": {"AP": 0.5, "n": 3, "undefined": None, "per_class": {"cat": 0.5}},
        "prf": {"ok": True, "curve": [0.1], "label": "x"},
    }
    assert flatten(results) == {"coco/AP": 0.5, "coco/n": 3, "coco/undefined": None}
    assert Evaluator().scalars(results) == flatten(results)
    for call in (Evaluator().reset, Evaluator().evaluate, lambda: Evaluator().process([], [])):
        with pytest.raises(NotImplementedError):
            call()


def test_composite_takes_the_first_primary_and_resets_every_part():
    first, second = VOCEvaluator.from_dataset(_reader(), NAMES, keys=("voc12",)), Evaluator()
    first.primary = "voc12/mAP"
    both = Evaluators([second, first])
    assert both.primary == "voc12/mAP"
    assert Evaluators([first], "x/y").primary == "x/y"
    only = Evaluators([first])
    only.process(INPUTS, OUTPUTS)
    assert only.evaluate()["voc12"]["mAP"] > 0
    only.reset()
    assert only.evaluate()["voc12"]["mAP"] == 0.0


def test_devkit_matching_without_the_plus_one_and_protocol_labels():
    """0-based continuous boxes: IoU of [0, 0, 10, 10] and [5, 0, 15, 10] is 50/150 = 0.333
    (the devkit's "+1" pixels would make it 66/176 = 0.375)."""
    r = _reader()
    r.samples[0].boxes, r.samples[0].labels = np.array([[0, 0, 10, 10]], np.float32), np.array([0])
    r.samples[0].difficult = np.array([False])
    for iou, tp in ((0.35, 0), (0.3, 1)):
        ev = VOCEvaluator.from_dataset(r, NAMES, iou=iou)
        ev.process(INPUTS[:1], [{"boxes": [[5, 0, 15, 10]], "scores": [0.9], "labels": [0]}])
        res = ev.evaluate()
        assert res["prf"]["TP"] == tp, iou
        assert res["voc07"]["protocol"] == (
            f"VOC2007 11-point (python thresholds) AP, IoU >= {iou}, difficult ignored"
        )
        assert res["prf"]["protocol"].startswith(f"P/R/F1 at confidence >= 0.5, IoU >= {iou}")


def _prf_case():
    """One class, two objects; detections at 0.9 (hit), 0.5 (miss, exactly the default
    confidence), 0.5 (hit) and 0.3 (duplicate of the first object: a miss)."""
    gts = {1: {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 0]}}
    dets = [
        {"image_id": 1, "label": 0, "box": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "label": 0, "box": [50, 50, 60, 60], "score": 0.5},
        {"image_id": 1, "label": 0, "box": [20, 20, 30, 30], "score": 0.5},
        {"image_id": 1, "label": 0, "box": [0, 0, 10, 10.5], "score": 0.3},
    ]
    return gts, dets


def test_precision_recall_defaults_ties_and_undefined_cases():
    from eval.prf import _prf, best_f1, detection_outcomes, precision_recall
    from eval.voc import match_all

    gts, dets = _prf_case()
    r = precision_recall(gts, dets, ["a"])  # confidence 0.5 (inclusive), IoU 0.5, no "+1"
    assert r["settings"] == {"conf": 0.5, "iou": 0.5}
    assert (r["TP"], r["FP"], r["FN"]) == (2, 1, 0)
    assert r["precision"] == 2 / 3 and r["recall"] == 1.0 and r["F1"] == 0.8
    # pooled F1 by threshold: 0.9 -> 2*1/(1+2); 0.5 (both tied detections) -> 2*2/(3+2);
    # 0.3 -> 2*2/(4+2): the best is 0.8 at 0.5
    assert (r["best_F1"], r["best_F1_conf"]) == (0.8, 0.5)
    assert len(r["pr_curves"]["a"]["recall"]) == 101  # every recall level is reached
    assert r["pr_curves"]["a"]["precision"][50] == 1.0
    assert r["pr_curves"]["a"]["precision"][100] == 2 / 3
    assert detection_outcomes(gts, dets, ["a"]) == [(0.9, 1), (0.5, 0), (0.5, 1), (0.3, 0)]
    assert detection_outcomes(gts, dets, ["a"], iou=0.99)[3] == (0.3, 0)
    # IoU of [0, 0, 10, 10] and [5, 0, 15, 10]: 50/150 without the devkit's "+1" (the
    # default for 0-based boxes), 66/176 with it
    g1 = {1: {"boxes": [[0, 0, 10, 10]], "labels": [0]}}
    d1 = [{"image_id": 1, "label": 0, "box": [5, 0, 15, 10], "score": 0.9}]
    assert precision_recall(g1, d1, ["a"], iou=0.35)["TP"] == 0
    assert precision_recall(g1, d1, ["a"], iou=0.35, plus_one=True)["TP"] == 1
    assert detection_outcomes(g1, d1, ["a"], iou=0.35) == [(0.9, 0)]
    assert detection_outcomes(g1, d1, ["a"], iou=0.35, plus_one=True) == [(0.9, 1)]
    assert detection_outcomes(g1, d1, ["a"]) == [(0.9, 0)]  # default IoU 0.5
    assert detection_outcomes(g1, d1, ["a"], iou=0.3) == [(0.9, 1)]
    strict = precision_recall(gts, dets, ["a"], conf=0.6, curve_points=11)
    assert (strict["TP"], strict["FP"], strict["FN"]) == (1, 0, 1)
    assert len(strict["pr_curves"]["a"]["recall"]) == 11
    assert _prf(0, 0, 3)["precision"] != _prf(0, 0, 3)["precision"]  # NaN: nothing predicted
    assert math.isnan(_prf(0, 0, 3)["f1"]) and _prf(0, 0, 3)["recall"] == 0.0
    assert math.isnan(_prf(0, 2, 0)["recall"]) and math.isnan(_prf(0, 2, 0)["f1"])
    assert _prf(0, 2, 3) == {"tp": 0, "fp": 2, "fn": 3, "precision": 0.0, "recall": 0.0,
                             "f1": 0.0}  # fmt: skip
    matches = match_all(gts, dets, 1, 0.5, False)
    assert best_f1(matches) == {"conf": 0.5, "f1": 0.8, "precision": 2 / 3, "recall": 1.0}
    assert all(math.isnan(v) for v in best_f1([]).values())
    none = match_all({1: {"boxes": [], "labels": []}}, dets[:1], 1, 0.5, False)
    assert all(math.isnan(v) for v in best_f1(none).values())  # no positives: undefined


def test_readers_without_a_layout_attribute_have_a_background_class():
    plain = SimpleNamespace(samples=[])  # readers of VOC/COCO sets: index 0 = background
    ev = build_evaluator("segmentation", plain, NAMES)
    ev.process([{"mask": np.array([[0, 1, 2]])}], [{"mask": np.array([[0, 1, 2]])}])
    assert list(ev.evaluate()["seg"]["per_class_iou"]) == ["background", *NAMES]
    check_label_layout(SimpleNamespace(name="m", background=True), plain)
    with pytest.raises(ValueError) as e:
        check_label_layout(SimpleNamespace(name="m", background=False), plain)
    assert str(e.value) == (
        "model m: expected class maps laid out as the dataset's label maps (index 0 = "
        "background), got a model trained with every index a class, no background; evaluate "
        "it on a dataset of its own layout, or train one for this dataset"
    )


def test_composite_without_primaries_and_its_duplicate_message():
    assert Evaluators([Evaluator()]).primary == ""
    first = VOCEvaluator.from_dataset(_reader(), NAMES, keys=("voc12",))
    twice = Evaluators([first, VOCEvaluator.from_dataset(_reader(), NAMES, keys=("voc12",))])
    with pytest.raises(ValueError) as e:
        twice.evaluate()
    assert str(e.value) == (
        "two evaluators report task 'voc12': expected unique task keys, got VOCEvaluator "
        "repeating it"
    )


def test_devkit_threshold_convention_reaches_the_result():
    ev = VOCEvaluator.from_dataset(_reader(), NAMES, keys=("voc07",), thresholds="matlab")
    ev.process(INPUTS, OUTPUTS)
    assert ev.evaluate()["voc07"]["protocol"].startswith("VOC2007 11-point (matlab thresholds)")


class _Split(list):
    """A reader of in-memory samples (images included), as ``eval.metrics.score`` reads one."""

    def __init__(self, samples, background: bool = True):
        super().__init__(samples)
        self.samples, self.background = samples, background


def _queued(outputs):
    """A backend answering each image of a batch with the next of ``outputs``, in order."""
    left = list(outputs)
    return lambda x: [left.pop(0) for _ in range(x.shape[0])]


def test_score_is_the_one_evaluation_pass_with_its_options():
    """``score`` runs a predictor over a split in batches and scores it: the worked-out VOC
    and P/R values above, the metric keys passed through, the first ``keep`` results kept."""
    from eval.metrics import score
    from vision.models.registry import build_model
    from vision.predictor import Predictor

    samples = _reader().samples
    for s in samples:
        s.image = np.zeros((100, 100, 3), np.uint8)
    split = _Split(samples)
    model = build_model("fcos_slim", 2, class_names=NAMES, input_size=50)
    half = [  # the model sees the images letterboxed to 50 px: boxes at half scale
        {k: (torch.tensor(v) * (0.5 if k == "boxes" else 1)) for k, v in o.items()} for o in OUTPUTS
    ]
    metrics, kept = score(Predictor(model, backend=_queued(half)), split, NAMES)
    assert set(metrics) == {"coco", "voc07", "voc12", "prf"} and kept == []
    assert metrics["voc12"]["per_class"]["cat"] == pytest.approx(5 / 6)
    assert metrics["voc07"]["per_class"]["cat"] == pytest.approx((6 + 10 / 3) / 11)
    assert (metrics["prf"]["precision"], metrics["prf"]["recall"]) == pytest.approx((2 / 3, 1))
    pred = Predictor(model, backend=_queued(half))
    metrics, kept = score(pred, split, NAMES, batch=1, keep=1, keys=("voc12",))
    assert set(metrics) == {"voc12"} and len(kept) == 1
    np.testing.assert_allclose(kept[0]["boxes"], OUTPUTS[0]["boxes"], atol=1e-4)


def test_score_segmentation_checks_the_label_layout_first():
    from eval.metrics import score
    from vision.models.registry import build_model
    from vision.predictor import Predictor

    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1  # left half cat, right half background
    samples = [
        Sample(image_id=i, path=None, width=8, height=8, image=np.zeros((8, 8, 3), np.uint8),
               mask=mask)
        for i in range(3)
    ]  # fmt: skip
    model = build_model("fcn8s_slim", 2, class_names=NAMES, input_size=16)
    cat = torch.zeros(3, 3, 16, 16)
    cat[:, 1] = 1.0  # every pixel "cat"
    metrics, kept = score(Predictor(model, backend=lambda x: cat[: x.shape[0]]), _Split(samples),
                          NAMES, batch=2, keep=5)  # fmt: skip
    iou = metrics["seg"]["per_class_iou"]
    assert (iou["background"], iou["cat"]) == (0.0, 0.5) and math.isnan(iou["dog"])
    assert metrics["seg"]["mIoU"] == 0.25 and len(kept) == 3
    with pytest.raises(ValueError, match="expected class maps laid out as the dataset's"):
        score(Predictor(model, backend=lambda x: cat), _Split(samples, background=False), NAMES)


def test_build_evaluator_passes_the_voc07_threshold_convention():
    ev = build_evaluator("detection", _reader(), NAMES, keys=("voc07",), voc07_thresholds="matlab")
    ev.reset()
    ev.process(INPUTS, _tensors(OUTPUTS))
    assert "(matlab thresholds)" in ev.evaluate()["voc07"]["protocol"]
