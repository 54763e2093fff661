"""Decoding an exported model's outputs with NumPy alone (no torch): FCOS detections, NMS,
and the mapping back to original pixels.

A process that runs an exported variant (a Ray model actor, ``vision predict`` on the
OpenVINO or ONNX Runtime variant) then never imports torch and torchvision: about 3 s of
start-up on two cores. The steps are torchvision's (``FCOS.postprocess_detections``,
``BoxLinearCoder.decode``, ``clip_boxes_to_image``, ``batched_nms``'s class offsets and
``nms``' greedy rule, in float32 with the same operation order), so boxes and labels equal
the torch decoder's; a score may differ from torch's in its last two bits (NumPy's ``exp`` is not
torch's vectorized one), and where two candidates tie, the first in array order wins.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None):
    """Indices kept by greedy NMS, best score first (stable on ties): a box is dropped when
    its IoU with a kept, better one is above ``iou``. IoU in float32 as torchvision's CPU
    kernel computes it, compared with the threshold in float64 as its ``double`` is.
    ``limit``: stop after that many are kept (the first ``limit`` of the whole answer)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i], F32) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for n, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        rest = order[n + 1 :]
        rest = rest[~suppressed[rest]]
        if not len(rest):
            break
        w = np.maximum(F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 for empty boxes:
            over = inter / (areas[i] + areas[rest] - inter)  # NaN, never above: kept
        suppressed[rest[over.astype(np.float64) > iou]] = True
    return np.asarray(keep, np.int64)


def batched_nms(boxes, scores, labels, iou: float, limit: int | None = None) -> np.ndarray:
    """Per-class NMS: each class's boxes moved apart by ``label * (max coordinate + 1)`` in
    float32 (torchvision's offsets, which it uses up to 1,000 boxes; above that it runs NMS
    class by class, and an answer can differ from this one where an offset rounds a
    coordinate), then one ``nms``."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    offsets = labels.astype(F32) * (boxes.max() + F32(1))
    return nms(boxes + offsets[:, None], scores, iou, limit)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return F32(1) / (F32(1) + np.exp(-x))


class FcosDecoder:
    """An FCOS head's exported outputs → detections at the input size, as the eager model
    decodes them, in two steps: ``__call__`` (per image: the candidates, boxes decoded) and
    ``select`` (per-class NMS, the best ``detections_per_img``). ``select`` takes the
    caller's score threshold: candidates below it are left out before NMS, which changes
    nothing above it (NMS visits candidates best first, so a lower one never decides the fate
    of a higher one) and spares the NMS of the many low ones. ``spec`` (made with torch by
    ``vision.deploy.runtime_spec``): ``anchors`` (N, 4), ``per_level`` (locations per level),
    ``score_thresh``, ``topk``, ``nms_thresh``, ``detections_per_img``, ``label_offset``."""

    def __init__(self, spec: dict, size: int):
        self.anchors = np.asarray(spec["anchors"], F32).reshape(-1, 4)
        self.per_level = [int(n) for n in spec["per_level"]]
        self.score_thresh = float(spec["score_thresh"])
        self.topk = int(spec["topk"])
        self.nms_thresh = float(spec["nms_thresh"])
        self.max_det = int(spec["detections_per_img"])
        self.offset = int(spec["label_offset"])
        self.size = size
        a = self.anchors
        self.ctr = F32(0.5) * (a[:, 0] + a[:, 2]), F32(0.5) * (a[:, 1] + a[:, 3])
        wh = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        self.box_size = np.stack([wh[0], wh[1], wh[0], wh[1]], 1)

    def __call__(self, outputs: list[np.ndarray]) -> list[dict]:
        logits, regression, ctrness = outputs
        return [self.image(logits[i], regression[i], ctrness[i]) for i in range(len(logits))]

    def image(self, logits: np.ndarray, regression: np.ndarray, ctrness: np.ndarray) -> dict:
        """One image's ``(N, K)``, ``(N, 4)``, ``(N, 1)`` outputs → its candidates: ``boxes``
        (float32, input pixels, clipped), ``scores``, ``labels`` (int64, the model's)."""
        k = logits.shape[1]
        scores = np.sqrt(sigmoid(logits.astype(F32)) * sigmoid(ctrness.astype(F32))).ravel()
        chosen, start = [], 0
        for n in self.per_level:  # each level's ``topk`` best above the threshold
            level = scores[start * k : (start + n) * k]
            idx = np.flatnonzero(level > self.score_thresh)
            if len(idx) > self.topk:
                idx = idx[np.argsort(-level[idx], kind="stable")[: self.topk]]
            chosen.append(idx + start * k)
            start += n
        idx = np.concatenate(chosen)
        at, labels = np.divmod(idx, k)
        rel = regression[at].astype(F32) * self.box_size[at]
        cx, cy = self.ctr[0][at], self.ctr[1][at]
        boxes = np.stack([cx - rel[:, 0], cy - rel[:, 1], cx + rel[:, 2], cy + rel[:, 3]], 1)
        np.clip(boxes, F32(0), F32(self.size), out=boxes)
        return {"boxes": boxes, "scores": scores[idx], "labels": labels}  # int64, as idx

    def select(self, candidates: dict, score_threshold: float = 0.0) -> dict:
        """One image's detections: the candidates at or above ``score_threshold``, per-class
        NMS, the best ``detections_per_img`` (labels as the dataset counts them)."""
        c = candidates
        at = np.flatnonzero(c["scores"] >= F32(score_threshold))
        boxes, scores, labels = c["boxes"][at], c["scores"][at], c["labels"][at]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh, self.max_det)
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep] - self.offset}


def detections_to_original(
    out: dict,
    info: dict,
    score_threshold: float = 0.0,
    max_detections: int | None = None,
    agnostic_iou: float | None = None,
) -> dict:
    """``vision.postprocess.detections_to_original`` on NumPy arrays: boxes above
    ``score_threshold`` in original pixels (clipped to the image), best first, at most
    ``max_detections``; ``agnostic_iou``: also suppress overlaps across classes."""
    h, w = info["orig_size"]
    keep = np.flatnonzero(out["scores"] >= F32(score_threshold))
    if agnostic_iou is not None and len(keep):
        keep = keep[nms(out["boxes"][keep], out["scores"][keep], agnostic_iou)]
    boxes = out["boxes"][keep].astype(F32) / F32(info["scale"])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    n = max_detections
    return {
        "boxes": boxes[:n],
        "scores": out["scores"][keep][:n],
        "labels": out["labels"][keep][:n],
    }
