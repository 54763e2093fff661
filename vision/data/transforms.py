"""Albumentations pipelines for detection and segmentation, and the collate functions.

Images leave the pipelines as float tensors in [0, 1] (``(3, H, W)``); models normalize with
their own mean/std. Detection boxes stay valid: clipped to the image, boxes smaller than
``min_box`` pixels (side) are dropped and counted in ``DetectionTransform.dropped``.
Segmentation masks are resized with nearest neighbour and padded with the ignore index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np
import torch

from vision.data.sample import IGNORE_INDEX, Sample


def _geometry(size: int, train: bool) -> list:
    # no scale jitter: a random rescale before the longest-side resize would be undone by it
    # (it was, until this was noticed), and the built-in set already spans object sizes
    ops: list = [
        A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
        A.PadIfNeeded(
            size,
            size,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
    ]
    if train:
        ops += [
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.HueSaturationValue(10, 20, 10, p=0.3),
        ]
    return ops


@dataclass
class DetectionTransform:
    """Resize the longest side to ``size`` and pad to a square (top-left), with train-time
    flips and colour jitter."""

    size: int
    train: bool = False
    min_box: float = 2.0
    dropped: int = 0
    pipeline: A.Compose = field(init=False, repr=False)

    def __post_init__(self):
        self.pipeline = A.Compose(
            _geometry(self.size, self.train),
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["index"],
                clip=True,
                min_width=self.min_box,
                min_height=self.min_box,
            ),
            save_applied_params=self.train,
        )

    def __call__(self, s: Sample) -> tuple[torch.Tensor, dict]:
        return self.flipped(s)[:2]

    def flipped(self, s: Sample) -> tuple[torch.Tensor, dict, bool]:
        """``(image, target, flipped)``: whether the training view was mirrored."""
        out = self.pipeline(
            image=s.image, bboxes=s.boxes.reshape(-1, 4), index=np.arange(s.num_objects)
        )
        idx = np.asarray(out["index"], np.int64)
        self.dropped += s.num_objects - len(idx)
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(s.labels[idx]),
            "iscrowd": torch.from_numpy(s.crowd[idx]),
            "difficult": torch.from_numpy(s.difficult[idx]),
            "image_id": s.image_id,
            "orig_size": (s.height, s.width),
            "scale": self.size / max(s.height, s.width) if not self.train else None,
        }
        return _to_tensor(out["image"]), target, _mirrored(out)


@dataclass
class SegmentationTransform:
    """Resize/pad like detection; masks use nearest neighbour and pad with the ignore index."""

    size: int
    train: bool = False
    with_target: bool = False
    pipeline: A.Compose = field(init=False, repr=False)

    def __post_init__(self):
        ops = _geometry(self.size, self.train)
        self.pipeline = A.Compose(ops, save_applied_params=self.train)

    def __call__(self, s: Sample):
        """``(image, mask)``; with ``with_target`` (evaluation) ``(image, target)`` where the
        target also holds the original-size mask and the scale to map predictions back."""
        return self.flipped(s)[:2]

    def flipped(self, s: Sample) -> tuple[torch.Tensor, torch.Tensor | dict, bool]:
        """``(image, mask or target, flipped)``: whether the training view was mirrored."""
        out = self.pipeline(image=s.image, mask=s.mask)
        mask = torch.from_numpy(np.ascontiguousarray(out["mask"])).long()
        if not self.with_target:
            return _to_tensor(out["image"]), mask, _mirrored(out)
        target = {
            "mask": mask,
            "orig_mask": torch.from_numpy(s.mask).long(),
            "image_id": s.image_id,
            "orig_size": (s.height, s.width),
            "scale": self.size / max(s.height, s.width),
        }
        return _to_tensor(out["image"]), target, _mirrored(out)


def _mirrored(out: dict) -> bool:
    """Whether a pipeline's call flipped the image (the only random geometry after the fixed
    resize and pad: the train pipelines record their applied transforms)."""
    return any(name == "HorizontalFlip" for name, _ in out.get("applied_transforms", ()))


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def collate_detection(batch: list[tuple[torch.Tensor, dict]]):
    """Stack same-size images into ``(B, 3, H, W)``; targets stay a list of dicts."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def collate_segmentation(batch: list[tuple[torch.Tensor, torch.Tensor]]):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def collate_eval(batch):
    """Stack images; keep per-image target dicts (evaluation, both tasks)."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class TransformedDataset(torch.utils.data.Dataset):
    """A reader wrapped with a transform, as a torch ``Dataset``.

    With ``seed`` set, the augmentation of item ``i`` in epoch ``epoch`` is seeded by
    ``(seed, epoch, i)``: the same no matter the worker count or where a run was resumed."""

    def __init__(self, reader, transform, seed: int | None = None):
        self.reader, self.transform, self.seed, self.epoch = reader, transform, seed, 0

    def __len__(self) -> int:
        return len(self.reader)

    def reseed(self, i: int) -> None:
        if self.seed is not None:
            s = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]
            self.transform.pipeline.set_random_seed(int(s))

    def __getitem__(self, i: int):
        self.reseed(i)
        return self.transform(self.reader[i])
