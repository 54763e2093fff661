"""Samples that teach: each validation image scored on its own while the split is evaluated,
then the worst ones and a few typical ones drawn with their ground truth beside the prediction.

Per image: a detector's AP at IoU 0.5 (VOC all-point, the classes pooled; an image without
ground truth scores 1 with no detection at or above 0.5, else 0); a segmenter's mean IoU over
the classes in its ground truth or prediction (void left out).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from eval.voc import match_all, voc_ap

GAP = 8  # pixels between ground truth and prediction
HEADER = 16


def detection_quality(sample, output, num_classes: int) -> float:
    boxes = np.asarray(_np(output["boxes"]), np.float64).reshape(-1, 4)
    scores = np.asarray(_np(output["scores"]), np.float64).reshape(-1)
    labels = np.asarray(_np(output["labels"]), np.int64).reshape(-1)
    real = ~np.asarray(sample.difficult, bool)
    if not real.any():
        return 0.0 if (scores >= 0.5).any() else 1.0
    gts = {0: {"boxes": sample.boxes, "labels": sample.labels, "difficult": sample.difficult}}
    dets = [
        {"image_id": 0, "label": int(k), "box": b, "score": float(s)}
        for b, s, k in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
    ]
    matches = match_all(gts, dets, num_classes, 0.5, plus_one=False)
    s = np.concatenate([m.scores for m in matches])
    tp = np.concatenate([m.tp for m in matches])
    npos = sum(m.npos for m in matches)
    order = np.argsort(-s, kind="stable")
    ctp = np.cumsum(tp[order])
    rec = ctp / npos
    prec = ctp / np.arange(1, len(order) + 1)
    return voc_ap(rec, prec, "voc12") if len(order) else 0.0


def segmentation_quality(sample, output, void: int = 255) -> float:
    gt = np.asarray(sample.mask)
    pred = np.asarray(_np(output["mask"]))
    valid = gt != void
    g, p = gt[valid], pred[valid]
    ious = []
    for k in np.union1d(np.unique(g), np.unique(p)):
        inter = np.count_nonzero((g == k) & (p == k))
        union = np.count_nonzero((g == k) | (p == k))
        ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


class Quality:
    """An ``observe`` hook of the evaluation pass: each image's quality, in split order."""

    def __init__(self, task: str, num_classes: int):
        self.task, self.num_classes, self.values = task, num_classes, []

    def __call__(self, samples, outputs) -> None:
        for s, o in zip(samples, outputs, strict=True):
            q = (
                detection_quality(s, o, self.num_classes)
                if self.task == "detection"
                else segmentation_quality(s, o)
            )
            self.values.append(q)

    def choose(self, worst: int = 4, typical: int = 2) -> list[tuple[int, str, float]]:
        """(index, "worst" or "typical", quality): the lowest, then those nearest the median."""
        q = np.asarray(self.values, np.float64)
        order = np.argsort(q, kind="stable")
        low = [int(i) for i in order[:worst]]
        rest = [int(i) for i in order[worst:]]
        med = float(np.median(q)) if len(q) else 0.0
        mid = sorted(rest, key=lambda i: (abs(q[i] - med), i))[:typical]
        return [(i, "worst", float(q[i])) for i in low] + [
            (i, "typical", float(q[i])) for i in sorted(mid)
        ]


def side_by_side(
    sample,
    pred: dict,
    names: list[str],
    score_threshold: float = 0.3,
    mask_names: list[str] | None = None,
    colors: list | None = None,
    background: bool = True,
) -> np.ndarray:
    """Ground truth (left) beside the prediction (right), each under a one-line header."""
    from vision.draw import draw_prediction

    if "mask" in pred:
        truth = {"mask": np.asarray(sample.mask, np.int64)}  # void (255) matches no class
    else:
        keep = ~np.asarray(sample.difficult, bool)
        truth = {
            "boxes": np.asarray(sample.boxes, np.float32)[keep],
            "scores": np.ones(int(keep.sum()), np.float32),
            "labels": np.asarray(sample.labels, np.int64)[keep],
        }
    kw = {"mask_names": mask_names, "colors": colors, "background": background}
    left = draw_prediction(sample.image, truth, names, 0.0, **kw)
    right = draw_prediction(sample.image, pred, names, score_threshold, **kw)
    h, w = left.shape[:2]
    canvas = Image.new("RGB", (2 * w + GAP, h + HEADER), "white")
    canvas.paste(Image.fromarray(left), (0, HEADER))
    canvas.paste(Image.fromarray(right), (w + GAP, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), "ground truth", fill="black")
    draw.text((w + GAP + 2, 2), f"prediction (score >= {score_threshold:g})", fill="black")
    return np.asarray(canvas)


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def drawn_samples(predictor, reader, quality: Quality, worst: int = 4, typical: int = 2):
    """The chosen images drawn (ground truth | prediction) with captions, and the legend of
    their colours: ``([{"image", "caption", "index", "kind", "quality"}], {"names", "rgb"})``."""
    from pathlib import Path

    from vision.data.colormap import mask_colors
    from vision.data.sample import mask_classes
    from vision.draw import box_colors

    meta = predictor.meta
    names = list(meta.class_names)
    seg = predictor.task == "segmentation"
    classes = mask_classes(names, meta.background) if seg else names
    measure = "mean IoU" if seg else "AP at IoU 0.5"
    out = []
    for index, kind, q in quality.choose(worst, typical):
        sample = reader[index]
        pred = predictor([sample.image])[0]
        image = side_by_side(sample, pred, names, 0.3, classes, meta.colors, meta.background)
        caption = f"{kind}: {Path(str(sample.path)).name}, {measure} {q:.3f}"
        out.append({"image": image, "caption": caption, "index": index, "kind": kind, "quality": q})
    if seg:
        first = int(meta.background)
        rgb = mask_colors(len(classes), meta.colors)[first:]
        legend = {"names": classes[first:], "rgb": [list(c) for c in rgb]}
    else:
        legend = {"names": names, "rgb": [list(c) for c in box_colors(range(len(names)))]}
    return out, legend
