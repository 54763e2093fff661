"""Post-processing: a model's output back to the original image's pixels, and the JSON
answer the service returns (boxes, class maps as PNG or COCO RLE)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image


def test_class_agnostic_nms_keeps_one_label_per_object():
    from vision.postprocess import detections_to_original as to_original

    # the same object answered as class 0 (0.9) and class 1 (0.6), plus a separate box
    raw = {
        "boxes": torch.tensor([[10.0, 10, 50, 50], [11, 10, 50, 51], [60, 60, 90, 90]]),
        "scores": torch.tensor([0.9, 0.6, 0.5]),
        "labels": torch.tensor([0, 1, 1]),
    }
    info = {"orig_size": (100, 100), "scale": 1.0}
    per_class = to_original(raw, info)
    assert per_class["labels"].tolist() == [0, 1, 1]
    one = to_original(raw, info, agnostic_iou=0.6)
    assert one["labels"].tolist() == [0, 1] and one["scores"].tolist() == pytest.approx([0.9, 0.5])
    assert len(to_original(raw, info, 0.95, agnostic_iou=0.6)["boxes"]) == 0


@pytest.mark.parametrize("h, w", [(301, 389), (11, 9), (256, 192)])  # up, down, the usual
@pytest.mark.parametrize("smooth", [True, False])
def test_class_maps_equal_a_full_bilinear_upsampling(monkeypatch, h, w, smooth):
    """The class map read from the low-resolution argmax (logits interpolated only on class
    edges), in one piece or in strips, is the argmax of F.interpolate's full upsampling."""
    import vision.postprocess as vp

    torch.manual_seed(0)
    logits = torch.randn(5, 17, 23) * 3
    if smooth:  # large regions, as trained models give
        logits = F.interpolate(torch.randn(1, 5, 4, 5) * 3, size=(17, 23), mode="bilinear")[0]
    ref = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)
    ref = ref[0].argmax(0).to(torch.uint8).numpy()
    # strips first: a whole map computed before could leave its values in the memory that
    # the next call's np.empty gets back, and hide rows a strip loop never writes
    for rows in (7, 1):
        monkeypatch.setattr(vp, "STRIP_ELEMENTS", w * rows)  # strips of 7 rows, of 1 row
        strips = vp.upsample_argmax(logits.numpy(), h, w)
        assert strips.shape == (h, w) and strips.dtype == np.uint8
        assert np.array_equal(strips, ref)
    monkeypatch.undo()
    assert np.array_equal(vp.upsample_argmax(logits.numpy(), h, w), ref)


def test_channel_argmax_takes_the_first_class_on_ties():
    """As torch's and NumPy's argmax: of equal scores the lowest class index wins (small
    integer scores: ties everywhere)."""
    from vision.postprocess import channel_argmax

    scores = np.random.default_rng(0).integers(0, 3, (6, 9, 11)).astype(np.float32)
    got = channel_argmax(scores)
    assert got.dtype == np.uint8
    assert np.array_equal(got, scores.argmax(0))


def test_bilinear_taps_rebuild_torch_s_resizing():
    """Every (source, output) length pair up to 40, and a few large ones: the cached source
    indices and weights rebuild F.interpolate's values (to float32 rounding: its kernel sums
    the four weighted taps in another order)."""
    from vision.postprocess import _bilinear_taps

    pairs = [(i, o) for i in range(1, 41) for o in range(1, 41)] + [(117, 221), (128, 3000)]
    for n_in, n_out in pairs:
        v = torch.randn(1, 1, 1, n_in)
        ref = F.interpolate(v, size=(1, n_out), mode="bilinear", align_corners=False)[0, 0, 0]
        lo, hi, lam = _bilinear_taps(n_in, n_out)
        x = v[0, 0, 0].numpy()
        got = x[lo] * (1 - lam) + x[hi] * lam
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5, err_msg=str(n_in))


def test_mask_to_original_crops_the_padding_and_scales_back():
    """A (K, S, S) padded output → the uint8 class map of the original image: the padded
    rows and columns (the letterbox) never reach the answer."""
    from vision.postprocess import mask_to_original

    logits = torch.zeros(3, 8, 8)
    logits[2, :4, :] = 1.0  # the image's half of the rows: class 2
    logits[1, 4:, :] = 9.0  # padding rows: a class the answer must not show
    out = mask_to_original(logits, {"orig_size": (6, 12), "scale": 8 / 12})
    assert out["mask"].dtype == torch.uint8 and out["mask"].shape == (6, 12)
    assert (out["mask"] == 2).all()


def test_detections_go_back_to_original_pixels_clamped_per_axis():
    """Boxes divide by the resize scale and clamp x to the width, y to the height (a wide
    image: the two differ); the score threshold keeps scores equal to it; ``max_detections``
    keeps the first ones (the model's order: best first)."""
    from vision.postprocess import detections_to_original as to_original

    raw = {
        "boxes": torch.tensor([[-4.0, -2, 30, 12], [10, 4, 90, 40], [2, 2, 4, 4]]),
        "scores": torch.tensor([0.9, 0.5, 0.3], dtype=torch.float64),
        "labels": torch.tensor([2, 0, 1]),
    }
    info = {"orig_size": (20, 100), "scale": 0.5}  # (h, w): a 100 x 20 image shown at half size
    out = to_original(raw, info, score_threshold=0.5)
    assert out["boxes"].dtype == torch.float32 and out["scores"].dtype == torch.float32
    assert out["boxes"].tolist() == [[0.0, 0.0, 60.0, 20.0], [20.0, 8.0, 100.0, 20.0]]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.5]) and out["labels"].tolist() == [2, 0]
    assert to_original(raw, info, max_detections=1)["labels"].tolist() == [2]
    assert len(to_original(raw, info)["boxes"]) == 3  # no threshold, no limit: all of them
    empty = to_original(raw, info, score_threshold=0.95, agnostic_iou=0.5)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].tolist() == []


@pytest.mark.parametrize(
    "orig, scale, expected",
    [
        ((6, 12), 8 / 12, (4, 8)),
        ((3, 1000), 0.1, (1, 100)),
        ((1000, 3), 0.1, (100, 1)),
        ((5, 7), 1.5, (8, 10)),
    ],
)
def test_valid_size_is_the_rounded_image_part_and_never_empty(orig, scale, expected):
    from vision.postprocess import valid_size

    assert valid_size({"orig_size": orig, "scale": scale}) == expected


def test_rendered_detections_are_rounded_and_named():
    from vision.postprocess import render_detections

    res = {
        "boxes": torch.tensor([[1.23456, 2.0, 3.99999, 4.0005]]),
        "scores": torch.tensor([0.123456789]),
        "labels": torch.tensor([1]),
    }
    (det,) = render_detections(res, ["cat", "dog"])["detections"]
    assert det == {"box": [1.235, 2.0, 4.0, 4.001], "score": 0.12346, "label": "dog", "class_id": 1}
    assert type(det["class_id"]) is int and type(det["score"]) is float
    none = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    assert render_detections(none, ["cat"]) == {"detections": []}


def _mask() -> torch.Tensor:
    mask = torch.zeros(5, 7, dtype=torch.uint8)
    mask[1:3, 2:6] = 2  # 8 pixels of class index 2; index 1 absent
    return mask


def test_rendered_png_mask_decodes_to_the_class_map_with_counts_and_colours():
    from vision.data.colormap import voc_colormap
    from vision.postprocess import render_mask

    classes = ["background", "cat", "dog"]
    out = render_mask({"mask": _mask()}, classes)
    assert out["classes"] == classes
    assert out["pixel_counts"] == {"background": 27, "cat": 0, "dog": 8}
    assert out["colors"] == {c: voc_colormap()[i].tolist() for i, c in enumerate(classes)}
    assert out["mask"]["format"] == "png"
    png = Image.open(io.BytesIO(base64.b64decode(out["mask"]["data"])))
    assert png.format == "PNG" and np.array_equal(np.asarray(png), _mask().numpy())
    own = render_mask({"mask": _mask()}, classes, colors=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert own["colors"] == {"background": [1, 2, 3], "cat": [4, 5, 6], "dog": [7, 8, 9]}
    more = render_mask({"mask": _mask()}, [*classes, "bird"])  # the last class absent too
    assert more["pixel_counts"] == {"background": 27, "cat": 0, "dog": 8, "bird": 0}


def test_rendered_rle_mask_has_one_run_length_code_per_present_class():
    from pycocotools import mask as mask_utils

    from vision.postprocess import render_mask

    out = render_mask({"mask": _mask()}, ["background", "cat", "dog"], "rle")
    assert out["mask"]["format"] == "rle" and set(out["mask"]["per_class"]) == {"background", "dog"}
    for k, name in [(0, "background"), (2, "dog")]:
        rle = out["mask"]["per_class"][name]
        assert rle["size"] == [5, 7] and isinstance(rle["counts"], str)
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded, (_mask().numpy() == k).astype(np.uint8))
    with pytest.raises(ValueError, match=r"mask_format: expected one of \('png', 'rle'\), got 'x'"):
        render_mask({"mask": _mask()}, ["background"], "x")


def test_rendered_mask_with_an_index_past_the_class_list_names_both():
    from vision.postprocess import render_mask

    with pytest.raises(ValueError, match=r"expected class indices below 2 .*got 2; fix"):
        render_mask({"mask": _mask()}, ["background", "cat"])
