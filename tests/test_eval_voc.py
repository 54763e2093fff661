"""VOC AP against an independent, literal devkit-style computation; precision/recall/F1."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.prf import detection_outcomes, precision_recall
from eval.voc import voc_evaluate

from .conftest import run_cli

# The eleven VOC07 recall thresholds as the references hold them, written out as literals:
# the Python ports' np.arange(0, 1.1, 0.1), and the MATLAB devkit's 0:0.1:1 (colon operator:
# first half k*0.1, second half 1 - (10 - k)*0.1)
PY_THRESHOLDS = [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001,
                 0.7000000000000001, 0.8, 0.9, 1.0]  # fmt: skip
MATLAB_THRESHOLDS = [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
THRESHOLDS = {"python": PY_THRESHOLDS, "matlab": MATLAB_THRESHOLDS}


def brute_force_ap(gts, dets, k, iou, metric, plus_one, thresholds="python"):
    """The devkit's loop, one detection at a time, written without vectorization."""
    one = 1.0 if plus_one else 0.0
    gt = {
        img: [
            (list(b), bool(d))
            for b, lab, d in zip(g["boxes"], g["labels"], g["difficult"], strict=True)
            if lab == k
        ]
        for img, g in gts.items()
    }
    used = {img: [False] * len(v) for img, v in gt.items()}
    npos = sum(not d for v in gt.values() for _, d in v)
    mine = [d for d in dets if d["label"] == k]
    order = sorted(range(len(mine)), key=lambda i: -mine[i]["score"])  # Python's sort is stable
    tp, fp = [], []
    for i in order:
        d = mine[i]
        bb = d["box"]
        ovmax, jmax = -float("inf"), -1
        for j, (g, _) in enumerate(gt[d["image_id"]]):
            iw = min(bb[2], g[2]) - max(bb[0], g[0]) + one
            ih = min(bb[3], g[3]) - max(bb[1], g[1]) + one
            if iw > 0 and ih > 0:
                ua = (
                    (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                    + (g[2] - g[0] + one) * (g[3] - g[1] + one)
                    - iw * ih
                )
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= iou:
            if gt[d["image_id"]][jmax][1]:
                continue  # difficult: neither TP nor FP
            if not used[d["image_id"]][jmax]:
                used[d["image_id"]][jmax] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, 1e-300)
    if metric == "voc07":
        ap = 0.0
        for t in THRESHOLDS[thresholds]:
            p = [pp for pp, rr in zip(prec, rec, strict=True) if rr >= t]
            ap += (max(p) if p else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum(
        (mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
    )


coord = st.integers(0, 40)


@st.composite
def box(draw):
    x1, y1 = draw(coord), draw(coord)
    return [
        float(x1),
        float(y1),
        float(x1 + draw(st.integers(0, 20))),
        float(y1 + draw(st.integers(0, 20))),
    ]


@st.composite
def problem(draw):
    n_img = draw(st.integers(1, 5))  # up to 30 boxes: recalls of exactly k/10 occur
    imgs = [f"img{i}" for i in range(n_img)]
    gts = {}
    for img in imgs:
        n = draw(st.integers(0, 6))
        gts[img] = {
            "boxes": np.array([draw(box()) for _ in range(n)]).reshape(-1, 4),
            "labels": np.array([draw(st.integers(0, 1)) for _ in range(n)], np.int64),
            "difficult": np.array([draw(st.booleans()) for _ in range(n)], bool),
        }
    n_det = draw(st.integers(0, 25))
    scores = st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9])  # frequent ties
    dets = []
    for _ in range(n_det):
        img = draw(st.sampled_from(imgs))
        g = gts[img]
        if len(g["boxes"]) and draw(st.booleans()):  # near-duplicates of a GT box
            j = draw(st.integers(0, len(g["boxes"]) - 1))
            b = (g["boxes"][j] + draw(st.integers(-2, 2))).tolist()
            b[2], b[3] = max(b[2], b[0]), max(b[3], b[1])
        else:
            b = draw(box())
        dets.append(
            {"image_id": img, "label": draw(st.integers(0, 1)), "box": b, "score": draw(scores)}
        )
    return gts, dets


# mutation testing runs this test for many mutants: VISION_HYPOTHESIS_EXAMPLES lowers the count
@settings(max_examples=int(os.environ.get("VISION_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(
    problem(),
    st.sampled_from(["voc07", "voc12"]),
    st.sampled_from([0.3, 0.5, 0.7]),
    st.booleans(),
    st.sampled_from(["python", "matlab"]),
)
def test_voc_ap_matches_brute_force(prob, metric, iou, plus_one, thresholds):
    gts, dets = prob
    got = voc_evaluate(gts, dets, ["a", "b"], iou, metric, plus_one, thresholds)
    for k, name in enumerate(["a", "b"]):
        want = brute_force_ap(gts, dets, k, iou, metric, plus_one, thresholds)
        if np.isnan(want):
            assert np.isnan(got["per_class"][name])
        else:
            assert got["per_class"][name] == pytest.approx(want, abs=1e-12)


def test_voc07_thresholds_where_recall_is_exactly_k_tenths():
    """10 objects: 3 found at precision 1, then a false positive, then 3 more (recall 0.6),
    another false positive, one more (0.7). 3/10, 6/10 and 7/10 fall on the thresholds: the
    Python ports' 0.30000000000000004, 0.6000000000000001, 0.7000000000000001 lie just above
    them, the MATLAB devkit's 0.6 and 0.7 on them."""
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], float)
    gts = {"a": {"boxes": boxes, "labels": np.zeros(10, np.int64), "difficult": np.zeros(10, bool)}}
    miss = [200.0, 200.0, 210.0, 210.0]
    order = [boxes[0], boxes[1], boxes[2], miss, boxes[3], boxes[4], boxes[5], miss, boxes[6]]
    dets = [
        {"image_id": "a", "label": 0, "box": list(b), "score": 1 - i / 100}
        for i, b in enumerate(order)
    ]
    got = {
        t: voc_evaluate(gts, dets, ["x"], metric="voc07", thresholds=t)["per_class"]["x"]
        for t in THRESHOLDS
    }
    for t, want_thr in THRESHOLDS.items():
        assert got[t] == brute_force_ap(gts, dets, 0, 0.5, "voc07", True, t)
        prec = np.array([1, 1, 1, 3 / 4, 4 / 5, 5 / 6, 6 / 7, 6 / 8, 7 / 9])  # by hand
        rec = np.array([1, 2, 3, 3, 4, 5, 6, 6, 7]) / 10
        assert got[t] == pytest.approx(
            sum(max(prec[rec >= thr], default=0.0) for thr in want_thr) / 11, rel=1e-12
        )
    # t = 0.3: both need recall 0.4 (6/7, not 1); t = 0.6: Python needs 0.7 (7/9), MATLAB
    # takes 0.6 (6/7); t = 0.7: Python finds nothing above 0.7 (0), MATLAB takes 0.7 (7/9)
    assert got["python"] == pytest.approx((3 + 3 * 6 / 7 + 7 / 9) / 11)
    assert got["matlab"] == pytest.approx((3 + 4 * 6 / 7 + 7 / 9) / 11)


def test_voc_edge_cases():
    gts = {
        "a": {
            "boxes": np.array([[0, 0, 10, 10]]),
            "labels": np.array([0]),
            "difficult": np.array([False]),
        }
    }
    r = voc_evaluate(gts, [], ["x", "y"], metric="voc12")
    assert r["per_class"]["x"] == 0.0 and np.isnan(r["per_class"]["y"]) and r["mAP"] == 0.0
    empty = {
        "a": {
            "boxes": np.zeros((0, 4)),
            "labels": np.zeros(0, np.int64),
            "difficult": np.zeros(0, bool),
        }
    }
    r = voc_evaluate(
        empty, [{"image_id": "a", "label": 0, "box": [0, 0, 5, 5], "score": 1.0}], ["x"]
    )
    assert np.isnan(r["mAP"])
    perfect = [
        {"image_id": "a", "label": 0, "box": [0, 0, 10, 10], "score": 0.9},
        {"image_id": "a", "label": 0, "box": [0, 0, 10, 10], "score": 0.8},
    ]
    r = voc_evaluate(gts, perfect, ["x"], metric="voc07")
    assert r["per_class"]["x"] == pytest.approx(1.0)  # the duplicate is FP after full recall


def test_worked_example_precision_recall():
    """Six detections at conf >= 0.5: three TP (IoU >= 0.5 with an unmatched box), one duplicate
    of an already matched box, one with too little overlap, one on an empty image; 4 GT boxes."""
    gts = {
        "i1": {
            "boxes": np.array([[0, 0, 100, 100], [200, 200, 300, 300]], float),
            "labels": np.array([0, 0]),
            "difficult": np.zeros(2, bool),
        },
        "i2": {
            "boxes": np.array([[50, 50, 150, 150], [400, 400, 450, 450]], float),
            "labels": np.array([0, 0]),
            "difficult": np.zeros(2, bool),
        },
        "i3": {
            "boxes": np.zeros((0, 4)),
            "labels": np.zeros(0, np.int64),
            "difficult": np.zeros(0, bool),
        },
    }
    dets = [
        {"image_id": "i1", "label": 0, "box": [5, 5, 100, 100], "score": 0.95},  # TP
        {"image_id": "i1", "label": 0, "box": [0, 0, 90, 95], "score": 0.90},  # duplicate → FP
        {"image_id": "i1", "label": 0, "box": [210, 210, 300, 310], "score": 0.80},  # TP
        {"image_id": "i2", "label": 0, "box": [100, 100, 200, 200], "score": 0.75},  # IoU .14 FP
        {"image_id": "i2", "label": 0, "box": [55, 50, 150, 155], "score": 0.60},  # TP
        {"image_id": "i3", "label": 0, "box": [0, 0, 20, 20], "score": 0.55},  # FP
        {"image_id": "i2", "label": 0, "box": [400, 400, 450, 450], "score": 0.30},  # below conf
    ]
    outcomes = detection_outcomes(gts, dets, ["obj"], iou=0.5)
    assert [tp for _, tp in outcomes] == [True, False, True, False, True, False, True]
    r = precision_recall(gts, dets, ["obj"], conf=0.5, iou=0.5)
    assert (r["TP"], r["FP"], r["FN"]) == (3, 3, 1)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.75)
    assert r["F1"] == pytest.approx(0.6)
    # at 0.30 all four boxes are found: P=4/7, R=1, F1=8/11
    assert r["best_F1_conf"] == pytest.approx(0.30) and r["best_F1"] == pytest.approx(8 / 11)
    assert r["pr_curves"]["obj"]["precision"][0] == pytest.approx(1.0)


def test_voc_cli(real, tmp_path):
    ann = real / "voc_det/icevision_fridge/Annotations"
    from vision.data.voc import parse_voc_xml

    names = ["can", "carton", "milk_bottle", "water_bottle"]
    dets = []
    for f in sorted(ann.glob("*.xml")):
        g = parse_voc_xml(f, {n: i for i, n in enumerate(names)}, zero_based=False)
        for b, lab in zip(g["boxes"], g["labels"], strict=True):
            x1, y1, x2, y2 = b.tolist()
            dets.append(
                {
                    "image_id": f.stem,
                    "category": names[lab],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": 0.9,
                }
            )
    (tmp_path / "d.json").write_text(json.dumps(dets))
    cmd = [
        "eval",
        "voc",
        "--annotations",
        str(ann),
        "--pred",
        str(tmp_path / "d.json"),
        "--metric",
        "voc07",
        "--out",
        str(tmp_path / "o.json"),
    ]
    r = run_cli(cmd)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["mAP"] == pytest.approx(1.0) and set(got["per_class"]) == set(names)
    dets[0]["category"] = "beer"
    (tmp_path / "d.json").write_text(json.dumps(dets))
    r = run_cli(cmd)
    assert r.returncode == 2 and "'beer'" in r.stderr and "Traceback" not in r.stderr
    # the reference scripts' way: score a given class list, or leave unknown classes out
    r = run_cli([*cmd, "--ignore-unknown"])
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["skipped"] == {"ground_truth_other_classes": 0, "detections_unknown_class": 1}
    assert "1 detections of unknown classes" in r.stdout and got["mAP"] < 1.0  # one can missed
    (tmp_path / "classes.txt").write_text("\n".join([*names, "beer"]))
    r = run_cli([*cmd, "--classes", str(tmp_path / "classes.txt")])
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["per_class"]["beer"] is None and got["skipped"]["detections_unknown_class"] == 0
    (tmp_path / "cans.txt").write_text("can\n")  # other classes' objects are not scored
    r = run_cli([*cmd, "--classes", str(tmp_path / "cans.txt"), "--ignore-unknown"])
    got = json.loads((tmp_path / "o.json").read_text())
    assert r.returncode == 0 and list(got["per_class"]) == ["can"], r.stderr
    assert got["skipped"]["ground_truth_other_classes"] > 0
    dets[0]["category"], dets[0]["image_id"] = "can", "nope"
    (tmp_path / "d.json").write_text(json.dumps(dets))
    r = run_cli(cmd)
    assert r.returncode == 2 and "'nope'" in r.stderr


def test_worked_example_per_class_and_undefined_rates():
    """Four classes at conf 0.5: a (1 TP, 1 FP, 1 missed; its second TP scores 0.4), b (a false
    positive, no ground truth: recall undefined), c (ground truth, no detection: precision
    undefined), d (a detection that misses its box: P = R = F1 = 0)."""

    def g(boxes, labels):
        return {
            "boxes": np.array(boxes, float).reshape(-1, 4),
            "labels": np.array(labels, np.int64),
            "difficult": np.zeros(len(labels), bool),
        }

    gts = {"i1": g([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]],
                   [0, 0, 2, 3])}  # fmt: skip
    dets = [
        {"image_id": "i1", "label": 0, "box": [0, 0, 10, 10], "score": 0.9},  # TP
        {"image_id": "i1", "label": 0, "box": [80, 80, 90, 90], "score": 0.8},  # FP
        {"image_id": "i1", "label": 0, "box": [20, 20, 30, 30], "score": 0.4},  # TP, below conf
        {"image_id": "i1", "label": 1, "box": [0, 0, 10, 10], "score": 0.7},  # FP, no GT of b
        {"image_id": "i1", "label": 3, "box": [0, 0, 10, 10], "score": 0.9},  # FP, misses d
    ]
    r = precision_recall(gts, dets, ["a", "b", "c", "d"], conf=0.5, iou=0.5)
    pc = r["per_class"]
    assert (pc["a"]["tp"], pc["a"]["fp"], pc["a"]["fn"]) == (1, 1, 1)
    assert pc["a"]["precision"] == pc["a"]["recall"] == pc["a"]["f1"] == 0.5
    assert (pc["b"]["tp"], pc["b"]["fp"], pc["b"]["fn"]) == (0, 1, 0)
    assert pc["b"]["precision"] == 0.0 and np.isnan(pc["b"]["recall"]) and np.isnan(pc["b"]["f1"])
    assert (pc["c"]["tp"], pc["c"]["fp"], pc["c"]["fn"]) == (0, 0, 1)
    assert np.isnan(pc["c"]["precision"]) and pc["c"]["recall"] == 0.0 and np.isnan(pc["c"]["f1"])
    assert pc["d"]["precision"] == pc["d"]["recall"] == 0.0 and pc["d"]["f1"] == 0.0
    assert (r["TP"], r["FP"], r["FN"]) == (1, 3, 3)  # pooled over the classes
    assert r["precision"] == r["recall"] == r["F1"] == 0.25
    # pooled F1 by threshold: 0.9 → 2/6 (two tied detections count together), 0.8 → 2/7,
    # 0.7 → 2/8, 0.4 → 4/9 (P 2/5, R 1/2)
    assert r["best_F1_conf"] == 0.4 and r["best_F1"] == pytest.approx(4 / 9, abs=1e-15)
    assert r["settings"] == {"conf": 0.5, "iou": 0.5}
    curve = r["pr_curves"]["a"]  # rec .5 .5 1, prec 1 .5 .67: envelope 1 up to R .5, then 2/3
    assert curve["recall"] == pytest.approx(np.linspace(0, 1, 101).tolist())
    assert curve["precision"] == pytest.approx([1.0] * 51 + [2 / 3] * 50)
    assert r["pr_curves"]["b"] == r["pr_curves"]["c"] == {"recall": [], "precision": []}
    assert r["pr_curves"]["d"] == {"recall": [0.0], "precision": [0.0]}


def test_best_f1_ties_take_the_higher_threshold_and_nothing_is_nan():
    from eval.prf import best_f1
    from eval.voc import ClassMatches

    # a TP at 0.9 and at 0.5 around an FP at 0.7, 2 boxes: F1 2/3 at 0.9, 0.8 at 0.5
    m = ClassMatches(np.array([0.9, 0.7, 0.5]), np.array([True, False, True]), 2)
    assert best_f1([m]) == pytest.approx({"conf": 0.5, "f1": 0.8, "precision": 2 / 3, "recall": 1})
    # 2 boxes; TP .9, FP .8, FP .7, TP .6: F1 2/3 at 0.9 and 4/6 at 0.6, a tie → 0.9
    tie = ClassMatches(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1], bool), 2)
    assert best_f1([tie]) == {"conf": 0.9, "f1": 2 / 3, "precision": 1.0, "recall": 0.5}
    even = ClassMatches(np.array([0.9, 0.8, 0.7]), np.array([True, True, False]), 4)
    # F1 at .9: 2/5, at .8: 4/6, at .7: 4/7: the best is 0.8
    assert best_f1([even])["conf"] == 0.8
    empty = best_f1([])
    assert np.isnan(empty["conf"]) and np.isnan(empty["f1"])
    no_gt = best_f1([ClassMatches(np.array([0.9]), np.array([False]), 0)])
    assert np.isnan(no_gt["f1"])
