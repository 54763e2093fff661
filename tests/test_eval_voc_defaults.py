"""VOC evaluation's defaults (the devkit protocol), thresholds, error messages and degenerate
inputs, on hand-made ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from eval.voc import voc_evaluate

# two GTs; detections ranked TP (counted only with the devkit's +1 pixel: IoU 0.58, 0.475
# without), FP, TP: VOC12 5/6, VOC07 (6 + 10/3) / 11 -- the defaults are IoU 0.5, +1, VOC12
DEFAULTS_GT = {
    "a": {"boxes": [[0, 0, 4, 4], [10, 10, 14, 14]], "labels": [0, 0], "difficult": [0, 0]}
}
DEFAULTS_DETS = [
    {"image_id": "a", "label": 0, "box": [0, 0, 4, 1.9], "score": 0.9},
    {"image_id": "a", "label": 0, "box": [20, 20, 24, 24], "score": 0.8},
    {"image_id": "a", "label": 0, "box": [10, 10, 14, 14], "score": 0.7},
]


def test_voc_defaults_are_the_devkit_protocol():
    from eval.voc import match_all, match_class, voc_ap, voc_from_matches

    got = voc_evaluate(DEFAULTS_GT, DEFAULTS_DETS, ["x"])
    assert got["per_class"]["x"] == pytest.approx(5 / 6)
    assert got["protocol"] == "VOC2010+ all-point AP, IoU >= 0.5, difficult ignored"
    assert voc_evaluate(DEFAULTS_GT, DEFAULTS_DETS, ["x"], plus_one=False)["mAP"] == pytest.approx(
        1 / 6
    )
    m = match_all(DEFAULTS_GT, DEFAULTS_DETS, 1)
    assert m[0].tp.tolist() == [True, False, True] and m[0].npos == 2
    direct = match_class(
        np.zeros(2, int),
        np.array(DEFAULTS_GT["a"]["boxes"]),
        np.zeros(2, bool),
        np.zeros(3, int),
        np.array([d["score"] for d in DEFAULTS_DETS]),
        np.array([d["box"] for d in DEFAULTS_DETS]),
    )
    assert direct.tp.tolist() == [True, False, True]
    assert voc_from_matches(m, ["x"]) == got
    voc07 = voc_from_matches(m, ["x"], metric="voc07")
    assert voc07["per_class"]["x"] == pytest.approx((6 + 10 / 3) / 11)
    assert voc07["protocol"] == (
        "VOC2007 11-point (python thresholds) AP, IoU >= 0.5, difficult ignored"
    )
    rec, prec = m[0].curve()
    assert voc_ap(rec, prec) == pytest.approx(5 / 6)
    assert voc_ap(rec, prec, "voc07") == voc07["per_class"]["x"]


def test_voc_thresholds_errors_and_degenerate_inputs():
    from eval.voc import ClassMatches, match_class, voc07_thresholds, voc_ap

    python, matlab = voc07_thresholds(), voc07_thresholds("matlab")
    assert python.tolist() == np.arange(0.0, 1.1, 0.1).tolist() and len(matlab) == 11
    assert matlab.tolist() == [
        0.0,
        0.1,
        0.2,
        0.30000000000000004,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
    ]
    with pytest.raises(ValueError) as e:
        voc07_thresholds("octave")
    assert str(e.value) == "VOC07 thresholds: expected one of ('python', 'matlab'), got 'octave'"
    with pytest.raises(ValueError) as e:
        voc_ap(np.ones(1), np.ones(1), "voc10")
    assert str(e.value) == "VOC metric: expected one of ('voc07', 'voc12'), got 'voc10'"
    with pytest.raises(KeyError) as e:
        voc_evaluate(DEFAULTS_GT, [{**DEFAULTS_DETS[0], "image_id": "zz"}], ["x"])
    assert e.value.args[0] == "detection image_id 'zz' is not in the ground truth"
    empty = voc_evaluate({}, [], ["x", "y"])  # no images at all
    assert np.isnan(empty["mAP"]) and all(np.isnan(v) for v in empty["per_class"].values())
    rec, prec = ClassMatches(np.array([0.9, 0.8]), np.array([False, False]), 0).curve()
    assert np.isnan(rec).all() and rec.shape == (2,) and prec.tolist() == [0.0, 0.0]
    # difficult flags as 0/1 integers mean the same as booleans
    flags = match_class([0, 0], [[0, 0, 4, 4], [10, 10, 14, 14]], [0, 1], [0], [0.9],
                        [[10, 10, 14, 14]])  # fmt: skip
    assert flags.npos == 1 and flags.tp.size == 0  # the one detection sits on the difficult GT


def test_voc_ground_truth_keeps_file_order_within_an_image():
    """The first GT box in file order wins a tie: here a difficult box (the detection is
    ignored) before its non-difficult duplicate; image ids interleaved, 40 boxes."""
    from eval.voc import match_class

    gt_img = np.array([1, 0] * 20)
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(40)], float)
    boxes[14] = boxes[12]  # image 1: box 12 (difficult) and box 14 (not) are the same box
    difficult = np.zeros(40, bool)
    difficult[12] = True  # (numpy's default, unstable sort puts 14 before 12 here)
    m = match_class(gt_img, boxes, difficult, np.array([1]), np.array([0.9]), boxes[[12]])
    assert m.tp.size == 0 and m.npos == 39
