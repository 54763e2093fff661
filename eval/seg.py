"""Semantic segmentation metrics from one confusion matrix.

The matrix is one ``bincount`` over ``num_classes * gt + pred`` on pixels whose ground truth is
neither ``ignore_index`` nor out of range. Metrics follow the FCN authors' ``score.py``:
pixel accuracy, mean class accuracy, per-class IoU ``TP / (TP + FP + FN)``, mIoU = nan-mean
of IoU (a class that occurs in neither ground truth nor prediction has IoU NaN and is left
out), and frequency-weighted IoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from eval.base import Evaluator


class MaskMismatch(ValueError):
    """A prediction that cannot be scored against its ground truth: ``expected``/``got``."""

    def __init__(self, where: str, expected: str, got: str):
        super().__init__(f"{where}: expected {expected}, got {got}")
        self.expected, self.got = expected, got


class ConfusionMatrix:
    """Accumulates ``hist[gt, pred]`` over batches; reduces across ranks in ``compute``."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.n, self.ignore_index = num_classes, ignore_index
        self.hist = np.zeros((num_classes, num_classes), np.int64)

    def update(self, gt, pred, where: str = "mask") -> None:
        gt, pred = _np(gt), _np(pred)
        if gt.shape != pred.shape:
            raise MaskMismatch(
                where,
                "prediction and ground truth of the same size",
                f"{pred.shape} and {gt.shape}",
            )
        valid = (gt != self.ignore_index) & (gt >= 0) & (gt < self.n)
        g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.n):
            bad = np.unique(p[(p < 0) | (p >= self.n)])[:5].tolist()
            raise MaskMismatch(where, f"predicted classes 0..{self.n - 1}", str(bad))
        self.hist += np.bincount(self.n * g + p, minlength=self.n**2).reshape(self.n, self.n)

    def reduce(self) -> np.ndarray:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.from_numpy(self.hist.copy())
            dist.all_reduce(t)
            return t.numpy()
        return self.hist


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def seg_metrics(hist: np.ndarray, names: list[str] | None = None) -> dict:
    """Pixel accuracy, mean accuracy, per-class IoU, mIoU and fwIoU from ``hist[gt, pred]``."""
    hist = hist.astype(np.float64)
    tp = np.diag(hist)
    gt_sum, pred_sum, total = hist.sum(1), hist.sum(0), hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_cls = tp / gt_sum
        iou = tp / (gt_sum + pred_sum - tp)
    freq = gt_sum / total if total else np.zeros_like(gt_sum)
    names = names or [str(i) for i in range(len(hist))]
    return {
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": _nanmean(acc_cls),
        "mIoU": _nanmean(iou),
        "fwIoU": float((freq[freq > 0] * iou[freq > 0]).sum()) if total else float("nan"),
        "per_class_iou": {n: float(v) for n, v in zip(names, iou, strict=True)},
        "per_class_acc": {n: float(v) for n, v in zip(names, acc_cls, strict=True)},
        "protocol": "confusion matrix over non-ignored pixels; mIoU = nan-mean of per-class IoU",
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


class SegEvaluator(Evaluator):
    """mIoU family for a segmenter, reported under ``seg``: ``inputs[i]['mask']`` vs
    ``outputs[i]['mask']`` (class indices); the result also holds the ``confusion`` matrix."""

    primary = "seg/mIoU"

    def __init__(self, num_classes: int, names: list[str] | None = None, ignore_index: int = 255):
        self.num_classes, self.names, self.ignore_index = num_classes, names, ignore_index
        self.reset()

    def reset(self) -> None:
        self.cm = ConfusionMatrix(self.num_classes, self.ignore_index)

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            self.cm.update(inp["mask"], out["mask"], where=str(inp.get("image_id", "mask")))

    def evaluate(self) -> dict:
        hist = self.cm.reduce()
        return {"seg": {**seg_metrics(hist, self.names), "confusion": hist.tolist()}}


def evaluate_folders(
    gt_dir: Path | str,
    pred_dir: Path | str,
    num_classes: int,
    ignore_index: int = 255,
    names: list[str] | None = None,
) -> dict:
    """Pair PNG masks by file stem and score them (palette/index or VOC-colour RGB masks: the
    colours of the first ``num_classes`` VOC classes, void read as ``ignore_index``; any other
    colour is an error). A ``<stem>_target``/``<stem>_pred`` naming pairs too. Unpaired files
    are an error."""
    from vision.data.io import read_mask
    from vision.errors import DataError

    gt_files, pred_files = _index(Path(gt_dir), "_target"), _index(Path(pred_dir), "_pred")
    if not gt_files:
        raise DataError(str(gt_dir), "ground-truth PNG masks", "no PNG files")
    missing = sorted(set(gt_files) - set(pred_files))
    extra = sorted(set(pred_files) - set(gt_files))
    if missing or extra:
        raise DataError(
            f"{pred_dir}",
            "one prediction per ground-truth mask (paired by stem)",
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unmatched {extra[:5]}{'...' if len(extra) > 5 else ''}",
        )
    cm = ConfusionMatrix(num_classes, ignore_index)
    for stem in sorted(gt_files):
        gt = read_mask(gt_files[stem], num_classes, ignore_index)
        pred = read_mask(pred_files[stem], num_classes, ignore_index)
        try:
            cm.update(gt, pred)  # a mismatch is named by the prediction's file below
        except MaskMismatch as e:
            raise DataError(
                str(pred_files[stem]), f"a mask matching its ground truth: {e.expected}", e.got
            ) from e
    out = seg_metrics(cm.hist, names)
    out["images"] = len(gt_files)
    return out


def _index(folder: Path, suffix: str) -> dict[str, Path]:
    from vision.errors import DataError

    if not folder.is_dir():
        raise DataError(str(folder), "a folder of PNG masks", "no such folder")
    files = {}
    for p in sorted(folder.glob("*.png")):
        stem = p.stem[: -len(suffix)] if p.stem.endswith(suffix) else p.stem
        files[stem] = p
    return files
