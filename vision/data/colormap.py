"""The PASCAL VOC colour map, and conversion between RGB masks and class-index masks."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

VOID_RGB = (224, 224, 192)


@lru_cache(maxsize=1)
def voc_colormap() -> np.ndarray:
    """The 256-entry VOC palette (``(256, 3)`` uint8): bit-interleaved class index → RGB."""
    cmap = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def mask_colors(num_indices: int, colors: list | None = None) -> list[tuple[int, int, int]]:
    """The RGB of each class-map index: the dataset's ``colors`` when it has them, else the
    VOC colour map (index 0, background in VOC's layout, is black)."""
    if colors:
        if len(colors) != num_indices:
            raise ValueError(f"colors: expected {num_indices} RGB triples, got {len(colors)}")
        return [tuple(int(v) for v in c) for c in colors]
    return [tuple(int(v) for v in c) for c in voc_colormap()[:num_indices]]


def rgb_to_index(
    rgb: np.ndarray, num_classes: int = 256, ignore_index: int = 255, where: str = "mask"
) -> np.ndarray:
    """Map an RGB mask in the VOC colour map to class indices; void (224,224,192) → ignore.

    Raises ``ValueError`` naming the first colour that is not in the map.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{where}: expected an RGB mask (H, W, 3), got shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    cmap = voc_colormap()[:num_classes].astype(np.int32)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    void = (VOID_RGB[0] << 16) | (VOID_RGB[1] << 8) | VOID_RGB[2]
    lut_keys = np.concatenate([keys, [void]])
    lut_vals = np.concatenate([np.arange(num_classes), [ignore_index]]).astype(np.uint8)
    order = np.argsort(lut_keys, kind="stable")
    sk, sv = lut_keys[order], lut_vals[order]
    pos = np.clip(np.searchsorted(sk, code), 0, len(sk) - 1)
    ok = sk[pos] == code
    if not ok.all():
        y, x = np.argwhere(~ok)[0]
        raise ValueError(
            f"{where}: expected colours of the VOC colour map ({num_classes} classes or void "
            f"{VOID_RGB}), got {tuple(int(v) for v in rgb[y, x])} at pixel (x={x}, y={y})"
        )
    return sv[pos]


def index_to_rgb(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Colour a class-index mask with the VOC palette; ``ignore_index`` becomes void colour."""
    out = voc_colormap()[mask]
    out[mask == ignore_index] = VOID_RGB
    return out
