"""Drawings: a detection in its class's VOC colour with its name and score, masks blended in
the dataset's colours with the background left alone, and reports' sample images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from eval.draw import sample_images
from vision.data.colormap import voc_colormap
from vision.data.sample import Sample
from vision.draw import box_colors, draw_prediction

NAMES = ["cat", "dog", "bird"]


def _image() -> np.ndarray:
    return np.full((40, 50, 3), 90, np.uint8)


def _det() -> dict:
    return {
        "boxes": np.array([[2, 3, 20, 30], [25, 5, 45, 35]], np.float32),
        "scores": np.array([0.9, 0.3], np.float32),
        "labels": np.array([1, 2]),
    }


def _boxes_ref(image, boxes, texts, labels) -> np.ndarray:
    img = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    b = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    return (
        draw_bounding_boxes(img, b, texts, colors=box_colors(labels), width=2)
        .permute(1, 2, 0)
        .numpy()
    )


def test_box_colors_are_the_voc_map_one_index_up():
    cmap = voc_colormap()
    assert box_colors([0, 2]) == [tuple(int(v) for v in cmap[1]), tuple(int(v) for v in cmap[3])]
    assert box_colors(np.array([0]))[0] == (128, 0, 0) and all(
        isinstance(v, int) for v in box_colors([1])[0]
    )


def test_boxes_at_or_above_the_threshold_with_name_and_score():
    img, det = _image(), _det()
    want = _boxes_ref(img, det["boxes"], ["dog 0.90", "bird 0.30"], [1, 2])
    assert np.array_equal(draw_prediction(img, det, NAMES), want)  # default threshold 0
    only = _boxes_ref(img, det["boxes"][:1], ["dog 0.90"], [1])
    assert np.array_equal(draw_prediction(img, det, NAMES, 0.5), only)
    assert np.array_equal(draw_prediction(img, det, NAMES, 0.3), want)  # at the threshold: drawn
    torch_det = {k: torch.as_tensor(v) for k, v in det.items()}
    assert np.array_equal(draw_prediction(img, torch_det, NAMES, 0.5), only)
    assert tuple(draw_prediction(img, det, NAMES)[3, 10]) == box_colors([1])[0]
    assert np.array_equal(draw_prediction(img, det, NAMES, 0.95), img)  # nothing kept
    assert (img == 90).all()  # the caller's image is not drawn on
    as_ints = draw_prediction(img.astype(np.int64), det, NAMES)  # any integer image: as uint8
    assert as_ints.dtype == np.uint8 and np.array_equal(as_ints, want)


def _mask() -> np.ndarray:
    m = np.zeros((40, 50), np.uint8)
    m[5:15, 5:15], m[20:30, 20:40], m[0:4, 40:50] = 1, 2, 3
    return m


def _mask_ref(image, mask, colors, first, alpha=0.55) -> np.ndarray:
    img = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    m = torch.from_numpy(mask.astype(np.int64))
    masks = torch.stack([m == k for k in range(first, len(colors))])
    out = draw_segmentation_masks(img, masks, alpha=alpha, colors=colors[first:])
    return out.permute(1, 2, 0).numpy()


def test_masks_blended_in_the_voc_colours_background_undrawn():
    img, m = _image(), _mask()
    voc = [tuple(int(v) for v in c) for c in voc_colormap()[:3]]  # names index the map
    got = draw_prediction(img, {"mask": m}, NAMES)
    assert np.array_equal(got, _mask_ref(img, m, voc, 1))
    assert (got[m == 0] == 90).all() and (got[m == 3] == 90).all()
    assert not (got[m == 1] == 90).all()
    assert np.array_equal(
        draw_prediction(img, {"mask": m}, NAMES, alpha=0.2), _mask_ref(img, m, voc, 1, 0.2)
    )
    assert np.array_equal(
        draw_prediction(img, {"mask": torch.as_tensor(m)}, NAMES), _mask_ref(img, m, voc, 1)
    )


def test_masks_in_the_dataset_colours_and_without_background():
    img, m = _image(), _mask()
    colors = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]
    rgb = [tuple(c) for c in colors]
    got = draw_prediction(
        img, {"mask": m}, NAMES, colors=colors, background=False, mask_names=["a", "b", "c", "d"]
    )
    assert np.array_equal(got, _mask_ref(img, m, rgb, 0))
    assert not (got[m == 0] == 90).all()  # index 0 is a class here
    two = draw_prediction(img, {"mask": m}, NAMES, mask_names=["bg", "a"], colors=colors[:2])
    assert np.array_equal(two, _mask_ref(img, m, rgb[:2], 1))
    with pytest.raises(ValueError, match="colors: expected 4 RGB triples, got 2"):
        draw_prediction(img, {"mask": m}, NAMES, colors=colors[:2], mask_names=["bg", *NAMES])
    assert draw_prediction(img, {"mask": m}, NAMES, mask_names=["bg"]) is img  # no class to draw


class _Reader:
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return Sample(i, None, 50, 40, image=np.full((40, 50, 3), 10 * i, np.uint8))


def test_sample_images_draw_the_first_n_at_the_threshold():
    dets = [_det() for _ in range(8)]
    out = sample_images(_Reader(8), dets, NAMES, "detection")
    assert len(out) == 6  # n=6 by default
    for i, img in enumerate(out):
        ref = draw_prediction(np.full((40, 50, 3), 10 * i, np.uint8), dets[i], NAMES, 0.5)
        assert np.array_equal(img, ref)
    assert len(sample_images(_Reader(3), dets, NAMES, "detection", n=5)) == 3
    assert len(sample_images(_Reader(8), dets[:2], NAMES, "detection", n=5)) == 2
    low = sample_images(_Reader(1), dets, NAMES, "detection", score_threshold=0.2)
    assert np.array_equal(
        low[0], draw_prediction(np.zeros((40, 50, 3), np.uint8), dets[0], NAMES, 0.2)
    )


def test_sample_images_masks_with_colours_and_background():
    masks = [{"mask": _mask()} for _ in range(2)]
    colors = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]
    out = sample_images(_Reader(2), masks, NAMES, "segmentation", colors=colors)
    ref = draw_prediction(np.full((40, 50, 3), 10, np.uint8), masks[1], NAMES,
                          mask_names=["background", *NAMES], colors=colors)  # fmt: skip
    assert np.array_equal(out[1], ref)
    flat = sample_images(
        _Reader(2), masks, NAMES + ["fish"], "segmentation", background=False, colors=colors
    )
    ref = draw_prediction(np.full((40, 50, 3), 10, np.uint8), masks[1], NAMES,
                          mask_names=NAMES + ["fish"], colors=colors, background=False)  # fmt: skip
    assert np.array_equal(flat[1], ref)
