"""Precision, recall and F1 at a confidence threshold, the F1-optimal confidence, PR curves.

Matching is the VOC devkit's (see ``eval.voc``) at the chosen IoU: detections above the
confidence threshold, in score order, each ground-truth box matched once, difficult boxes
neither TP nor FP. Counts are per class and pooled over classes ("overall", micro-averaged).
"""

from __future__ import annotations

import numpy as np

from eval.voc import ClassMatches, match_all


def _counts(m: ClassMatches, conf: float) -> tuple[int, int, int]:
    sel = m.scores >= conf
    tp = int(m.tp[sel].sum())
    fp = int(sel.sum() - tp)
    return tp, fp, m.npos - tp


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = (
        2 * p * r / (p + r)
        if (tp + fp) and (tp + fn) and (p + r) > 0
        else (0.0 if (tp + fp) and (tp + fn) else float("nan"))
    )
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}


def best_f1(matches: list[ClassMatches]) -> dict:
    """The confidence threshold that maximizes pooled F1 (ties → the higher threshold)."""
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    tps = np.concatenate([m.tp for m in matches]) if matches else np.zeros(0, bool)
    npos = sum(m.npos for m in matches)
    if not scores.size or not npos:
        return {"conf": float("nan"), "f1": float("nan")}
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], np.cumsum(tps[order])
    last = np.r_[s[1:] != s[:-1], True]  # thresholds include all tied scores
    tp, n = t[last], (np.arange(1, len(s) + 1))[last]
    f1 = 2 * tp / (n + npos)
    i = int(np.argmax(f1))
    return {
        "conf": float(s[last][i]),
        "f1": float(f1[i]),
        "precision": float(tp[i] / n[i]),
        "recall": float(tp[i] / npos),
    }


def f1_at(matches: list[ClassMatches], conf: np.ndarray) -> list[float | None]:
    """Pooled F1 of ``matches`` at each threshold of ``conf`` (None without ground truth)."""
    npos = sum(m.npos for m in matches)
    if not npos:
        return [None] * len(conf)
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    tps = np.concatenate([m.tp for m in matches]).astype(np.int64) if matches else np.zeros(0)
    order = np.argsort(scores, kind="stable")
    s, cum = scores[order], np.r_[0, np.cumsum(tps[order][::-1])]  # TP among the top j
    n = len(s) - np.searchsorted(s, conf, side="left")  # detections at or above each threshold
    tp = cum[n]
    return (2 * tp / (n + npos)).tolist()


def precision_recall(
    gts: dict,
    dets: list[dict],
    names: list[str],
    conf: float = 0.5,
    iou: float = 0.5,
    plus_one: bool = False,
    curve_points: int = 101,
) -> dict:
    """Per-class and overall TP/FP/FN, precision, recall and F1 at ``conf`` and ``iou``;
    the F1-optimal confidence; PR curves sampled at ``curve_points`` recall levels."""
    matches = match_all(gts, dets, len(names), iou, plus_one)
    return prf_from_matches(matches, names, conf, iou, curve_points)


def prf_from_matches(
    matches: list[ClassMatches],
    names: list[str],
    conf: float = 0.5,
    iou: float = 0.5,
    curve_points: int = 101,
) -> dict:
    """Pooled ``precision``, ``recall``, ``F1``, ``TP``/``FP``/``FN`` at ``conf``; ``best_F1``
    and its confidence ``best_F1_conf``; ``per_class`` counts and rates; ``pr_curves``;
    ``f1_curve`` (pooled and per-class F1 at ``curve_points`` confidences from 0 to 1)."""
    per_class = {n: _prf(*_counts(m, conf)) for n, m in zip(names, matches, strict=True)}
    pooled = np.sum([[c["tp"], c["fp"], c["fn"]] for c in per_class.values()], axis=0)
    overall = _prf(*(int(v) for v in pooled))
    best = best_f1(matches)
    curves = {}
    grid = np.linspace(0, 1, curve_points)
    for n, m in zip(names, matches, strict=True):
        if not m.npos or not len(m.tp):
            curves[n] = {"recall": [], "precision": []}
            continue
        rec, prec = m.curve()
        env = np.maximum.accumulate(prec[::-1])[::-1]
        idx = np.searchsorted(rec, grid, side="left")
        curves[n] = {
            "recall": grid[idx < len(rec)].tolist(),
            "precision": env[idx[idx < len(rec)]].tolist(),
        }
    conf_grid = np.linspace(0, 1, curve_points)
    f1_curve = {
        "conf": conf_grid.tolist(),
        "overall": f1_at(matches, conf_grid),
        "per_class": {n: f1_at([m], conf_grid) for n, m in zip(names, matches, strict=True)},
    }
    return {
        "precision": overall["precision"],
        "recall": overall["recall"],
        "F1": overall["f1"],
        "TP": overall["tp"],
        "FP": overall["fp"],
        "FN": overall["fn"],
        "best_F1": best["f1"],
        "best_F1_conf": best["conf"],
        "settings": {"conf": conf, "iou": iou},
        "per_class": per_class,
        "pr_curves": curves,
        "f1_curve": f1_curve,
        "protocol": f"P/R/F1 at confidence >= {conf}, IoU >= {iou}, VOC devkit matching",
    }


def detection_outcomes(
    gts: dict, dets: list[dict], names: list[str], iou: float = 0.5, plus_one: bool = False
) -> list[tuple[float, bool]]:
    """(score, is_TP) of every non-ignored detection, all classes, for worked examples."""
    out = []
    for m in match_all(gts, dets, len(names), iou, plus_one):
        out += list(zip(m.scores.tolist(), m.tp.tolist(), strict=True))
    return out
