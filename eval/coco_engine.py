"""A vectorized NumPy COCO engine: the matching and accumulation of ``COCOeval`` on columns.

Exactly the rules of pycocotools (``evaluateImg`` + ``accumulate``), computed on arrays
instead of per (image, category) Python objects:

- detections of each (image, category) are sorted by score (stable) and cut at the largest
  ``maxDets``; smaller ``maxDets`` keep each group's first ``m`` (the API's per-group cut);
- a detection takes, in score order and per IoU threshold and area range, the unmatched
  non-ignored ground truth of highest IoU (ties: the later one in annotation order); only when
  none qualifies an ignored one (a crowd region, which any number may match, or a box outside
  the area range); a match to an annotation whose id is 0 counts as no match, as in the API;
- unmatched detections outside the area range are ignored; precision is made monotone from
  the end and read at the 101 recall points with ``searchsorted(..., 'left')``.

The greedy matching is sequential only among detections of one group that overlap some ground
truth by at least the lowest threshold; those are taken one rank at a time across every group
at once, every IoU threshold and area range in the same array operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNGS = np.array([[0, 1e5**2], [0, 32**2], [32**2, 96**2], [96**2, 1e5**2]], np.float64)
MATCHED, IGNORED = 1, 2  # bits of a detection's state per (area range, IoU threshold)
PAIRS_PER_BLOCK = 1 << 20  # (detection, ground truth) pairs scored at a time
STEP_PAIRS = 1 << 15  # candidate pairs matched in one array operation


@dataclass
class Columns:
    """One side of the problem as columns: image and category ids, areas, and (for ``gt``)
    ``crowd`` and annotation ``ids``; ``boxes`` are ``x, y, w, h`` for box IoU, ``rles`` the
    encoded masks for mask IoU; ``scores`` for detections."""

    image_id: np.ndarray
    category_id: np.ndarray
    area: np.ndarray
    boxes: np.ndarray | None = None
    rles: list | None = None
    scores: np.ndarray | None = None
    crowd: np.ndarray | None = None
    ids: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Columns:
        """These columns reordered/filtered by ``idx``, in place: one column is copied at a
        time and the old one released (the caller's object is the one changed)."""
        for k, v in vars(self).items():
            if v is not None:
                setattr(self, k, v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx])
        return self


@dataclass
class Result:
    precision: np.ndarray  # (T, R, K, A, M), -1 where undefined
    recall: np.ndarray  # (T, K, A, M)
    iou_thrs: np.ndarray = field(default_factory=lambda: IOU_THRS)
    rec_thrs: np.ndarray = field(default_factory=lambda: REC_THRS)
    max_dets: list[int] = field(default_factory=lambda: [1, 10, 100])
    cat_ids: list[int] = field(default_factory=list)


def evaluate(
    gt: Columns, dt: Columns, img_ids: np.ndarray, cat_ids: np.ndarray, max_dets: list[int]
) -> Result:
    """COCO ``precision``/``recall`` arrays of ``dt`` against ``gt`` over the sorted unique
    ``img_ids`` and ``cat_ids``; ``max_dets`` ascending. ``gt`` and ``dt`` are reordered and
    filtered in place (no second copy of millions of rows)."""
    img_ids, cat_ids = np.unique(img_ids), np.unique(cat_ids)
    if not (len(img_ids) and len(cat_ids)):
        raise ValueError(
            f"COCO evaluation: expected at least one image and one category, got "
            f"{len(img_ids)} images and {len(cat_ids)} categories"
        )
    n_img = len(img_ids)
    # ground truth in group order, annotation order inside a group
    g_idx = np.flatnonzero(_member(gt.image_id, img_ids) & _member(gt.category_id, cat_ids))
    g_grp = _group(gt, g_idx, img_ids, cat_ids)
    g_ord = np.argsort(g_grp, kind="stable")
    gt, g_grp = gt.take(g_idx[g_ord]), g_grp[g_ord]
    # detections by group, score descending (stable), cut at the largest maxDets (one copy)
    d_idx = np.flatnonzero(_member(dt.image_id, img_ids) & _member(dt.category_id, cat_ids))
    d_grp = _group(dt, d_idx, img_ids, cat_ids)
    d_ord = np.lexsort((-dt.scores[d_idx], d_grp))
    d_grp = d_grp[d_ord]
    rank = _rank_in_group(d_grp)
    keep = rank < max_dets[-1]
    dt, d_grp, rank = dt.take(d_idx[d_ord[keep]]), d_grp[keep], rank[keep]
    del d_idx, d_ord, keep

    n_grp = len(cat_ids) * n_img
    g_start = np.searchsorted(g_grp, np.arange(n_grp + 1))
    ignored = gt.crowd[:, None] | _outside(gt.area)  # (G, A)
    state = _match(gt, dt, g_grp, d_grp, g_start, ignored)
    outside = _outside(dt.area)
    for a in range(outside.shape[1]):  # unmatched detections outside the range: ignored
        state[:, a] |= (((state[:, a] & MATCHED) == 0) & outside[:, a, None]) * np.uint8(IGNORED)
    return _accumulate(dt, d_grp, rank, state, g_grp, ignored, n_img, cat_ids, max_dets)


def _group(cols: Columns, idx: np.ndarray, img_ids: np.ndarray, cat_ids: np.ndarray):
    """The (category, image) group number of the rows ``idx``, category-major."""
    cat = np.searchsorted(cat_ids, cols.category_id[idx])
    return cat * len(img_ids) + np.searchsorted(img_ids, cols.image_id[idx])


def _member(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Which of ``x`` are in the sorted, non-empty ``ids``."""
    return ids[np.minimum(np.searchsorted(ids, x), len(ids) - 1)] == x


def _outside(area: np.ndarray) -> np.ndarray:
    return (area[:, None] < AREA_RNGS[:, 0]) | (area[:, None] > AREA_RNGS[:, 1])


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal consecutive ``keys`` begins (``keys`` non-empty)."""
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def _rank_in_group(grp: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal (sorted) group keys."""
    n = len(grp)
    if not n:
        return np.zeros(0, np.int64)
    starts = _run_starts(grp)
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def _pairs(d_grp: np.ndarray, g_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of the same group, detections in their order."""
    cnt = g_start[d_grp + 1] - g_start[d_grp]
    d_idx = np.repeat(np.arange(len(d_grp)), cnt)
    first = np.repeat(g_start[d_grp], cnt)
    offset = np.arange(len(d_idx)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return d_idx, first + offset


def box_iou_pairs(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of box pairs (``x, y, w, h``) in the operation order of the COCO API's ``bbIou``
    (a crowd region's IoU is the intersection over the detection's area)."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _mask_iou_pairs(dt: Columns, gt: Columns, d_idx, g_idx, d_grp) -> np.ndarray:
    """Mask IoU of the pairs, one ``pycocotools.mask.iou`` call per group (its pairs are the
    full product of its detections and ground truth, detection-major)."""
    from pycocotools import mask as mask_utils

    iou = np.zeros(len(d_idx))
    grp = d_grp[d_idx]
    bounds = np.r_[_run_starts(grp), len(d_idx)]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        ds, gs = np.unique(d_idx[s:e]), np.unique(g_idx[s:e])
        m = mask_utils.iou([dt.rles[i] for i in ds], [gt.rles[j] for j in gs],
                           [int(c) for c in gt.crowd[gs]])  # fmt: skip
        iou[s:e] = np.asarray(m, np.float64).reshape(len(ds), len(gs)).ravel()
    return iou


def _match(gt: Columns, dt: Columns, g_grp, d_grp, g_start, ignored) -> np.ndarray:
    """Each detection's ``MATCHED`` / ``IGNORED`` bits, shaped (D, A, T)."""
    n_a, n_t = AREA_RNGS.shape[0], len(IOU_THRS)
    state = np.zeros((len(d_grp), n_a, n_t), np.uint8)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)
    d_idx, g_idx, iou = _candidates(gt, dt, d_grp, g_start, thr.min())
    if not len(d_idx):
        return state
    # order of each ground truth in its group for each area range: kept ones first (stable)
    local = np.arange(len(g_grp)) - g_start[g_grp]
    size = g_start[g_grp + 1] - g_start[g_grp]
    order = (local[:, None] + ignored * size[:, None]).astype(np.int32)  # (G, A)
    # candidate detections, taken one rank at a time across all groups
    det_u, first = np.unique(d_idx, return_index=True)
    crank = _rank_in_group(d_grp[det_u])
    step = np.repeat(crank, np.diff(np.r_[first, len(d_idx)]))
    by_step = np.argsort(step, kind="stable")
    d_idx, g_idx, iou, step = d_idx[by_step], g_idx[by_step], iou[by_step], step[by_step]
    taken = np.zeros((len(g_grp), n_a, n_t), bool)
    kept = ~ignored  # (G, A)
    bounds = np.searchsorted(step, np.arange(step[-1] + 2))
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        # detections of one step are independent (one per group): pieces bound the memory
        for lo, hi in _pieces(d_idx, s, e, STEP_PAIRS):
            d, g, v = d_idx[lo:hi], g_idx[lo:hi], iou[lo:hi]
            _take_step(d, g, v, thr, gt, taken, kept, ignored, order, state)
    return state


def _pieces(d_idx: np.ndarray, s: int, e: int, size: int):
    """``[s, e)`` cut into ranges of about ``size`` pairs, never inside one detection's."""
    lo = s
    while lo < e:
        hi = min(lo + size, e)
        while hi < e and d_idx[hi] == d_idx[hi - 1]:
            hi += 1
        yield lo, hi
        lo = hi


def _take_step(d, g, v, thr, gt: Columns, taken, kept, ignored, order, state) -> None:
    """One rank of candidate detections (one per group): each takes, per area range and IoU
    threshold, its best available ground truth (see the module's rules)."""
    seg = _run_starts(d)
    seg_of = np.repeat(np.arange(len(seg)), np.diff(np.r_[seg, len(d)]))
    avail = (v[:, None, None] >= thr) & (gt.crowd[g, None, None] | ~taken[g])  # (P, A, T)
    tier = np.where(avail, kept[g][:, :, None].astype(np.int8) + 1, np.int8(0))
    ok = avail & (tier == np.maximum.reduceat(tier, seg)[seg_of])
    vv = np.where(ok, v[:, None, None], -1.0)
    ok &= vv == np.maximum.reduceat(vv, seg)[seg_of]
    del vv, tier, avail
    pos = np.where(ok, order[g][:, :, None], np.int32(-1))
    chosen = ok & (pos == np.maximum.reduceat(pos, seg)[seg_of])  # one per (det, A, T)
    taken[g] |= chosen
    hit = np.logical_or.reduceat(chosen & (gt.ids[g] != 0)[:, None, None], seg)
    ig = np.logical_or.reduceat(chosen & ignored[g][:, :, None], seg)
    state[d[seg]] = hit * np.uint8(MATCHED) | ig * np.uint8(IGNORED)


def _candidates(gt: Columns, dt: Columns, d_grp, g_start, least: float):
    """The (detection, ground truth) pairs of a group whose IoU reaches ``least``, in
    detection order, scored a block of about ``PAIRS_PER_BLOCK`` pairs at a time."""
    cnt = g_start[d_grp + 1] - g_start[d_grp]
    ends = np.cumsum(cnt)
    cuts = np.searchsorted(ends, np.arange(PAIRS_PER_BLOCK, ends[-1] if len(ends) else 0,
                                           PAIRS_PER_BLOCK))  # fmt: skip
    out = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(d_grp)], strict=True):
        d_idx, g_idx = _pairs(d_grp[lo:hi], g_start)
        d_idx += lo
        if dt.boxes is not None:
            iou = box_iou_pairs(dt.boxes[d_idx], gt.boxes[g_idx], gt.crowd[g_idx])
        else:
            iou = _mask_iou_pairs(dt, gt, d_idx, g_idx, d_grp)
        c = iou >= least
        out.append((d_idx[c], g_idx[c], iou[c]))
    return tuple(np.concatenate([o[k] for o in out]) for k in range(3))  # >= 1 block


def _accumulate(dt, d_grp, rank, state, g_grp, ignored, n_img, cat_ids, max_dets):
    n_t, n_r, n_k = len(IOU_THRS), len(REC_THRS), len(cat_ids)
    n_a, n_m = AREA_RNGS.shape[0], len(max_dets)
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    g_cat, d_cat = g_grp // n_img, d_grp // n_img
    npig = np.zeros((n_k, n_a), np.int64)
    np.add.at(npig, g_cat, (~ignored).astype(np.int64))
    has_any = np.bincount(g_cat, minlength=n_k) + np.bincount(d_cat, minlength=n_k) > 0
    # per category: score descending, then image order, then rank in the image (stable);
    # a detection that is neither TP nor FP leaves the curve unchanged, so each maxDets keeps
    # only its own detections
    order = np.lexsort((rank, d_grp % n_img, -dt.scores, d_cat))
    bounds = np.searchsorted(d_cat[order], np.arange(n_k + 1))
    for k in np.flatnonzero(has_any):
        idx = order[bounds[k] : bounds[k + 1]]
        for m, cut in enumerate(max_dets):
            sel = idx[rank[idx] < cut]
            st = state[sel].reshape(len(sel), n_a * n_t)
            tp = np.cumsum(st == MATCHED, axis=0, dtype=np.int32)
            fp = np.cumsum(st == 0, axis=0, dtype=np.int32)
            q, rc = _curve(tp, fp, np.repeat(np.maximum(npig[k], 1), n_t))  # columns (A, T)
            live = npig[k] > 0  # areas without ground truth stay -1
            precision[:, :, k, live, m] = q.reshape(n_a, n_t, n_r)[live].transpose(1, 2, 0)
            recall[:, k, live, m] = rc.reshape(n_a, n_t)[live].T
    return Result(precision, recall, IOU_THRS, REC_THRS, list(max_dets), list(cat_ids))


def _curve(tp: np.ndarray, fp: np.ndarray, npig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at the recall points ``(C, R)`` and final recall ``(C,)`` from
    cumulative TP/FP counts of ``C`` columns ``(n, C)`` with ``npig[c]`` ground truth each, as
    the COCO API computes them: ``rc = tp / npig``,
    ``pr = tp / (fp + tp + eps)`` made monotone from the end, read at the first index whose
    recall reaches each point (``searchsorted(rc, rec_thrs, 'left')``), 0 past the end."""
    n, n_t = tp.shape
    if not n:
        return np.zeros((n_t, len(REC_THRS))), np.zeros(n_t)
    tpf = tp.astype(np.float64)
    pr = tpf / (fp + tpf + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
    # rc >= thr  <=>  tp >= j(thr): the smallest count whose float ratio reaches thr, so the
    # search runs on integers, every column at once (columns offset by n + 1)
    j = np.minimum(_first_count(npig), n + 1)  # (C, R)
    keys = (tp.T + (np.arange(n_t) * (n + 1))[:, None]).ravel()
    pos = np.searchsorted(keys, j + (np.arange(n_t) * (n + 1))[:, None], side="left")
    pos -= (np.arange(n_t) * n)[:, None]
    found = pos < n
    q = np.where(found, pr[np.minimum(pos, n - 1), np.arange(n_t)[:, None]], 0.0)
    return q, tpf[-1] / npig


def _first_count(npig: np.ndarray) -> np.ndarray:
    """``(C, R)``: for each column and recall point ``r``, the smallest integer ``c >= 0``
    with ``c / npig >= r`` in float64 (the quotient is monotone in ``c``, so the answer is
    next to ``r * npig``)."""
    npig = npig[:, None, None]
    base = np.maximum(np.floor(REC_THRS[None, :, None] * npig) - 1, 0).astype(np.int64)
    cand = base + np.arange(4)  # (C, R, 4)
    ok = cand / npig >= REC_THRS[None, :, None]
    return np.take_along_axis(cand, ok.argmax(2)[:, :, None], 2)[:, :, 0]
