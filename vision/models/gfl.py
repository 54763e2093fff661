"""Generalized Focal Loss (Li et al., NeurIPS 2020) with ATSS assignment (Zhang et al., CVPR
2020), as NanoDet trains its head.

- **ATSS**: per level, the 9 cells whose centres are nearest each object's centre are
  candidates; those whose cell box (5 strides wide) overlaps the object by at least the mean
  plus the standard deviation of the candidates' IoUs, with the centre inside the object, are
  positives; a cell claimed by several objects goes to the one it overlaps most.
- **Quality focal loss** (weight 1): binary cross-entropy of every class score against a soft
  target (the IoU of the predicted box with its object at the object's class, 0 elsewhere),
  scaled by ``|target - score|^2``; divided by the positive count.
- **GIoU** (weight 2) and **distribution focal loss** (weight 0.25, the two bins around each
  side's true distance), each positive weighted by its highest class score; divided by the sum
  of those weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss

TOPK = 9
CELL_SCALE = 5.0
WEIGHTS = {"loss_qfl": 1.0, "loss_bbox": 2.0, "loss_dfl": 0.25}


def atss_assign(centers: torch.Tensor, strides: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The object index each cell is assigned to (``-1``: background), ``[N]``."""
    n, m = len(centers), len(gt)
    assigned = torch.full((n,), -1, dtype=torch.long, device=centers.device)
    if m == 0:
        return assigned
    half = strides[:, None] * CELL_SCALE / 2
    cells = torch.cat([centers - half, centers + half], 1)
    ious = box_iou(cells, gt)  # [N, M]
    dist = torch.cdist(centers, (gt[:, :2] + gt[:, 2:]) / 2)  # [N, M]
    cand = []
    for s in strides.unique():
        idx = (strides == s).nonzero(as_tuple=True)[0]
        k = min(TOPK, len(idx))
        cand.append(idx[dist[idx].topk(k, dim=0, largest=False).indices])
    cand = torch.cat(cand)  # [C, M]
    cand_iou = ious.gather(0, cand)
    thr = cand_iou.mean(0) + cand_iou.std(0, unbiased=len(cand) > 1)
    c = centers[cand]  # [C, M, 2]
    inside = (
        torch.stack(
            [
                c[..., 0] - gt[:, 0],
                c[..., 1] - gt[:, 1],
                gt[:, 2] - c[..., 0],
                gt[:, 3] - c[..., 1],
            ],
            -1,
        ).amin(-1)
        > 0.01
    )
    pos = (cand_iou >= thr) & inside
    overlaps = torch.full((n, m), -1.0, device=centers.device)
    cols = torch.arange(m, device=centers.device).expand_as(cand)
    overlaps[cand[pos], cols[pos]] = ious[cand[pos], cols[pos]]
    best, which = overlaps.max(1)
    return torch.where(best >= 0, which, assigned)


def quality_focal(logits: torch.Tensor, target: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    score = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce * (target - score).abs().pow(beta)


def distribution_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[P, bins]`` logits, ``[P]`` real-valued targets in bins → ``[P]`` losses."""
    left = target.floor().long()
    w_right = target - left
    return (
        F.cross_entropy(logits, left, reduction="none") * (1 - w_right)
        + F.cross_entropy(logits, left + 1, reduction="none") * w_right
    )


def gfl_loss(cls_logits, box_dist, centers, strides, targets, distances) -> dict:
    """The three weighted losses for a batch (``targets``: ``boxes`` in input pixels,
    ``labels`` 0..K-1); ``distances`` maps box logits to expected bins."""
    bins = box_dist.shape[-1] // 4
    qfl = cls_logits.new_zeros(())
    box = cls_logits.new_zeros(())
    dfl = cls_logits.new_zeros(())
    num_pos, weight_sum = 0, cls_logits.new_zeros(())
    for logits, dist_logits, t in zip(cls_logits, box_dist, targets, strict=True):
        gt = t["boxes"].to(centers)
        assigned = atss_assign(centers, strides, gt)
        pos = (assigned >= 0).nonzero(as_tuple=True)[0]
        soft = torch.zeros_like(logits)
        if len(pos):
            obj = gt[assigned[pos]]
            d = distances(dist_logits[pos])
            s = strides[pos, None]
            pred = torch.cat([centers[pos] - d[:, :2] * s, centers[pos] + d[:, 2:] * s], 1)
            iou = box_iou(pred.detach(), obj).diagonal().clamp(min=0)
            soft[pos, t["labels"].to(pos.device)[assigned[pos]]] = iou
            weight = logits[pos].detach().sigmoid().amax(1)
            box = box + (generalized_box_iou_loss(pred, obj, reduction="none") * weight).sum()
            true = torch.cat([centers[pos] - obj[:, :2], obj[:, 2:] - centers[pos]], 1) / s
            true = true.clamp(0, bins - 1 - 0.01).flatten()
            side = distribution_focal(dist_logits[pos].reshape(-1, bins), true)
            dfl = dfl + (side.view(-1, 4).mean(1) * weight).sum()
            weight_sum = weight_sum + weight.sum()
            num_pos += len(pos)
        qfl = qfl + quality_focal(logits, soft).sum()
    weight_sum = weight_sum.clamp(min=1e-6)
    return {
        "loss_qfl": WEIGHTS["loss_qfl"] * qfl / max(num_pos, 1),
        "loss_bbox": WEIGHTS["loss_bbox"] * box / weight_sum,
        "loss_dfl": WEIGHTS["loss_dfl"] * dfl / weight_sum,
    }
