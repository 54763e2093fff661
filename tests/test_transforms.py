"""Transform units on hand-made samples: exact box and mask geometry, dropped-box counts, the
mirrored flag the KD cache relies on, collate, and per-item augmentation seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.data.sample import Sample
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_eval,
    collate_segmentation,
)


def _det_sample(value: int = 255) -> Sample:
    """A 100 x 50 photo of one grey level with four boxes: plain, thin, past the edge, flat."""
    return Sample(
        image_id=7,
        path=None,
        width=100,
        height=50,
        boxes=np.array(
            [[10, 5, 30, 25], [50, 10, 51.5, 40], [90, 0, 120, 60], [60, 40, 80, 41.5]], np.float32
        ),
        labels=np.array([2, 0, 1, 3]),
        difficult=np.array([True, False, False, True]),
        crowd=np.array([False, True, False, True]),
        image=np.full((50, 100, 3), value, np.uint8),
    )


def test_detection_eval_scales_pads_clips_and_counts_drops():
    t = DetectionTransform(200, min_box=2.0)
    image, target = t(_det_sample())
    assert image.shape == (3, 200, 200) and image.dtype == torch.float32
    assert image[:, :100].eq(1.0).all() and image[:, 100:].eq(0.0).all()  # padded at the bottom
    # scale 2: the first box doubles; the 1.5-px-wide and 1.5-px-tall ones become 3 px (kept
    # at min_box 2); the third is clipped to the image (x2 120 -> 100, y2 60 -> 50, doubled)
    torch.testing.assert_close(
        target["boxes"],
        torch.tensor(
            [[20, 10, 60, 50], [100, 20, 103, 80], [180, 0, 200, 100], [120, 80, 160, 83.0]]
        ),
    )
    assert target["labels"].tolist() == [2, 0, 1, 3]
    assert target["difficult"].tolist() == [True, False, False, True]
    assert target["iscrowd"].tolist() == [False, True, False, True]
    assert target["image_id"] == 7 and target["orig_size"] == (50, 100) and target["scale"] == 2.0
    assert t.dropped == 0


def test_boxes_under_min_box_are_dropped_with_their_fields_and_counted():
    t = DetectionTransform(100, min_box=2.0)  # scale 1: 1.5 px wide, 1.5 px tall: both dropped
    _, target = t(_det_sample())
    assert target["labels"].tolist() == [2, 1]
    assert target["difficult"].tolist() == [True, False]
    assert target["iscrowd"].tolist() == [False, False]
    torch.testing.assert_close(target["boxes"], torch.tensor([[10, 5, 30, 25], [90, 0, 100, 50.0]]))
    assert t.dropped == 2
    t(_det_sample())
    assert t.dropped == 4  # counts add up over calls
    kept = DetectionTransform(100, min_box=1.0)(_det_sample())[1]["labels"].tolist()
    assert kept == [2, 0, 1, 3]


def test_detection_without_objects():
    s = Sample(image_id="e", path=None, width=40, height=40, image=np.zeros((40, 40, 3), np.uint8))
    image, target = DetectionTransform(32)(s)
    assert image.shape == (3, 32, 32) and target["boxes"].shape == (0, 4)
    assert target["labels"].dtype == torch.int64 and target["scale"] == 0.8


def test_train_views_report_mirroring_and_their_boxes_follow_it():
    t = DetectionTransform(200, train=True, min_box=2.0)
    s = _det_sample(value=128)
    s.image[:, 50:] = 0  # grey left half, black right half
    ds = TransformedDataset([s] * 24, t, seed=0)
    seen = set()
    for i in range(len(ds)):
        ds.reseed(i)
        image, target, flipped = t.flipped(ds.reader[i])
        seen.add(flipped)
        assert target["scale"] is None  # train views are never mapped back
        first = [140, 10, 180, 50.0] if flipped else [20, 10, 60, 50.0]
        torch.testing.assert_close(target["boxes"][0], torch.tensor(first))
        left, right = image[:, :100, 50].mean(), image[:, :100, 150].mean()
        assert (right > left) == flipped  # the grey half moved right; jitter keeps the order
    assert seen == {True, False}
    assert t(ds.reader[0])[0].shape == (3, 200, 200)  # __call__ drops the flag
    assert DetectionTransform(200).flipped(ds.reader[0])[2] is False  # eval never mirrors


def test_train_recipe():
    """The documented augmentation (README, training): fixed resize and top-left pad, then a
    flip (p 0.5), brightness/contrast ±0.2 (p 0.5) and hue/sat/value ±10/20/10 (p 0.3)."""
    ops = DetectionTransform(64, train=True).pipeline.transforms
    assert [type(o).__name__ for o in ops] == [
        "LongestMaxSize",
        "PadIfNeeded",
        "HorizontalFlip",
        "RandomBrightnessContrast",
        "HueSaturationValue",
    ]
    assert [o.p for o in ops] == [1.0, 1.0, 0.5, 0.5, 0.3]
    assert ops[3].brightness_limit == ops[3].contrast_limit == (-0.2, 0.2)
    assert ops[4].hue_shift_limit == ops[4].val_shift_limit == (-10, 10)
    assert ops[4].sat_shift_limit == (-20, 20)
    assert len(DetectionTransform(64).pipeline.transforms) == 2  # evaluation: geometry only
    assert len(SegmentationTransform(64, train=True).pipeline.transforms) == 5


def _seg_sample() -> Sample:
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 3
    mask[0, 0] = 255
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 20:] = 200
    return Sample(image_id="m", path=None, width=40, height=20, image=image, mask=mask)


def test_segmentation_eval_target_and_padding():
    image, target = SegmentationTransform(80, with_target=True)(_seg_sample())
    m = target["mask"]
    assert m.shape == (80, 80) and m.dtype == torch.int64
    assert m[40:].eq(255).all()  # the pad is void
    assert m[:2, :2].eq(255).all()  # the void pixel, doubled by nearest neighbour
    assert m[2:40, :40].eq(0).all() and m[:2, 2:40].eq(0).all() and m[:40, 40:].eq(3).all()
    assert target["orig_mask"].shape == (20, 40) and target["orig_mask"][0, 39] == 3
    assert target["image_id"] == "m" and target["orig_size"] == (20, 40)
    assert target["scale"] == 2.0
    assert image.shape == (3, 80, 80) and image[:, :40, 41:].eq(200 / 255).all()
    plain = SegmentationTransform(80)(_seg_sample())[1]
    assert torch.equal(plain, m)  # without with_target: the mask alone


def test_segmentation_train_mirrors_image_and_mask_together():
    t = SegmentationTransform(40, train=True)
    flags = []
    for seed in range(16):
        t.pipeline.set_random_seed(seed)
        image, mask, flipped = t.flipped(_seg_sample())
        flags.append(flipped)
        right = mask[5, 30].item()  # pixel (5, 30): class 3 unmirrored, 0 mirrored
        assert right == (0 if flipped else 3)
        assert mask[0, 39 if flipped else 0] == 255
        assert (image[:, 5, 30].max() > 0.3) == (not flipped)  # jitter cannot turn 0 to bright
    assert set(flags) == {True, False}


def test_collate():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    images, targets = collate_detection([(a, {"i": 0}), (b, {"i": 1})])
    assert (
        images.shape == (2, 3, 4, 4) and images[1].eq(1).all() and targets == [{"i": 0}, {"i": 1}]
    )
    images, masks = collate_segmentation([(a, torch.zeros(4, 4)), (b, torch.ones(4, 4))])
    assert images.shape == (2, 3, 4, 4) and masks.shape == (2, 4, 4) and masks[1].eq(1).all()
    images, targets = collate_eval([(b, "x"), (a, "y")])
    assert images[0].eq(1).all() and targets == ["x", "y"]


def _views(ds: TransformedDataset, order) -> dict:
    return {i: ds[i][0] for i in order}


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_seeded_views_depend_on_seed_epoch_and_item_only(task):
    cls = DetectionTransform if task == "detection" else SegmentationTransform

    def make():
        return cls(48, train=True)

    s = _det_sample(value=128) if task == "detection" else _seg_sample()
    a = TransformedDataset([s] * 6, make(), seed=3)
    b = TransformedDataset([s] * 6, make(), seed=3)
    assert len(a) == 6
    va, vb = _views(a, range(6)), _views(b, reversed(range(6)))  # any order, any instance
    assert all(torch.equal(va[i], vb[i]) for i in range(6))
    assert any(not torch.equal(va[0], va[i]) for i in range(1, 6))  # items differ
    b.epoch = 1
    vb = _views(b, range(6))
    assert any(not torch.equal(va[i], vb[i]) for i in range(6))  # so do epochs
    c = TransformedDataset([s] * 6, make(), seed=4)
    vc = _views(c, range(6))
    assert any(not torch.equal(va[i], vc[i]) for i in range(6))  # and seeds
    unseeded = TransformedDataset([s], make())
    unseeded.transform.pipeline.set_random_seed(11)
    first = unseeded[0][0]
    unseeded.transform.pipeline.set_random_seed(11)
    unseeded.reseed(0)  # no seed: reseed leaves the pipeline's own stream alone
    assert torch.equal(unseeded[0][0], first)
