"""One prediction drawn on its image: boxes with class and score, or the class map blended in.

Reports (``eval.draw``), batch prediction's ``--save-drawn`` overlays and the service's tests
draw through here, so a class has the same colour everywhere: the dataset's ``colors`` for a
segmenter when it has them, else the VOC colour map (detections: class ``k`` in the colour of
map index ``k + 1``, as VOC's masks colour it).
"""

from __future__ import annotations

import numpy as np
import torch

from vision.data.colormap import mask_colors, voc_colormap


def box_colors(labels) -> list[tuple[int, int, int]]:
    """The RGB of each detection's class."""
    cmap = voc_colormap()
    return [tuple(int(c) for c in cmap[int(k) + 1]) for k in labels]


def draw_prediction(
    image: np.ndarray,
    result: dict,
    names: list[str],
    score_threshold: float = 0.0,
    mask_names: list[str] | None = None,
    colors: list | None = None,
    background: bool = True,
    alpha: float = 0.55,
) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with ``result`` drawn: a detector's ``boxes``/``scores``/
    ``labels`` (those at or above ``score_threshold``, labelled ``name score``), or a
    segmenter's ``mask`` (the class of each pixel, ``mask_names`` naming each index; the
    background index 0 left undrawn when ``background``)."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    img = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).contiguous()
    p = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in result.items()}
    if "mask" not in p:
        keep = p["scores"] >= score_threshold
        labels = [
            f"{names[int(k)]} {s:.2f}"
            for k, s in zip(p["labels"][keep], p["scores"][keep], strict=True)
        ]
        boxes = torch.from_numpy(np.asarray(p["boxes"][keep], np.float32).reshape(-1, 4))
        drawn = draw_bounding_boxes(
            img, boxes, labels, colors=box_colors(p["labels"][keep]), width=2
        )
        return drawn.permute(1, 2, 0).numpy()
    classes = mask_names or names
    first = int(background)  # the background index is left undrawn
    m = torch.from_numpy(p["mask"].astype(np.int64))
    if len(classes) <= first:
        return image
    masks = torch.stack([m == k for k in range(first, len(classes))])
    rgb = mask_colors(len(classes), colors)[first:]
    drawn = draw_segmentation_masks(img, masks, alpha=alpha, colors=rgb)
    return drawn.permute(1, 2, 0).numpy()
