"""Segmentation metrics with worked values, IoU primitives, and folders of masks (pairing, void,
every error word for word)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch


def test_seg_metrics_worked_example_and_the_empty_matrix():
    from eval.seg import seg_metrics

    # gt rows, pred columns: class 0 4 right + 1 as class 1; class 1 2 right; class 2 absent
    hist = np.array([[4, 1, 0], [0, 2, 0], [0, 0, 0]])
    r = seg_metrics(hist, ["a", "b", "c"])
    assert r["pixel_acc"] == 6 / 7
    assert r["per_class_acc"]["a"] == 4 / 5 and r["per_class_acc"]["b"] == 1.0
    assert r["per_class_iou"]["a"] == 4 / 5 and r["per_class_iou"]["b"] == 2 / 3
    assert math.isnan(r["per_class_iou"]["c"]) and math.isnan(r["per_class_acc"]["c"])
    assert r["mIoU"] == (4 / 5 + 2 / 3) / 2 and r["mean_acc"] == (4 / 5 + 1) / 2
    assert r["fwIoU"] == pytest.approx(5 / 7 * 4 / 5 + 2 / 7 * 2 / 3, abs=1e-15)
    assert r["protocol"].startswith("confusion matrix over non-ignored pixels; mIoU = nan-mean")
    assert list(seg_metrics(hist)["per_class_iou"]) == ["0", "1", "2"]
    empty = seg_metrics(np.zeros((2, 2), np.int64), ["a", "b"])
    for k in ("pixel_acc", "mean_acc", "mIoU", "fwIoU"):
        assert math.isnan(empty[k]), k


def test_seg_evaluator_ignores_void_and_out_of_range_truth_and_refuses_bad_predictions():
    from eval.seg import SegEvaluator

    ev = SegEvaluator(3, ["a", "b", "c"])
    gt = np.array([[0, 1, 255], [2, 7, -1]])
    pred = np.array([[0, 2, 9], [2, 0, 0]])  # under void / out-of-range truth: not counted
    ev.process([{"mask": torch.tensor(gt), "image_id": 5}], [{"mask": pred}])
    r = ev.evaluate()["seg"]
    assert r["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    ev.reset()
    assert ev.evaluate()["seg"]["confusion"] == [[0] * 3] * 3
    with pytest.raises(ValueError, match=r"^5: expected predicted classes 0..2, got \[-1, 3\]$"):
        ev.process([{"mask": gt, "image_id": 5}], [{"mask": np.array([[3, -1, 0], [0, 0, 0]])}])
    with pytest.raises(ValueError, match=r"^mask: expected prediction and ground truth of the "):
        ev.process([{"mask": gt}], [{"mask": pred[:1]}])


def test_box_and_mask_iou_inputs_and_edges():
    from eval.iou import box_iou, mask_iou

    one = box_iou([0, 0, 10, 10], torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 10], [20, 20, 21, 21]]))
    assert one.shape == (1, 3) and one.dtype == torch.float64
    np.testing.assert_allclose(one.numpy(), [[0.5, 1.0, 0.0]])
    t = box_iou(torch.tensor([[0, 0, 4, 4], [0, 0, 2, 2]]), [[0, 0, 2, 4]])  # integer tensors
    np.testing.assert_allclose(t.numpy(), [[0.5], [0.5]])
    a = np.zeros((2, 2, 3), np.uint8)
    a[0, 0] = 2  # three pixels (any non-zero value is "in"); the second mask is empty
    b = np.ones((1, 2, 3), np.uint8)
    np.testing.assert_allclose(mask_iou(a, b), [[0.5], [0.0]])
    np.testing.assert_allclose(mask_iou(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))), [[0.0]])
    with pytest.raises(
        ValueError, match=r"^mask_iou: expected masks of the same size, got 6 and 4"
    ):
        mask_iou(a, np.ones((1, 2, 2)))


def test_seg_evaluator_uses_its_own_void_index():
    from eval.seg import SegEvaluator

    ev = SegEvaluator(3, ignore_index=2)  # class 2 is void here: not counted
    ev.process([{"mask": np.array([[0, 1, 2]])}], [{"mask": np.array([[0, 1, 0]])}])
    assert ev.evaluate()["seg"]["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    ev.reset()
    ev.process([{"mask": np.array([[2]])}], [{"mask": np.array([[1]])}])
    assert ev.evaluate()["seg"]["confusion"] == [[0] * 3] * 3


def _png(path: Path, mask: np.ndarray, rgb: bool = False) -> None:
    from PIL import Image

    from vision.data.colormap import voc_colormap

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(voc_colormap()[mask] if rgb else mask.astype(np.uint8)).save(path)


def test_mask_folders_paired_by_stem_with_void_and_names(tmp_path):
    """Ground truth in the VOC colour map (void drawn in its colour), predictions as index
    PNGs named ``<stem>_pred``: scored with void left out, names and the image count kept."""
    from eval.seg import evaluate_folders

    gt = np.array([[0, 1, 255], [1, 1, 0]])
    _png(tmp_path / "gt" / "a.png", gt, rgb=True)
    _png(tmp_path / "gt" / "b_target.png", gt)
    _png(tmp_path / "pred" / "a_pred.png", np.array([[0, 1, 1], [1, 0, 0]]))
    _png(tmp_path / "pred" / "b.png", gt.clip(0, 1))
    r = evaluate_folders(tmp_path / "gt", tmp_path / "pred", 2, names=["bg", "fg"])
    assert r["images"] == 2 and list(r["per_class_iou"]) == ["bg", "fg"]
    assert r["pixel_acc"] == 9 / 10  # 5 + 5 counted pixels, one wrong, void twice left out
    assert r["per_class_iou"]["fg"] == 5 / 6 and r["per_class_iou"]["bg"] == 4 / 5


def test_mask_folder_errors_name_the_folder_and_the_files(tmp_path):
    from eval.seg import evaluate_folders
    from vision.errors import DataError

    def error(gt_dir, pred_dir) -> str:
        with pytest.raises(DataError) as e:
            evaluate_folders(gt_dir, pred_dir, 2)
        return str(e.value)

    assert error(tmp_path / "nowhere", tmp_path) == (
        f"{tmp_path / 'nowhere'}: expected a folder of PNG masks, got no such folder"
    )
    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty", tmp_path) == (
        f"{tmp_path / 'empty'}: expected ground-truth PNG masks, got no PNG files"
    )
    one = np.zeros((2, 2))
    for i in range(7):
        _png(tmp_path / "gt" / f"g{i}.png", one)
        _png(tmp_path / "pred" / f"p{i}.png", one)
    _png(tmp_path / "pred" / "g0.png", one)
    missing = [f"g{i}" for i in range(1, 6)]
    unmatched = [f"p{i}" for i in range(5)]
    assert error(tmp_path / "gt", tmp_path / "pred") == (
        f"{tmp_path / 'pred'}: expected one prediction per ground-truth mask (paired by stem), "
        f"got missing {missing}..., unmatched {unmatched}..."
    )
    for i in range(1, 7):
        (tmp_path / "pred" / f"p{i}.png").rename(tmp_path / "pred" / f"g{i}.png")
    (tmp_path / "pred" / "p0.png").unlink()
    _png(tmp_path / "pred" / "g6.png", np.zeros((2, 3)))
    assert error(tmp_path / "gt", tmp_path / "pred") == (
        f"{tmp_path / 'pred' / 'g6.png'}: expected a mask matching its ground truth: "
        "prediction and ground truth of the same size, got (2, 3) and (2, 2)"
    )
    few = tmp_path / "few"
    _png(few / "gt" / "x.png", one)
    _png(few / "pred" / "y.png", one)
    assert error(few / "gt", few / "pred").endswith("got missing ['x'], unmatched ['y']")


def test_confusion_matrix_defaults_bounds_and_integer_counts():
    """Void 255 by default; ground truth equal to ``num_classes`` is out of range (left out);
    a prediction equal to ``num_classes`` alone is refused, at most five bad values are
    named; counts stay integers; tensors that require grad are read too."""
    from eval.seg import ConfusionMatrix, MaskMismatch, SegEvaluator

    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 255, 3, 1]]), np.array([[0, 1, 2, 1]]))
    assert cm.hist.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]] and cm.hist.dtype == np.int64
    with pytest.raises(MaskMismatch) as e:
        cm.update(np.zeros((1, 2)), np.array([[0, 3]]))
    assert str(e.value) == "mask: expected predicted classes 0..2, got [3]"
    assert (e.value.expected, e.value.got) == ("predicted classes 0..2", "[3]")
    with pytest.raises(ValueError, match=r"got \[3, 4, 5, 6, 7\]$"):
        cm.update(np.zeros((1, 6)), np.array([[3, 4, 5, 6, 7, 8]]))
    ev = SegEvaluator(2)
    ev.process(
        [{"mask": torch.tensor([[0, 1]])}],
        [{"mask": torch.tensor([[0.0, 1.0]], requires_grad=True)}],
    )
    confusion = ev.evaluate()["seg"]["confusion"]
    assert confusion == [[1, 0], [0, 1]] and all(type(v) is int for r in confusion for v in r)


def test_mask_folders_own_void_index_and_rgb_ground_truth(tmp_path):
    """A void index other than 255 reaches both the matrix and the RGB decoding (the VOC void
    colour becomes that index); a folder path holding the word "expected " does not garble
    the error."""
    from eval.seg import evaluate_folders
    from vision.errors import DataError

    gt = np.array([[0, 1, 255], [1, 2, 0]])  # RGB in the VOC colours, void drawn in its colour
    _png(tmp_path / "gt" / "a.png", gt, rgb=True)
    _png(tmp_path / "pred" / "a.png", np.array([[0, 0, 1], [1, 0, 0]]))
    r = evaluate_folders(tmp_path / "gt", tmp_path / "pred", 3, ignore_index=2)
    assert r["pixel_acc"] == 3 / 4  # void read as 2: it and class 2 are left out
    r = evaluate_folders(tmp_path / "gt", tmp_path / "pred", 3, ignore_index=1)
    assert math.isnan(r["per_class_iou"]["1"]) and r["pixel_acc"] == 2 / 3  # class 1 left out
    _png(tmp_path / "gt5" / "a.png", np.array([[0, 5, 255], [1, 2, 0]]), rgb=True)
    with pytest.raises(DataError, match=r"expected an index mask or an RGB mask in the VOC colour"):
        evaluate_folders(tmp_path / "gt5", tmp_path / "pred", 3)  # class 5's colour: not of 3
    odd = tmp_path / "expected results"
    _png(odd / "a.png", np.zeros((2, 2)))
    with pytest.raises(DataError) as e:
        evaluate_folders(tmp_path / "gt", odd, 3)
    assert str(e.value) == (
        f"{odd / 'a.png'}: expected a mask matching its ground truth: "
        "prediction and ground truth of the same size, got (2, 2) and (2, 3)"
    )


def test_mask_folders_one_sided_mismatches_and_the_ellipsis_after_five(tmp_path):
    from eval.seg import evaluate_folders
    from vision.errors import DataError

    def got(name, gts, preds):
        for stem in gts:
            _png(tmp_path / name / "gt" / f"{stem}.png", np.zeros((2, 2)))
        for stem in preds:
            _png(tmp_path / name / "pred" / f"{stem}.png", np.zeros((2, 2)))
        with pytest.raises(DataError) as e:
            evaluate_folders(tmp_path / name / "gt", tmp_path / name / "pred", 2)
        return str(e.value).split(", got ", 1)[1]

    five_g, six_g = [f"g{i}" for i in range(5)], [f"g{i}" for i in range(6)]
    five_p, six_p = [f"p{i}" for i in range(5)], [f"p{i}" for i in range(6)]
    assert got("a", five_g, six_p) == f"missing {five_g}, unmatched {six_p[:5]}..."
    assert got("b", six_g, five_p) == f"missing {six_g[:5]}..., unmatched {five_p}"
    assert got("c", ["x", "y"], ["x"]) == "missing ['y'], unmatched []"
    assert got("d", ["x"], ["x", "z"]) == "missing [], unmatched ['z']"


def test_rgb_predictions_and_void_among_256_classes(tmp_path):
    """Predictions in the VOC colours are read with the caller's class count and void index;
    with 256 classes, 255 is a class and only the void index (255 by default) is left out."""
    from eval.seg import ConfusionMatrix, SegEvaluator, evaluate_folders

    _png(tmp_path / "gt" / "a.png", np.array([[0, 1, 1]]))
    _png(tmp_path / "pred" / "a.png", np.array([[0, 1, 255]]), rgb=True)  # void colour: 2
    r = evaluate_folders(tmp_path / "gt", tmp_path / "pred", 3, ignore_index=2)
    assert r["pixel_acc"] == 2 / 3 and r["images"] == 1  # predicted class 2 where 1 is true
    cm = ConfusionMatrix(256)  # void is 255 by default
    cm.update(np.array([[255, 1]]), np.array([[3, 1]]))
    assert cm.hist.sum() == 1
    ev = SegEvaluator(256, names=[str(k) for k in range(256)])
    ev.process([{"mask": np.array([[255, 1]])}], [{"mask": np.array([[3, 1]])}])
    assert np.asarray(ev.evaluate()["seg"]["confusion"]).sum() == 1
    named = SegEvaluator(2, names=["bg", "fg"])
    named.process([{"mask": np.array([[0, 1]])}], [{"mask": np.array([[0, 1]])}])
    assert list(named.evaluate()["seg"]["per_class_iou"]) == ["bg", "fg"]
