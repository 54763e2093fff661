"""Predictions drawn on their images, for reports."""

from __future__ import annotations

import numpy as np
import torch


def sample_images(
    reader,
    preds: list[dict],
    names: list[str],
    task: str,
    n: int = 6,
    score_threshold: float = 0.5,
    background: bool = True,
    colors: list | None = None,
) -> list[np.ndarray]:
    """The first ``n`` images with predicted boxes (score ≥ threshold) or masks drawn; masks
    in the dataset's ``colors`` (one RGB per class-map index) when it has them, background
    (index 0 when ``background``) left undrawn."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from vision.data.colormap import mask_colors, voc_colormap
    from vision.data.sample import mask_classes

    out = []
    cmap = voc_colormap()
    for i in range(min(n, len(reader), len(preds))):
        img = torch.from_numpy(reader[i].image.copy()).permute(2, 0, 1).contiguous()
        p = {k: np.asarray(v) for k, v in preds[i].items()}
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
            classes = mask_classes(names, background)
            first = int(background)  # the background index is left undrawn
            masks = torch.stack([m == k for k in range(first, len(classes))])
            rgb = mask_colors(len(classes), colors)[first:]
            img = draw_segmentation_masks(img, masks, alpha=0.55, colors=rgb)
        out.append(img.permute(1, 2, 0).numpy())
    return out
