"""PASCAL VOC detection AP with the official devkit's semantics.

Per class, detections are sorted by descending score (a stable sort: ties keep input order,
as MATLAB's ``sort`` in the devkit does). Each detection is compared with every ground-truth
box of its image and class; ``jmax`` is the first box of maximal overlap among *all* of them
(matched, unmatched or difficult), overlap counted only where boxes intersect. Then, when
``overlap ≥ iou`` (0.5 by default): a difficult ``jmax`` makes the detection neither TP nor FP,
an unmatched ``jmax`` makes it TP (and marks it matched), an already matched one makes it a
duplicate FP; otherwise it is FP. Recall divides by the number of non-difficult boxes.

``plus_one=True`` (the devkit on raw XML coordinates) counts widths as ``x2 - x1 + 1``;
``plus_one=False`` is the same thing for boxes already in the 0-based continuous convention of
``vision.data`` (``x1 = xmin - 1``), so both give the devkit's numbers.

AP: ``voc07`` is the VOC2007 11-point interpolation (mean over recall thresholds t = 0, 0.1
… 1 of the maximal precision at recall ≥ t); ``voc12`` is VOC2010+ all-point (area under the
monotone precision envelope). A class without (non-difficult) ground truth has AP NaN and is
left out of mAP.

The eleven VOC07 thresholds are floating-point numbers, and which ones matters whenever a
class's recall is exactly 3/10, 6/10 or 7/10 (say 3 of 10 objects found):

- ``thresholds="python"`` (default): ``np.arange(0, 1.1, 0.1)`` as the Python ports everyone
  runs (py-faster-rcnn ``voc_eval.py``, detectron2, mmdetection) build them; its 0.3, 0.6 and
  0.7 are ``0.30000000000000004``, ``0.6000000000000001``, ``0.7000000000000001``. These are
  the numbers papers report.
- ``thresholds="matlab"``: the official devkit's ``0:0.1:1``; MATLAB's colon operator builds
  the first half upwards from 0 and the second half downwards from 1, giving
  ``0.30000000000000004``, ``0.6`` and ``0.7``.

Versus COCO: VOC uses a single IoU threshold, no area ranges, no detection cap, difficult
objects instead of crowd regions, and interpolates differently (COCO samples 101 recall
points and averages over IoU 0.50:0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("voc07", "voc12")
THRESHOLDS = ("python", "matlab")


def voc07_thresholds(kind: str = "python") -> np.ndarray:
    """The eleven recall thresholds of VOC07 AP, as the Python ports or the MATLAB devkit
    compute them (see the module notes)."""
    if kind == "python":
        return np.arange(0.0, 1.1, 0.1)
    if kind == "matlab":  # colon operator: a + k*d up to the middle, then b - (n - k)*d
        return np.array([k * 0.1 if k <= 5 else 1.0 - (10 - k) * 0.1 for k in range(11)])
    raise ValueError(f"VOC07 thresholds: expected one of {THRESHOLDS}, got {kind!r}")


def voc_ap(
    rec: np.ndarray, prec: np.ndarray, metric: str = "voc12", thresholds: str = "python"
) -> float:
    """AP from a recall/precision curve (detections in score order)."""
    if metric == "voc07":
        ap = 0.0
        for t in voc07_thresholds(thresholds):
            sel = prec[rec >= t]
            ap += (sel.max() if sel.size else 0.0) / 11.0
        return float(ap)
    if metric != "voc12":
        raise ValueError(f"VOC metric: expected one of {METRICS}, got {metric!r}")
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


@dataclass
class ClassMatches:
    """Per-detection outcomes of one class, in descending score order (ignored ones removed)."""

    scores: np.ndarray
    tp: np.ndarray  # bool
    npos: int

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        tp = np.cumsum(self.tp)
        fp = np.cumsum(~self.tp)
        rec = tp / self.npos if self.npos else np.full(tp.shape, np.nan)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
        return rec, prec


def match_class(
    gt_img: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    det_img: np.ndarray,
    det_scores: np.ndarray,
    det_boxes: np.ndarray,
    iou: float = 0.5,
    plus_one: bool = True,
) -> ClassMatches:
    """Devkit matching for one class. Image ids are integer codes shared by GT and detections."""
    gt_difficult = np.asarray(gt_difficult, bool)
    npos = int((~gt_difficult).sum())
    order = np.argsort(-np.asarray(det_scores, np.float64), kind="stable")
    d_img, d_box = np.asarray(det_img)[order], np.asarray(det_boxes, np.float64)[order]
    scores = np.asarray(det_scores, np.float64)[order]
    n = len(order)
    if n == 0:
        return ClassMatches(scores, np.zeros(0, bool), npos)
    g_order = np.argsort(gt_img, kind="stable")
    g_img, g_box, g_diff = (
        np.asarray(gt_img)[g_order],
        np.asarray(gt_boxes, np.float64)[g_order],
        gt_difficult[g_order],
    )
    start = np.searchsorted(g_img, d_img, "left")
    count = np.searchsorted(g_img, d_img, "right") - start
    # every (detection, GT of the same image) pair, grouped by detection, GT in file order
    pair_det = np.repeat(np.arange(n), count)
    offsets = np.arange(len(pair_det)) - np.repeat(np.cumsum(count) - count, count)
    pair_gt = np.repeat(start, count) + offsets
    b, g = d_box[pair_det], g_box[pair_gt]
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(b[:, 2], g[:, 2]) - np.maximum(b[:, 0], g[:, 0]) + one
    ih = np.minimum(b[:, 3], g[:, 3]) - np.maximum(b[:, 1], g[:, 1]) + one
    inter = iw * ih
    ua = (
        (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
        + (g[:, 2] - g[:, 0] + one) * (g[:, 3] - g[:, 1] + one)
        - inter
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes: as the devkit
        ov = np.where((iw > 0) & (ih > 0), inter / ua, -np.inf)
    ovmax = np.full(n, -np.inf)
    np.maximum.at(ovmax, pair_det, ov)
    # jmax: the first pair reaching the maximum, per detection
    at_max = np.flatnonzero(ov == ovmax[pair_det])
    first_det, first_pos = np.unique(pair_det[at_max], return_index=True)
    jmax = np.full(n, -1)
    jmax[first_det] = pair_gt[at_max[first_pos]]
    hit = (ovmax >= iou) & (jmax >= 0)
    ignored = np.zeros(n, bool)
    ignored[hit] = g_diff[jmax[hit]]
    cand = np.flatnonzero(hit & ~ignored)
    _, first = np.unique(jmax[cand], return_index=True)  # first detection per GT box is TP
    tp = np.zeros(n, bool)
    tp[cand[first]] = True
    keep = ~ignored
    return ClassMatches(scores[keep], tp[keep], npos)


def voc_evaluate(
    gts: dict,
    dets: list[dict],
    names: list[str],
    iou: float = 0.5,
    metric: str = "voc12",
    plus_one: bool = True,
    thresholds: str = "python",
) -> dict:
    """VOC AP per class and mAP.

    ``gts``: ``{image_id: {"boxes": (G, 4), "labels": (G,), "difficult": (G,)}}`` with
    contiguous labels into ``names``; ``dets``: ``[{"image_id", "label", "box" (x1y1x2y2),
    "score"}]``. Image ids may be strings (file stems) or ints. ``thresholds``: the VOC07
    recall thresholds (``python`` or ``matlab``, see the module notes).
    """
    matches = match_all(gts, dets, len(names), iou, plus_one)
    return voc_from_matches(matches, names, iou, metric, thresholds)


def voc_from_matches(
    matches: list[ClassMatches],
    names: list[str],
    iou: float = 0.5,
    metric: str = "voc12",
    thresholds: str = "python",
) -> dict:
    """Per-class AP and mAP from each class's matches (see ``voc_evaluate``)."""
    per_class = {}
    for k, name in enumerate(names):
        m = matches[k]
        if m.npos == 0:
            per_class[name] = float("nan")
            continue
        rec, prec = m.curve()
        per_class[name] = voc_ap(rec, prec, metric, thresholds)
    vals = np.array([v for v in per_class.values() if not np.isnan(v)])
    label = (
        f"VOC2007 11-point ({thresholds} thresholds)"
        if metric == "voc07"
        else ("VOC2010+ all-point")
    )
    return {
        "mAP": float(vals.mean()) if vals.size else float("nan"),
        "per_class": per_class,
        "protocol": f"{label} AP, IoU >= {iou}, difficult ignored",
    }


def match_all(
    gts: dict, dets: list[dict], num_classes: int, iou: float = 0.5, plus_one: bool = True
) -> list[ClassMatches]:
    """Devkit matching for every class (used by AP and by precision/recall)."""
    codes = {img: i for i, img in enumerate(gts)}
    g_img, g_box, g_lab, g_diff = [], [], [], []
    for img, g in gts.items():
        n = len(g["labels"])
        g_img.append(np.full(n, codes[img]))
        g_box.append(np.asarray(g["boxes"], np.float64).reshape(-1, 4))
        g_lab.append(np.asarray(g["labels"], np.int64))
        g_diff.append(np.asarray(g.get("difficult", np.zeros(n, bool)), bool))
    g_img, g_box = (
        np.concatenate(g_img or [[]]).astype(np.int64),
        np.concatenate(g_box or [np.zeros((0, 4))]),
    )
    g_lab, g_diff = (
        np.concatenate(g_lab or [[]]).astype(np.int64),
        np.concatenate(g_diff or [[]]).astype(bool),
    )
    try:
        d_img = np.array([codes[d["image_id"]] for d in dets], np.int64)
    except KeyError as e:
        raise KeyError(f"detection image_id {e.args[0]!r} is not in the ground truth") from None
    d_lab = np.array([d["label"] for d in dets], np.int64)
    d_sc = np.array([d["score"] for d in dets], np.float64)
    d_box = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4)
    out = []
    for k in range(num_classes):
        gs, ds = g_lab == k, d_lab == k
        out.append(
            match_class(
                g_img[gs], g_box[gs], g_diff[gs], d_img[ds], d_sc[ds], d_box[ds], iou, plus_one
            )
        )
    return out
