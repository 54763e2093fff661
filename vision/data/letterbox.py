"""The evaluation and serving resize, with OpenCV alone: the longer side to ``size``
(bilinear), then zeros at the bottom and right up to ``size × size``.

The same pixels as the albumentations pipeline that training's geometry uses
(``LongestMaxSize`` + ``PadIfNeeded`` at the top left; a test compares them), without its
import (two seconds, torch with it) or its per-call overhead: batch prediction's decode
workers and the service's decode thread run only this.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.data.io import DecodeLimits, ImageError, decode_image


class Letterbox:
    """Images of any size → ``size × size`` arrays, with what maps results back (``info``:
    the original ``(h, w)`` and the scale)."""

    def __init__(self, size: int):
        self.size = size

    def one(self, img: np.ndarray) -> tuple[np.ndarray, dict]:
        h, w = img.shape[:2]
        scale = self.size / max(h, w)
        if round(min(h, w) * scale) < 1:
            raise ImageError(
                "unusable",
                "image",
                f"an image whose shorter side is at least 1 pixel after resizing the "
                f"longer side to {self.size}",
                f"{w}x{h}",
            )
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        out = np.zeros((self.size, self.size) + img.shape[2:], img.dtype)
        out[:nh, :nw] = img
        return out, {"orig_size": (h, w), "scale": scale}

    def __call__(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[dict]]:
        pairs = [self.one(img) for img in images]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def prepare(self, data: bytes, limits: DecodeLimits | None = None) -> tuple[np.ndarray, dict]:
        """Bytes → (letterboxed array, info), as ``Predictor.prepare``."""
        return self.one(decode_image(bytes(data), limits))
