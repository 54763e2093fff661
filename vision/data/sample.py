"""The one sample type shared by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.data.io import read_image

IGNORE_INDEX = 255


@dataclass
class Sample:
    """One image and its annotations.

    ``boxes`` are absolute ``x1, y1, x2, y2`` pixels (float32, shape ``(N, 4)``); ``labels`` are
    contiguous class indices ``0..K-1`` into the dataset's class names. ``mask`` is a semantic
    class-index mask (uint8, ``0`` = background, ``k + 1`` = class ``k``, ``ignore_index`` =
    void) or ``None`` when the dataset has no masks. ``image`` is RGB uint8 ``(H, W, 3)`` or
    ``None`` when only annotations were read.
    """

    image_id: int | str
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    ignore_index: int = IGNORE_INDEX
    mask_path: Path | None = None

    @property
    def num_objects(self) -> int:
        return int(self.labels.shape[0])

    def areas(self) -> np.ndarray:
        """Box areas in pixels (continuous convention, ``(x2 - x1) * (y2 - y1)``)."""
        b = self.boxes
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def mask_classes(names: list[str], background: bool = True) -> list[str]:
    """The class of each index of a label map or class map: ``background`` first (index 0,
    ``k + 1`` = ``names[k]``) unless the dataset has none (every index a class, CamVid)."""
    return ["background", *names] if background else list(names)


def with_image(rec: Sample, exif: bool = True) -> Sample:
    """A copy of a reader's record with its image decoded (``exif``: apply the orientation)."""
    out = Sample(**{**rec.__dict__})
    out.image = read_image(rec.path, exif=exif)
    return out
