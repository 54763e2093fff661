"""The teacher's outputs computed once before training (``--kd-cache``).

A training view differs from the evaluation view of its image in two things only: an optional
horizontal flip (after the fixed longest-side resize and pad) and colour jitter. So what the
distillation loss reads of the teacher (a segmenter's logits; a detector's FPN features, class
logits and, for box imitation, box regression, ``Distiller.teacher_outputs``), computed once
for every training image and its mirror image, is the teacher's answer for every view of every
epoch except for the jitter: the teacher sees the un-jittered colours. This is the trade of
offline soft labels (Shen & Xing, ECCV 2022, "A Fast Knowledge Distillation Framework for
Visual Recognition": store the teacher's outputs once, replay them with each view's
augmentation parameters). Training then
runs no teacher forward pass: a distilled step costs the student's step and the loss, and one
pass over the training set is the whole price of the teacher.

Memory: float16, ``N x 2 x`` the outputs of one image (a CamVid segmenter at 320 px: 1.5 GiB
in all; a detector's FPN and class logits at 160 px: 0.14 MB per image), held in the training
process and read by forked loader workers without copying.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from vision.data.transforms import TransformedDataset


def view_batches(reader, transform, n: int | None = None, batch: int = 8):
    """``(indices, images)`` batches of ``transform(reader[i])``'s images for the first ``n``
    items of ``reader`` (all by default)."""
    n = len(reader) if n is None else min(n, len(reader))
    for i in range(0, n, batch):
        idx = range(i, min(i + batch, n))
        yield idx, torch.stack([transform(reader[j])[0] for j in idx])


@torch.no_grad()
def teacher_outputs(
    distiller, reader, transform, device: torch.device, amp=None, batch: int = 8
) -> list[torch.Tensor]:
    """``distiller.teacher_outputs`` of every item of ``reader`` through ``transform`` (the
    evaluation geometry), as ``(N, 2, ...)`` float16 tensors on the CPU: ``[:, 0]`` for the
    image, ``[:, 1]`` for its mirror image."""
    cache: list[torch.Tensor] = []
    for idx, x in view_batches(reader, transform, batch=batch):
        i, x = idx.start, x.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outs = distiller.teacher_outputs(torch.cat([x, x.flip(-1)]))
        for k, out in enumerate(outs):
            out = out.view(2, len(idx), *out.shape[1:]).transpose(0, 1)
            if not i:
                cache.append(torch.empty((len(reader), 2, *out.shape[2:]), dtype=torch.float16))
            cache[k][i : i + len(idx)] = out  # copied to the CPU as float16
    if not cache:
        raise ValueError("--kd-cache: expected training images, got an empty training split")
    return cache


class CachedTeacherDataset(TransformedDataset):
    """Training items ``(image, target, teacher_outputs)``: the cached outputs of the view's
    orientation (the train pipeline reports whether it mirrored the image)."""

    def __init__(self, reader, transform, cache: list[torch.Tensor], seed: int | None = None):
        if any(len(c) != len(reader) for c in cache):
            raise ValueError(
                f"--kd-cache: expected teacher outputs for each of {len(reader)} images, got "
                f"{[len(c) for c in cache]}"
            )
        super().__init__(reader, transform, seed)
        self.cache = cache

    def __getitem__(self, i: int):
        self.reseed(i)
        image, target, flipped = self.transform.flipped(self.reader[i])
        return image, target, [c[i, int(flipped)].clone() for c in self.cache]  # not views


def collate_cached(collate: Callable) -> Callable:
    """``collate`` for ``(image, target)`` items, with the items' cached outputs stacked."""

    def run(batch):
        images, targets = collate([b[:2] for b in batch])
        outs = zip(*(b[2] for b in batch), strict=True)
        return images, targets, [torch.stack(parts) for parts in outs]

    return run


def cached_teacher_dataset(
    dataset: TransformedDataset, distiller, device: torch.device, amp=None, log: Callable = print
) -> CachedTeacherDataset:
    """``dataset`` (a training set) with the teacher's outputs cached."""
    t0 = time.perf_counter()
    reader, tf = dataset.reader, dataset.transform
    cache = teacher_outputs(distiller, reader, type(tf)(tf.size), device, amp)
    size = memory_text(sum(c.nbytes for c in cache))
    log(
        f"[train] --kd-cache: teacher outputs of {len(reader)} training images and their mirror "
        f"images in {time.perf_counter() - t0:.1f} s ({size} float16)"
    )
    return CachedTeacherDataset(reader, tf, cache, dataset.seed)


def memory_text(nbytes: int) -> str:
    """``12.3 MiB`` below one GiB, else ``1.50 GiB``."""
    mib = nbytes / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"
