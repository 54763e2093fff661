"""The teacher's logits computed once before training (``--kd-cache``, segmentation).

A segmentation training view differs from the evaluation view of its image in two things
only: an optional horizontal flip (after the fixed longest-side resize and pad) and colour
jitter. So the teacher's logits of every training image and of its mirror image, computed once,
are its answer for every view of every epoch except for the jitter: the teacher sees the
un-jittered colours. This is the trade of offline soft labels (Shen & Xing, ECCV 2022, "A Fast
Knowledge Distillation Framework for Visual Recognition", store the teacher's outputs once and
replay them with each view's augmentation parameters). Training then runs no teacher forward
pass, so a distilled step costs what a step of the student alone costs, and the one pass over
the training set is the whole price of the teacher.

Memory: ``N x 2 x classes x size²`` float16 values (CamVid at 320 px: 1.7 GB), held in the
training process and read by forked loader workers without copying.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from vision.data.transforms import SegmentationTransform, TransformedDataset


@torch.no_grad()
def teacher_logits(
    teacher: torch.nn.Module,
    reader,
    size: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    batch: int = 8,
) -> torch.Tensor:
    """``(N, 2, K, size, size)`` float16 on the CPU: the teacher's logits of every item of
    ``reader`` in the evaluation geometry (``[:, 0]``) and of its mirror image (``[:, 1]``)."""
    teacher.eval()
    tf = SegmentationTransform(size)
    cache: torch.Tensor | None = None
    for i in range(0, len(reader), batch):
        idx = range(i, min(i + batch, len(reader)))
        x = torch.stack([tf(reader[j])[0] for j in idx]).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = teacher(torch.cat([x, x.flip(-1)]))
        if out.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"--kd-cache: expected teacher logits of the input's size {tuple(x.shape[-2:])}, "
                f"got {tuple(out.shape[-2:])}"
            )
        out = out.float().view(2, len(idx), *out.shape[1:]).transpose(0, 1)
        if cache is None:
            cache = torch.empty((len(reader), 2, *out.shape[2:]), dtype=torch.float16)
        cache[i : i + len(idx)] = out.to("cpu", torch.float16)
    if cache is None:
        raise ValueError("--kd-cache: expected training images, got an empty training split")
    return cache


class CachedTeacherDataset(TransformedDataset):
    """Training items ``(image, mask, teacher_logits)``: the cached logits of the view's
    orientation (the pipeline reports whether it mirrored the image)."""

    def __init__(self, reader, transform: SegmentationTransform, logits, seed: int | None = None):
        if len(logits) != len(reader):
            raise ValueError(
                f"--kd-cache: expected logits for each of {len(reader)} images, got {len(logits)}"
            )
        super().__init__(reader, transform, seed)
        self.logits = logits

    def __getitem__(self, i: int):
        self.reseed(i)
        image, mask, flipped = self.transform.flipped(self.reader[i])
        return image, mask, self.logits[i, int(flipped)].clone()  # a copy: not a view of all


def cached_teacher_dataset(
    dataset: TransformedDataset,
    teacher: torch.nn.Module,
    device: torch.device,
    amp: torch.dtype | None = None,
    log: Callable = print,
) -> CachedTeacherDataset:
    """``dataset`` (a segmentation training set) with the teacher's logits cached."""
    t0 = time.perf_counter()
    reader, tf = dataset.reader, dataset.transform
    logits = teacher_logits(teacher, reader, tf.size, device, amp)
    log(
        f"[train] --kd-cache: teacher logits of {len(reader)} training images and their mirror "
        f"images in {time.perf_counter() - t0:.1f} s ({logits.nbytes / 2**30:.2f} GiB float16)"
    )
    return CachedTeacherDataset(reader, tf, logits, dataset.seed)
