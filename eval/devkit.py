"""``VOCEvaluator``: VOC07 and VOC12 AP and P/R/F1 from one devkit matching of a model's boxes.

The ground truth is the evaluated split's samples (0-based continuous boxes, so no devkit "+1":
the numbers equal the devkit on the raw XML, see ``eval.voc``). Detections are collected per
batch and gathered across ``torch.distributed`` ranks before matching.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval.base import Evaluator, gather
from eval.confusion import detection_confusion
from eval.prf import prf_from_matches
from eval.voc import match_all, voc_from_matches

KEYS = ("voc07", "voc12", "prf")


class VOCEvaluator(Evaluator):
    """Reports ``voc07`` and ``voc12`` (``mAP``, ``per_class``) and ``prf`` (precision, recall,
    F1 at ``conf``; best F1; the class confusion matrix with background, ``eval.confusion``) at
    IoU ``iou``, each key only if listed in ``keys``."""

    def __init__(
        self,
        gts: dict,
        names: list[str],
        keys: tuple[str, ...] = KEYS,
        iou: float = 0.5,
        conf: float = 0.5,
        thresholds: str = "python",
    ):
        unknown = sorted(set(keys) - set(KEYS))
        if unknown:
            raise ValueError(f"VOCEvaluator keys: expected some of {KEYS}, got {unknown}")
        self.gts, self.names, self.keys = gts, list(names), tuple(keys)
        self.iou, self.conf, self.thresholds = iou, conf, thresholds
        self.reset()

    @classmethod
    def from_dataset(cls, reader, names: list[str], **kw) -> VOCEvaluator:
        gts = {
            s.image_id: {"boxes": s.boxes, "labels": s.labels, "difficult": s.difficult}
            for s in reader.samples
        }
        return cls(gts, names, **kw)

    def reset(self) -> None:
        self._dets: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            self._dets.append(
                (
                    inp["image_id"],
                    _np(out["boxes"]).astype(np.float64).reshape(-1, 4),
                    _np(out["scores"]).astype(np.float64).reshape(-1),
                    _np(out["labels"]).astype(np.int64).reshape(-1),
                )
            )

    def evaluate(self) -> dict[str, dict[str, Any]]:
        dets = [
            {"image_id": img, "label": int(k), "box": b, "score": float(s)}
            for part in gather(self._dets)
            for img, boxes, scores, labels in part
            for b, s, k in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
        ]
        matches = match_all(self.gts, dets, len(self.names), self.iou, plus_one=False)
        out: dict[str, dict[str, Any]] = {}
        for metric in ("voc07", "voc12"):
            if metric in self.keys:
                out[metric] = voc_from_matches(
                    matches, self.names, self.iou, metric, self.thresholds
                )
        if "prf" in self.keys:
            out["prf"] = prf_from_matches(matches, self.names, self.conf, self.iou)
            out["prf"]["confusion"] = detection_confusion(self.gts, dets, self.names, self.iou)
        return out


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
