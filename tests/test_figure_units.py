"""Which plot each report section asks for, with which data and under which words (the
plots read back as data through test_plot_units' fixture)."""

from __future__ import annotations

import hashlib
import math

from eval import figures, plots
from eval.html import figure

# ---- eval.figures: which plot, with which data, under which words ---------------------------


PR = "Precision at each recall, per class (AP in the legend), 101-point interpolation, "
VOC = "Interpolated precision envelope, VOC devkit matching at IoU 0.5 (VOC12 AP in the legend)."
F1 = (
    "F1 at IoU 0.5 for each confidence threshold; the dashed line is the threshold of the best "
    "pooled F1."
)
SIZES = (
    "Objects by the square root of their box area; COCO's small/medium/large split at 32 and 96 px."
)


def _fig(png, alt, caption):
    return figure(png, alt, caption)


def test_detection_figures(seen):
    per = {"a": [1.0, 0.5], "b": [None, 0.25]}
    metrics = {
        "coco": {
            "pr_curves": {"recall": [0.0, 1.0], "iou50": per, "iou50_95": per},
            "per_class": {"a": 0.5, "b": 0.25},
        },
        "prf": {
            "pr_curves": {"a": {"recall": [0, 1], "precision": [1, 0.5]}},
            "f1_curve": {"conf": [0.1, 0.9], "overall": [0.5, 0.7], "per_class": {"a": [0.5, 0.7]}},
            "best_F1_conf": 0.9,
            "confusion": {
                "matrix": [[1, 0], [0, 0]],
                "labels": ["a", "background"],
                "protocol": "P",
            },
        },
        "voc12": {"per_class": {"a": 0.8}},
    }
    got = figures.detection_figures(metrics, "M")
    ap = {"a": 0.75, "b": 0.25}
    mean = [1.0, 0.375]
    want = [
        _fig(
            plots.pr_curves(
                {n: ([0.0, 1.0], c) for n, c in per.items()}, "COCO IoU 0.5", ap, ([0.0, 1.0], mean)
            ),
            "precision–recall curves (COCO IoU 0.5) — M",
            PR + "COCO IoU 0.5.",
        ),
        _fig(
            plots.pr_curves(
                {n: ([0.0, 1.0], c) for n, c in per.items()},
                "COCO IoU .50:.95",
                ap,
                ([0.0, 1.0], mean),
            ),
            "precision–recall curves (COCO IoU .50:.95) — M",
            PR + "COCO IoU .50:.95.",
        ),
        _fig(
            plots.pr_curves({"a": ([0, 1], [1, 0.5])}, "VOC, IoU 0.5", {"a": 0.8}),
            "precision–recall curves (VOC) — M",
            VOC,
        ),
        _fig(
            plots.f1_confidence(
                [0.1, 0.9], [0.5, 0.7], {"a": [0.5, 0.7]}, 0.9, "F1 against confidence"
            ),
            "F1–confidence curve — M",
            F1,
        ),
        _fig(
            plots.confusion([[1, 0], [0, 0]], ["a", "background"], "objects: true × predicted"),
            "confusion matrix — M",
            "P; each row normalized.",
        ),
        _fig(
            plots.bars({"a": 0.5, "b": 0.25}, "COCO AP per class", "AP @[.50:.95]"),
            "per-class AP — M",
            "COCO AP per class.",
        ),
    ]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w
    assert figures.detection_figures({}, "M") == []
    only_rec = {"coco": {"pr_curves": {"recall": [0, 1]}}, "prf": {}}
    assert figures.detection_figures(only_rec, "M") == []
    no_rec = {"coco": {"pr_curves": {"iou50": per}}}
    assert figures.detection_figures(no_rec, "M") == []
    no_voc = {"prf": {"pr_curves": {"a": {"recall": [0], "precision": [1]}}}}
    assert figures.detection_figures(no_voc, "M") == [
        _fig(
            plots.pr_curves({"a": ([0], [1])}, "VOC, IoU 0.5", None),
            "precision–recall curves (VOC) — M",
            VOC,
        )
    ]
    no_best = {"prf": {"f1_curve": {"conf": [0.1], "overall": [0.5], "per_class": {}}}}
    assert figures.detection_figures(no_best, "M")[0] == _fig(
        plots.f1_confidence([0.1], [0.5], {}, None, "F1 against confidence"),
        "F1–confidence curve — M",
        F1,
    )


def test_mean_skips_missing():
    assert figures._mean([1.0, None, 0.5]) == 0.75 and math.isnan(figures._mean([None]))
    assert math.isnan(figures._mean([]))


def test_segmentation_training_and_model_figures(seen):
    seg = {"seg": {"confusion": [[2, 0], [1, 1]], "per_class_iou": {"bg": 0.9, "a": 0.5}}}
    want = [
        _fig(
            plots.confusion([[2, 0], [1, 1]], ["bg", "a"], "pixels: true × predicted"),
            "confusion matrix — M",
            "Pixels by true (rows) and predicted class, each row normalized; void pixels left out.",
        ),
        _fig(
            plots.bars({"bg": 0.9, "a": 0.5}, "IoU per class", "IoU"),
            "per-class IoU — M",
            "Intersection over union per class.",
        ),
    ]
    assert figures.segmentation_figures(seg, "M") == want
    assert figures.segmentation_figures({}, "M") == []
    rows = [{"epoch": 1, "train_loss": 1.0, "lr": 0.1, "mIoU": 0.5}]
    train = _fig(
        plots.training_curves(rows, "mIoU", "training of M"),
        "training curves — M",
        "Per epoch: mean training loss, the learning rate at the epoch's end, and the "
        "validation mIoU (epochs that validated).",
    )
    assert figures.training_figure(rows, "mIoU", "M") == [train]
    assert figures.training_figure([], "mIoU", "M") == []
    assert figures.model_figures("segmentation", seg, "M", rows, "mIoU") == want + [train]
    assert figures.model_figures("segmentation", seg, "M") == want
    unnamed = figures.model_figures("segmentation", seg, "M", rows)  # no metric named
    assert unnamed == want + figures.training_figure(rows, "", "M")
    det = {"coco": {"per_class": {"a": 0.5}}}
    assert figures.model_figures("detection", det, "M") == figures.detection_figures(det, "M")


def test_health_figures(seen):
    health = {
        "splits": {
            "detection/val": {"objects_per_class": {"a": 1}},
            "detection/train": {
                "objects_per_class": {"a": 5, "b": 2},
                "box_sizes": {"counts": [1, 2], "edges": [0, 32, None]},
            },
            "segmentation/val": {"pixels_per_class": {"bg": 30, "a": 10, "void": 99}},
        }
    }
    got = figures.health_figures(health, "D")
    want = [
        _fig(
            plots.bars(
                {"a": 5, "b": 2}, "objects per class (detection/train)", "objects", "{:.0f}"
            ),
            "objects per class — D",
            "D, detection/train.",
        ),
        _fig(
            plots.histogram(
                [1, 2], [0, 32, None], "box sizes (detection/train)", "box size: √area (px)"
            ),
            "box-size histogram — D",
            SIZES,
        ),
        _fig(
            plots.bars(
                {"bg": 75.0, "a": 25.0},
                "label pixels per class (segmentation/val)",
                "% of labelled pixels",
                "{:.2f}%",
            ),
            "label pixel share — D",
            "Share of the split's labelled pixels per class (void apart).",
        ),
    ]
    assert got == want
    first = {"splits": {"detection/val": {"objects_per_class": {"a": 1}}}}
    assert figures.health_figures(first, "D") == [
        _fig(
            plots.bars({"a": 1}, "objects per class (detection/val)", "objects", "{:.0f}"),
            "objects per class — D",
            "D, detection/val.",
        )
    ]
    empty_px = {"splits": {"segmentation/train": {"pixels_per_class": {"void": 3, "a": 0}}}}
    assert figures.health_figures(empty_px, "D")[0] == _fig(
        plots.bars(
            {"a": 0.0},
            "label pixels per class (segmentation/train)",
            "% of labelled pixels",
            "{:.2f}%",
        ),
        "label pixel share — D",
        "Share of the split's labelled pixels per class (void apart).",
    )
    assert figures.health_figures({"splits": {"segmentation/train": {}}}, "D") == []
    assert figures.health_figures({}, "D") == []


def test_descriptions_differ_when_the_data_does(seen):
    """The description is sensitive enough to tell figures apart (the checks above rely on it)."""
    a = plots.bars({"a": 0.5}, "B", "AP")
    assert a == plots.bars({"a": 0.5}, "B", "AP") and a != plots.bars({"a": 0.6}, "B", "AP")
    assert (
        hashlib.sha256(a).hexdigest()
        != hashlib.sha256(plots.bars({"a": 0.5}, "C", "AP")).hexdigest()
    )
