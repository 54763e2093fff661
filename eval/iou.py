"""IoU primitives: boxes (torchvision.ops) and binary masks."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as _tv_box_iou


def box_iou(a, b) -> torch.Tensor:
    """IoU matrix ``(N, M)`` of ``x1, y1, x2, y2`` boxes (continuous areas, no "+1")."""
    a = torch.as_tensor(np.asarray(a, np.float64) if not torch.is_tensor(a) else a).reshape(-1, 4)
    b = torch.as_tensor(np.asarray(b, np.float64) if not torch.is_tensor(b) else b).reshape(-1, 4)
    return _tv_box_iou(a.double(), b.double())


def mask_iou(a, b) -> np.ndarray:
    """IoU matrix ``(N, M)`` of binary masks ``(N, H, W)`` and ``(M, H, W)``; 0 where both are
    empty (no overlap to speak of)."""
    a = np.asarray(a, bool).reshape(len(a), -1).astype(np.float64)
    b = np.asarray(b, bool).reshape(len(b), -1).astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"mask_iou: expected masks of the same size, got {a.shape[1]} and {b.shape[1]} pixels"
        )
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
