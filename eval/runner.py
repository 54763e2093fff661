"""Evaluate a predictor on a dataset split under every protocol of its task."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.coco import coco_evaluate, coco_gt_from_dataset
from eval.prf import precision_recall
from eval.seg import ConfusionMatrix, seg_metrics
from eval.voc import voc_evaluate
from vision.predictor import Predictor


def predict_dataset(predictor: Predictor, reader, batch: int = 8) -> list[dict]:
    """Predictions for every sample of ``reader`` (original pixel coordinates, numpy)."""
    out = []
    for i in tqdm(range(0, len(reader), batch), desc="predict", leave=False, mininterval=2.0):
        images = [reader[j].image for j in range(i, min(i + batch, len(reader)))]
        for r in predictor(images):
            out.append({k: v.numpy() for k, v in r.items()})
    return out


def detection_metrics(reader, preds: list[dict], names: list[str]) -> dict:
    """COCO (bbox), VOC07 11-point, VOC all-point, and P/R/F1 at confidence 0.5, IoU 0.5."""
    gt = coco_gt_from_dataset(reader, names)
    dets, voc_dets, gts = [], [], {}
    for s, im, p in zip(reader.samples, gt["images"], preds, strict=True):
        gts[im["id"]] = {"boxes": s.boxes, "labels": s.labels, "difficult": s.difficult}
        for b, sc, lab in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
        ):
            dets.append(
                {
                    "image_id": im["id"],
                    "category_id": int(lab) + 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": sc,
                }
            )
            voc_dets.append({"image_id": im["id"], "label": int(lab), "box": b, "score": sc})
    # boxes are 0-based continuous: without "+1" this equals the devkit on the raw XML
    return {
        "coco": coco_evaluate(gt, dets, "bbox"),
        "voc07": voc_evaluate(gts, voc_dets, names, 0.5, "voc07", plus_one=False),
        "voc12": voc_evaluate(gts, voc_dets, names, 0.5, "voc12", plus_one=False),
        "prf": precision_recall(gts, voc_dets, names, conf=0.5, iou=0.5),
    }


def segmentation_metrics(reader, preds: list[dict], names: list[str]) -> dict:
    cm = ConfusionMatrix(len(names) + 1)
    for i, p in enumerate(preds):
        cm.update(reader[i].mask, p["mask"], where=str(reader.samples[i].path))
    m = seg_metrics(cm.hist, ["background", *names])
    m["confusion"] = cm.hist.tolist()
    return m


def evaluate_model(predictor: Predictor, reader, names: list[str]) -> dict:
    preds = predict_dataset(predictor, reader)
    if predictor.task == "detection":
        return {"metrics": detection_metrics(reader, preds, names), "predictions": preds}
    return {"metrics": {"seg": segmentation_metrics(reader, preds, names)}, "predictions": preds}


def dataset_hash(reader) -> str:
    """SHA-1 over the split's annotation and mask files (and image names), in order."""
    h = hashlib.sha1()
    for s in reader.samples:
        h.update(str(s.path.name).encode())
        h.update(s.boxes.tobytes())
        h.update(s.labels.tobytes())
        if s.mask_path is not None and Path(s.mask_path).is_file():
            h.update(Path(s.mask_path).read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sample_images(
    reader, preds: list[dict], names: list[str], task: str, n: int = 6, score_threshold: float = 0.5
) -> list[np.ndarray]:
    """The first ``n`` images with predicted boxes (score ≥ threshold) or masks drawn."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from vision.data.colormap import voc_colormap

    out = []
    cmap = voc_colormap()
    for i in range(min(n, len(reader))):
        img = torch.from_numpy(reader[i].image.copy()).permute(2, 0, 1).contiguous()
        p = preds[i]
        if task == "detection":
            keep = p["scores"] >= score_threshold
            labels = [
                f"{names[k]} {s:.2f}"
                for k, s in zip(p["labels"][keep], p["scores"][keep], strict=True)
            ]
            colors = [tuple(int(c) for c in cmap[k + 1]) for k in p["labels"][keep]]
            img = draw_bounding_boxes(
                img, torch.from_numpy(p["boxes"][keep]), labels, colors=colors, width=2
            )
        else:
            m = torch.from_numpy(p["mask"]).long()
            masks = torch.stack([m == k for k in range(1, len(names) + 1)])
            colors = [tuple(int(c) for c in cmap[k]) for k in range(1, len(names) + 1)]
            img = draw_segmentation_masks(img, masks, alpha=0.55, colors=colors)
        out.append(img.permute(1, 2, 0).numpy())
    return out
