"""Per-image quality and the samples chosen from it, the FPS protocol's bookkeeping (on a
clock the test drives) and its text table, in process."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eval.samples import (
    GAP,
    HEADER,
    Quality,
    detection_quality,
    drawn_samples,
    segmentation_quality,
    side_by_side,
)
from vision.data.sample import Sample

# ---- eval.samples ---------------------------------------------------------------------------


def _sample(boxes, labels, difficult=None, image=None, mask=None):
    n = len(labels)
    return Sample(
        0,
        None,
        40,
        30,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        difficult=np.zeros(n, bool) if difficult is None else np.asarray(difficult),
        image=image,
        mask=mask,
    )


def _out(boxes, scores, labels):
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": scores,
        "labels": labels,
    }


def test_detection_quality():
    s = _sample([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1])
    assert detection_quality(s, _out([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.8], [0, 1]), 2) == 1
    half = detection_quality(s, _out([[0, 0, 10, 10]], [0.9], [0]), 2)
    assert half == pytest.approx(0.5)
    # the wrong box first: precision 1/2 at recall 1/2, 2/3 at 1 (VOC12 envelope)
    mixed = _out(
        [[100, 100, 110, 110], [0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.8, 0.7], [0, 0, 1]
    )
    assert detection_quality(s, mixed, 2) == pytest.approx(2 / 3)
    import torch

    as_torch = {k: torch.as_tensor(np.asarray(v)) for k, v in mixed.items()}
    assert detection_quality(s, as_torch, 2) == pytest.approx(2 / 3)
    assert detection_quality(s, _out([], [], []), 2) == 0.0
    # IoU 0.5 exactly counts (VOC's continuous boxes, plus_one=False)
    assert (
        detection_quality(_sample([[0, 0, 10, 10]], [0]), _out([[0, 0, 10, 5]], [0.9], [0]), 1) == 1
    )


def test_detection_quality_protocol_details():
    import torch

    s = _sample([[0, 0, 10, 10]], [0])
    grad = {
        "boxes": torch.tensor([[0.0, 0, 10, 10]], requires_grad=True),
        "scores": torch.tensor([0.9], requires_grad=True),
        "labels": torch.tensor([0]),
    }
    assert detection_quality(s, grad, 1) == 1.0  # outputs that still carry gradients
    # continuous boxes: IoU 0.49 is a miss (pixel-inclusive "+1" boxes would make it 0.54)
    assert detection_quality(s, _out([[0, 0, 10, 4.9]], [0.9], [0]), 1) == 0.0
    # the difficult box is neither found nor missed
    two = _sample([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], difficult=[False, True])
    assert detection_quality(two, _out([[0, 0, 10, 10]], [0.9], [0]), 1) == 1.0
    only_hard = _sample([[0, 0, 10, 10]], [0], difficult=np.array([1]))  # flags as numbers
    assert detection_quality(only_hard, _out([[50, 50, 60, 60]], [0.4], [0]), 1) == 1.0
    # ties among many equal scores keep their given order: a miss then the hit, among 20
    # detections at 0.5 between misses at 0.4: the hit comes second, AP 0.5 (a sort that is
    # not stable puts the hit first here: AP 1)
    gt = _sample([[0, 0, 10, 10]], [0])
    boxes = [[40 * k, 100, 40 * k + 10, 110] for k in range(35)]
    boxes[6] = [0, 0, 10, 10]
    scores = [0.4] * 5 + [0.5] * 20 + [0.4] * 10
    assert detection_quality(gt, _out(boxes, scores, [0] * 35), 1) == pytest.approx(0.5)


def test_detection_quality_without_ground_truth():
    empty = _sample([], [])
    assert detection_quality(empty, _out([[0, 0, 1, 1]], [0.49], [0]), 1) == 1.0
    assert detection_quality(empty, _out([[0, 0, 1, 1]], [0.5], [0]), 1) == 0.0
    hard = _sample([[0, 0, 10, 10]], [0], difficult=[True])  # only difficult: none real
    assert detection_quality(hard, _out([], [], []), 1) == 1.0


def test_segmentation_quality():
    gt = np.array([[0, 0, 1, 1], [255, 2, 2, 2]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [7, 2, 2, 0]], np.uint8)
    s = _sample([], [], mask=gt)
    # the void pixel left out (its prediction 7 too); class 0: 1/3, class 1: 2/3, class 2: 2/3
    assert segmentation_quality(s, {"mask": pred}) == pytest.approx(5 / 9)
    assert segmentation_quality(s, {"mask": gt}) == 1.0
    void_only = _sample([], [], mask=np.full((2, 2), 255, np.uint8))
    assert segmentation_quality(void_only, {"mask": np.zeros((2, 2))}) == 1.0
    assert segmentation_quality(void_only, {"mask": np.zeros((2, 2))}, void=0) == 0.0


def test_quality_hook_and_choice():
    q = Quality("detection", 1)
    s = _sample([[0, 0, 10, 10]], [0])
    q([s, s], [_out([[0, 0, 10, 10]], [0.9], [0]), _out([], [], [])])
    assert q.values == [1.0, 0.0]
    seg = Quality("segmentation", 3)
    m = np.zeros((2, 2), np.uint8)
    seg([_sample([], [], mask=m)], [{"mask": m}])
    assert seg.values == [1.0]
    q.values = [0.9, 0.1, 0.5, 0.3, 0.7, 0.5, 0.6, 0.2]
    assert q.choose(2, 2) == [
        (1, "worst", 0.1),
        (7, "worst", 0.2),
        (2, "typical", 0.5),
        (5, "typical", 0.5),
    ]
    assert q.choose() == [
        (1, "worst", 0.1),
        (7, "worst", 0.2),
        (3, "worst", 0.3),
        (2, "worst", 0.5),
        (5, "typical", 0.5),
        (6, "typical", 0.6),
    ]
    q.values = [0.4, 0.4, 0.4]
    assert q.choose(1, 1) == [(0, "worst", 0.4), (1, "typical", 0.4)]
    q.values = [0.5] * 5 + [0.1] * 20 + [0.5] * 10  # ties among many: the first ones
    assert [i for i, kind, _ in q.choose(3, 0)] == [5, 6, 7]
    q.values = []
    assert q.choose() == []


def test_side_by_side_layout():
    from vision.draw import draw_prediction

    img = np.full((30, 140, 3), 50, np.uint8)
    s = _sample([[2, 2, 20, 20], [5, 5, 8, 8]], [0, 1], difficult=[False, True], image=img)
    pred = _out([[3, 3, 21, 21]], np.array([0.4], np.float32), np.array([0]))
    out = side_by_side(s, pred, ["cat", "dog"])
    assert out.shape == (30 + HEADER, 2 * 140 + GAP, 3) and GAP == 8 and HEADER == 16
    truth = _out([[2, 2, 20, 20]], np.ones(1, np.float32), np.array([0]))
    assert np.array_equal(out[HEADER:, :140], draw_prediction(img, truth, ["cat", "dog"]))
    right = draw_prediction(img, pred, ["cat", "dog"], 0.3)
    assert np.array_equal(out[HEADER:, 140 + GAP :], right)
    assert (out[HEADER:, 140 : 140 + GAP] == 255).all()
    from PIL import ImageDraw

    header = Image.new("RGB", (2 * 140 + GAP, HEADER), "white")
    draw = ImageDraw.Draw(header)
    draw.text((2, 2), "ground truth", fill="black")
    draw.text((140 + GAP + 2, 2), "prediction (score >= 0.3)", fill="black")
    assert np.array_equal(out[:HEADER], np.asarray(header))
    ints = _sample([[2, 2, 20, 20], [5, 5, 8, 8]], [0, 1], difficult=np.array([0, 1]), image=img)
    assert np.array_equal(side_by_side(ints, pred, ["cat", "dog"]), out)
    hidden = side_by_side(s, pred, ["cat", "dog"], score_threshold=0.5)
    assert np.array_equal(hidden[HEADER:, 140 + GAP :], img)
    assert not np.array_equal(hidden[:HEADER], out[:HEADER])  # the header names the threshold
    assert (out[:HEADER, :2] == 255).all() and (out[:HEADER] < 255).any()


def test_side_by_side_masks():
    from vision.draw import draw_prediction

    img = np.full((6, 8, 3), 50, np.uint8)
    gt = np.zeros((6, 8), np.uint8)
    gt[:3], gt[0, 0] = 1, 255
    s = _sample([], [], image=img, mask=gt)
    pred = {"mask": np.full((6, 8), 2)}
    colors = [[0, 0, 0], [200, 0, 0], [0, 200, 0]]
    out = side_by_side(s, pred, ["a", "b"], 0.3, ["bg", "a", "b"], colors, True)
    kw = {"mask_names": ["bg", "a", "b"], "colors": colors, "background": True}
    assert np.array_equal(
        out[HEADER:, :8], draw_prediction(img, {"mask": gt.astype(np.int64)}, ["a", "b"], **kw)
    )
    assert np.array_equal(out[HEADER:, 8 + GAP :], draw_prediction(img, pred, ["a", "b"], **kw))
    default = side_by_side(s, pred, ["a", "b"], 0.3, ["bg", "a", "b"], colors)  # background
    assert np.array_equal(default, out)
    flat = side_by_side(s, pred, ["a", "b", "c"], 0.3, ["a", "b", "c"], colors, False)
    kw = {"mask_names": ["a", "b", "c"], "colors": colors, "background": False}
    assert np.array_equal(
        flat[HEADER:, 8 + GAP :], draw_prediction(img, pred, ["a", "b", "c"], **kw)
    )


class _Reader:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


class _Predictor:
    def __init__(self, task, out, background=True, colors=()):
        from vision.models.common import ModelMeta

        self.task, self.out, self.seen = task, out, []
        self.meta = ModelMeta(
            "m", task, ["cat", "dog"], 32, background=background, colors=list(colors)
        )

    def __call__(self, images):
        self.seen.append(images)
        return [self.out]


def test_drawn_samples_detection():
    from pathlib import Path

    from vision.draw import box_colors

    img = np.full((30, 140, 3), 50, np.uint8)
    samples = [_sample([[2, 2, 20, 20]], [0], image=img + k) for k in range(3)]
    for k, s in enumerate(samples):
        s.path = Path(f"/data/img{k}.jpg")
    pred = _out([[3, 3, 21, 21]], np.array([0.35], np.float32), np.array([1]))
    p = _Predictor("detection", pred)
    q = Quality("detection", 2)
    q.values = [0.5, 0.25, 0.75]
    out, legend = drawn_samples(p, _Reader(samples), q, worst=1, typical=1)
    assert [(o["index"], o["kind"], o["quality"]) for o in out] == [
        (1, "worst", 0.25),
        (0, "typical", 0.5),
    ]
    assert out[0]["caption"] == "worst: img1.jpg, AP at IoU 0.5 0.250"
    assert np.array_equal(
        out[0]["image"], side_by_side(samples[1], pred, ["cat", "dog"], 0.3, ["cat", "dog"])
    )
    assert np.array_equal(p.seen[0][0], samples[1].image)
    assert legend == {"names": ["cat", "dog"], "rgb": [list(c) for c in box_colors([0, 1])]}
    q.values = [0.5, 0.25, 0.75, 0.1, 0.2, 0.3, 0.4]
    samples += [samples[0]] * 4
    assert [o["index"] for o in drawn_samples(p, _Reader(samples), q)[0]] == [3, 4, 1, 5, 0, 6]


def test_drawn_samples_segmentation():
    img = np.full((6, 140, 3), 50, np.uint8)
    m = np.zeros((6, 140), np.uint8)
    s = _sample([], [], image=img, mask=m)
    s.path = "x/a.png"
    pred = {"mask": np.ones((6, 140), np.int64)}
    colors = [[1, 2, 3], [200, 0, 0], [0, 200, 0]]
    p = _Predictor("segmentation", pred, True, colors)
    q = Quality("segmentation", 3)
    q.values = [0.5]
    out, legend = drawn_samples(p, _Reader([s]), q)
    assert out[0]["caption"] == "worst: a.png, mean IoU 0.500"
    want = side_by_side(s, pred, ["cat", "dog"], 0.3, ["background", "cat", "dog"], colors, True)
    assert np.array_equal(out[0]["image"], want)
    assert legend == {"names": ["cat", "dog"], "rgb": [[200, 0, 0], [0, 200, 0]]}
    flat = _Predictor("segmentation", pred, False, [])
    out, legend = drawn_samples(flat, _Reader([s]), q)
    want = side_by_side(s, pred, ["cat", "dog"], 0.3, ["cat", "dog"], [], False)
    assert np.array_equal(out[0]["image"], want)
    assert legend == {"names": ["cat", "dog"], "rgb": [[0, 0, 0], [128, 0, 0]]}
