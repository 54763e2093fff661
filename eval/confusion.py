"""Detection confusion matrix: which class each object was taken for, background included.

Per image, detections at or above ``conf`` are matched to ground-truth boxes by IoU alone
(class-agnostic), greedily from the highest IoU down, each box and each detection at most once,
pairs below ``iou`` never. Row = true class, column = predicted class, the last of each being
*background*: a matched pair counts at [true, predicted] (the diagonal when the class is right),
an unmatched ground-truth box at [true, background] (missed), an unmatched detection at
[background, predicted] (a false alarm). Difficult boxes are neither counted nor missed, and a
detection matched to one is dropped. This is the matrix Ultralytics draws after validation.
"""

from __future__ import annotations

import numpy as np

from eval.iou import box_iou


def image_confusion(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    iou: float = 0.5,
    difficult: np.ndarray | None = None,
) -> np.ndarray:
    """One image's ``(K+1, K+1)`` counts (detections already filtered by confidence)."""
    k = num_classes
    m = np.zeros((k + 1, k + 1), np.int64)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    hard = np.zeros(len(gt_boxes), bool) if difficult is None else np.asarray(difficult, bool)
    used_gt = np.zeros(len(gt_boxes), bool)
    used_det = np.zeros(len(boxes), bool)
    if len(gt_boxes) and len(boxes):
        ious = box_iou(gt_boxes, boxes).numpy()
        gi, di = np.nonzero(ious >= iou)
        order = np.argsort(-ious[gi, di], kind="stable")
        for g, d in zip(gi[order], di[order], strict=True):
            if used_gt[g] or used_det[d]:
                continue
            used_gt[g] = used_det[d] = True
            if not hard[g]:
                m[gt_labels[g], labels[d]] += 1
    for g in np.flatnonzero(~used_gt & ~hard):
        m[gt_labels[g], k] += 1
    for d in np.flatnonzero(~used_det):
        m[k, labels[d]] += 1
    return m


def detection_confusion(
    gts: dict, dets: list[dict], names: list[str], iou: float = 0.5, conf: float = 0.25
) -> dict:
    """The matrix over every image of ``gts`` (``{image_id: {boxes, labels, difficult}}``)
    for ``dets`` (``{image_id, label, box, score}``), with its labels and settings."""
    by_image: dict = {}
    for d in dets:
        if d["score"] >= conf:
            by_image.setdefault(d["image_id"], []).append(d)
    total = np.zeros((len(names) + 1,) * 2, np.int64)
    for img, gt in gts.items():
        mine = by_image.get(img, [])
        total += image_confusion(
            gt["boxes"],
            np.asarray(gt["labels"], np.int64),
            np.asarray([d["box"] for d in mine], np.float64),
            np.asarray([d["label"] for d in mine], np.int64),
            len(names),
            iou,
            gt.get("difficult"),
        )
    return {
        "labels": [*names, "background"],
        "matrix": total.tolist(),
        "settings": {"iou": iou, "conf": conf},
        "protocol": f"objects by true (rows) and predicted (columns) class, detections with "
        f"confidence >= {conf} matched class-agnostically at IoU >= {iou}",
    }
