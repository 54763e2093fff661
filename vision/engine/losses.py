"""Segmentation losses: pixel cross-entropy, optionally plus a soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vision.data.sample import IGNORE_INDEX

SEG_LOSSES = ("ce", "ce+dice")


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − mean soft Dice over the classes present in the batch's labels.

    ``logits`` (N, C, H, W), ``target`` (N, H, W) with ``IGNORE_INDEX`` for pixels that count
    for nothing. Each class weighs the same, as in mIoU, so small classes are not drowned by
    the background the way they are in pixel cross-entropy."""
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    prob = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(prob.dtype) * valid
    inter = (prob * onehot).sum((0, 2, 3))
    total = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce"):
    if kind not in SEG_LOSSES:
        raise ValueError(f"unknown segmentation loss {kind!r}: expected one of {SEG_LOSSES}")
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    if kind == "ce+dice":
        loss = loss + soft_dice(logits, target)
    return loss
