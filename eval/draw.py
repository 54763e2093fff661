"""Predictions drawn on their images, for reports."""

from __future__ import annotations

import numpy as np


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
    from vision.data.sample import mask_classes
    from vision.draw import draw_prediction

    classes = mask_classes(names, background)
    return [
        draw_prediction(
            reader[i].image,
            preds[i],
            names,
            score_threshold,
            mask_names=classes,
            colors=colors,
            background=background,
        )
        for i in range(min(n, len(reader), len(preds)))
    ]
