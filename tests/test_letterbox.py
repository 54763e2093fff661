"""The OpenCV letterbox gives the albumentations pipeline's pixels exactly (the geometry
training uses), for every shape: smaller, larger, already square, one row, odd sizes."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from vision.data.io import ImageError
from vision.data.letterbox import Letterbox
from vision.data.transforms import _geometry


@pytest.mark.parametrize("size", [64, 96, 160, 321])
def test_letterbox_equals_the_albumentations_pipeline(size):
    rng = np.random.default_rng(size)
    reference = A.Compose(_geometry(size, train=False))
    box = Letterbox(size)
    shapes = [(size, size), (size, size // 2), (1, size * 3), (7, 1000), (size * 3 + 1, 5)]
    shapes += [tuple(int(v) for v in rng.integers(1, 700, 2)) for _ in range(20)]
    for h, w in shapes:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        try:
            want = reference(image=img)["image"]
        except ValueError:  # albumentations refuses what resizes to nothing: so do we
            with pytest.raises(ImageError, match="shorter side"):
                box.one(img)
            continue
        if round(min(h, w) * size / max(h, w)) < 1:
            with pytest.raises(ImageError, match="shorter side"):
                box.one(img)
            continue
        got, info = box.one(img)
        assert got.shape == want.shape == (size, size, 3) and np.array_equal(got, want), (h, w)
        assert info == {"orig_size": (h, w), "scale": size / max(h, w)}
