"""The report's building blocks one at a time: number formats, tables, the page frame, the
detection confusion matrix, per-image quality and the samples chosen from it, the FPS
protocol's bookkeeping (on a clock the test drives) and its text table."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from eval import fps, html
from eval.confusion import detection_confusion, image_confusion
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

# ---- eval.html ------------------------------------------------------------------------------


def test_fmt():
    assert html.fmt(None) == "n/a" and html.fmt(float("nan")) == "n/a"
    assert html.fmt(True) == "yes" and html.fmt(False) == "no"
    assert html.fmt(0.123456) == "0.1235" and html.fmt(0.5, 2) == "0.50"
    assert html.fmt(1234567) == "1,234,567" and html.fmt(3, unit="ms") == "3 ms"
    assert html.fmt("abc") == "abc" and html.fmt(2.0, 1, "px") == "2.0 px"
    assert html.fmt(np.float32(0.25)) == "0.25"  # neither float nor int: as text


def test_fmt_count():
    assert html.fmt_count(None) == "n/a"
    assert html.fmt_count(2_970_000, " params") == "2.97 M params"
    assert html.fmt_count(580_000_000, " FLOPs") == "580.00 M FLOPs"
    assert html.fmt_count(1e9) == "1.00 G" and html.fmt_count(999_999_999) == "1000.00 M"
    assert html.fmt_count(1e6) == "1.00 M" and html.fmt_count(1000) == "1.00 k"
    assert html.fmt_count(-2500) == "-2.50 k" and html.fmt_count(999) == "999"
    assert html.fmt_count(12.5, "x") == "12.50 x" and html.fmt_count(12.0, " ms") == "12  ms"
    assert html.fmt_count(3571, " objects") == "3.57 k objects"


def test_status_word():
    assert html.status_word("ok") == "✓ ok" and html.status_word("failed") == "✗ failed"


def test_png_data_uri_from_arrays_and_bytes():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 1] = 200
    uri = html.png_data_uri(img)
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(raw))), img)
    big = np.tile(np.arange(64, dtype=np.uint8)[:, None, None], (1, 64, 3))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", optimize=True)  # the smallest encoding
    assert (
        html.png_data_uri(big)
        == "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    )
    assert (
        html.png_data_uri(b"\x89PNG")
        == "data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()
    )


def test_table_and_md_table():
    t = html.table([["a<b", "1"], ["c", "2"]], ["name", "n&m"], numeric=(1,))
    assert t == (
        "<table><thead><tr><th>name</th><th>n&amp;m</th></tr></thead><tbody>"
        "<tr><td>a&lt;b</td><td class=num>1</td></tr><tr><td>c</td><td class=num>2</td></tr>"
        "</tbody></table>"
    )
    assert html.table([], ["x"], sortable=True).startswith('<table class="sortable"><thead>')
    assert html.md_table([["a", "1"]], ["k", "v"]) == "| k | v |\n|---|---|\n| a | 1 |"


def test_figure_legend_and_page():
    assert html.figure(b"x", 'a "b"') == (
        '<figure><img alt="a &quot;b&quot;" src="data:image/png;base64,eA=="></figure>'
    )
    assert html.figure(b"x", "a", "<c>").endswith("<figcaption>&lt;c&gt;</figcaption></figure>")
    assert html.legend(["a&b"], [(1.0, 2, 3)]) == (
        '<div class="legend"><span><i style="background:rgb(1,2,3)"></i>a&amp;b</span></div>'
    )
    two = html.legend(["a", "b"], [(1, 2, 3), (4, 5, 6)])
    assert two.count("<span>") == 2 and "</span><span>" in two
    with pytest.raises(ValueError):
        html.legend(["a", "b"], [(1, 2, 3)])
    p = html.page("t<1>", ["<p>x</p>", "<p>y</p>"])
    assert p.startswith("<!doctype html><html lang=en><head><meta charset=utf-8>")
    assert "<title>t&lt;1&gt;</title><style>" + html.CSS + "</style></head><body>" in p
    assert p.endswith("<p>x</p><p>y</p>" + html.SORT_JS + "</body></html>")
    assert "initial-scale=1" in p


# ---- eval.confusion -------------------------------------------------------------------------


def test_image_confusion_matches_greedily_by_iou():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    det = np.array([[0, 0, 10, 9], [0, 0, 10, 8], [22, 22, 30, 30], [80, 80, 90, 90]])
    m = image_confusion(gt, np.array([0, 1, 1]), det, np.array([0, 2, 2, 1]), 3)
    want = np.zeros((4, 4), np.int64)
    want[0, 0] = 1  # the best IoU (0.9) wins gt 0; the 0.8 one is left: a false alarm
    want[3, 2] = 1
    want[1, 2] = 1  # gt 1 taken for class 2 (IoU 0.64, after the 0.8 pair was passed over)
    want[1, 3] = 1  # gt 2 missed
    want[3, 1] = 1  # a detection where there is nothing
    assert m.dtype == np.int64 and np.array_equal(m, want)


def test_image_confusion_counts_add_up_in_a_cell():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]])
    det = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [100, 0, 110, 10], [120, 0, 130, 10]])
    m = image_confusion(gt, np.array([1, 1, 0, 0]), det, np.array([1, 1, 0, 0]), 2)
    assert m.tolist() == [[0, 0, 2], [0, 2, 0], [2, 0, 0]]


def test_image_confusion_ties_among_many_keep_the_first():
    # 35 ground-truth boxes, one detection: equal IoU with the 20 in the middle (the higher
    # value), the first of them takes it; a sort that is not stable picks another
    gt = np.array([[0, 0, 10, 10]] * 5 + [[0, 0, 10, 9]] * 20 + [[0, 0, 10, 10]] * 10, float)
    det = np.array([[0, 0, 10, 9]])
    labels = np.arange(35) % 2
    m = image_confusion(gt, labels, det, np.array([0]), 2)
    assert m[1, 0] == 1 and m[0, 0] == 0  # gt 5 (class 1) took it
    assert m[1, 2] == 16 and m[0, 2] == 18


def test_image_confusion_difficult_flags_as_numbers():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    m = image_confusion(
        gt, np.array([0, 1]), np.zeros((0, 4)), np.zeros(0, int), 2, difficult=[1, 0]
    )
    assert m.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_image_confusion_threshold_difficult_and_empty():
    gt, det = np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5]])  # IoU exactly 0.5
    assert image_confusion(gt, [0], det, [0], 1)[0, 0] == 1
    assert image_confusion(gt, [0], det, [0], 1, iou=0.51)[0].tolist() == [0, 1]
    hard = image_confusion(gt, [0], det, [0], 1, difficult=np.array([True]))
    assert hard.sum() == 0  # neither counted nor missed, its detection dropped
    alone = image_confusion(gt, [0], np.zeros((0, 4)), [], 2, difficult=[True])
    assert alone.sum() == 0
    assert image_confusion([], [], det, [1], 2).tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert image_confusion(gt, [1], [], [], 2).tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_image_confusion_ties_keep_the_earlier_pair():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    det = np.array([[0, 0, 10, 10]])
    m = image_confusion(gt, np.array([0, 1]), det, np.array([1]), 2)
    assert m[0, 1] == 1 and m[1, 2] == 1  # the first ground truth takes it


def test_detection_confusion_filters_by_confidence():
    gts = {
        "a": {"boxes": np.array([[0, 0, 10, 10]]), "labels": [0]},
        "b": {"boxes": np.array([[0, 0, 10, 10]]), "labels": [1], "difficult": [False]},
        "c": {"boxes": np.zeros((0, 4)), "labels": []},
    }
    dets = [
        {"image_id": "a", "label": 0, "box": [0, 0, 10, 10], "score": 0.25},
        {"image_id": "a", "label": 1, "box": [0, 0, 10, 10], "score": 0.9},
        {"image_id": "b", "label": 1, "box": [0, 0, 10, 10], "score": 0.2},
        {"image_id": "c", "label": 1, "box": [0, 0, 5, 5], "score": 0.3},
        {"image_id": "z", "label": 1, "box": [0, 0, 5, 5], "score": 0.9},  # no such image
    ]
    out = detection_confusion(gts, dets, ["cat", "dog"])
    assert out["labels"] == ["cat", "dog", "background"]
    assert all(type(v) is int for row in out["matrix"] for v in row)  # counts, not 1.0
    # a: equal IoU, so the first detection listed (the 0.25 cat, at conf) takes the cat and
    # the 0.9 dog is a false alarm; b: 0.2 < conf, the dog missed; c: a false alarm
    assert out["matrix"] == [[1, 0, 0], [0, 0, 1], [0, 2, 0]]
    assert out["settings"] == {"iou": 0.5, "conf": 0.25}
    assert out["protocol"] == (
        "objects by true (rows) and predicted (columns) class, detections with confidence "
        ">= 0.25 matched class-agnostically at IoU >= 0.5"
    )
    hard = {
        "b": {"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([1.0]), "difficult": [True]}
    }
    assert detection_confusion(hard, [], ["cat", "dog"])["matrix"] == [[0] * 3] * 3
    floats = [{"image_id": "b", "label": 1.0, "box": [0, 0, 10, 10], "score": 0.9}]
    got = detection_confusion({"b": {**hard["b"], "difficult": [False]}}, floats, ["cat", "dog"])
    assert got["matrix"][1] == [0, 1, 0]
    low = detection_confusion(gts, dets, ["cat", "dog"], iou=0.3, conf=0.1)
    assert low["matrix"][1] == [0, 1, 0] and low["settings"] == {"iou": 0.3, "conf": 0.1}
    assert "confidence >= 0.1 matched class-agnostically at IoU >= 0.3" in low["protocol"]


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


# ---- eval.fps -------------------------------------------------------------------------------


def test_summary_and_synthetic_jpegs():
    s = fps._summary([1.0, 2.0, 3.0, 10.0])
    assert s == {"mean": 4.0, "p50": 2.5, "p95": pytest.approx(8.95)}
    imgs = fps.synthetic_jpegs(3, 24, seed=1)
    assert len(imgs) == 3 and len(set(imgs)) == 3 and imgs == fps.synthetic_jpegs(3, 24, seed=1)
    assert imgs != fps.synthetic_jpegs(3, 24, seed=2) and fps.synthetic_jpegs(
        1, 8
    ) == fps.synthetic_jpegs(1, 8, 0)
    im = Image.open(io.BytesIO(imgs[0]))
    assert im.format == "JPEG" and im.size == (24, 24)
    rng = np.random.default_rng(1)
    many = fps.synthetic_jpegs(20, 24, seed=1)
    for got in many:  # twenty: some pixel of the noise is 0
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((24, 24), Image.BICUBIC).save(buf, "JPEG", quality=90)
        assert got == buf.getvalue()


class _Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class _Timed:
    """A predictor whose stages take known times on the test's clock: decode 1 ms an image,
    preprocess 2 ms, inference 3 ms, postprocess 4 ms (+ 10 ms on its first call)."""

    def __init__(self, clock):
        import torch

        from vision.models.common import ModelMeta

        self.clock, self.device, self.task, self.size, self.half = (
            clock,
            torch.device("cpu"),
            "detection",
            32,
            True,
        )
        self.meta = ModelMeta("m", "detection", ["a"], 32)
        self.decoded, self.posts = [], 0

    def decode(self, x):
        self.clock.now += 0.001
        self.decoded.append(x)
        return x

    def preprocess(self, decoded):
        self.clock.now += 0.002
        return ("x", len(decoded)), {"info": len(decoded)}

    def infer(self, x):
        assert x[0] == "x"
        self.clock.now += 0.003
        return ("raw", x[1])

    def postprocess(self, raw, info):
        assert raw[0] == "raw" and info == {"info": raw[1]}
        self.clock.now += 0.004 + (0.010 if self.posts == 0 else 0.0)
        self.posts += 1


def test_measure_times_each_stage_after_the_warm_up(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(fps, "time", clock)
    p = _Timed(clock)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB
    r = fps.measure(p, [b"a", b"b", b"c"], batch_sizes=(1, 2), warmup=1, iters=3)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a, b, c = b"a", b"b", b"c"  # cycled; each batch size starts over
    assert p.decoded == [a, b, c, a] + [a, b, c, a, b, c, a, b]
    assert {k: r[k] for k in ("model", "task", "input_size", "warmup", "iters")} == {
        "model": "m",
        "task": "detection",
        "input_size": 32,
        "warmup": 1,
        "iters": 3,
    }
    assert r["environment"] == fps.environment(p) and r["environment"]["dtype"] == "float16"
    one, two = r["runs"]
    assert one["batch"] == 1 and two["batch"] == 2
    for run, b in ((one, 1), (two, 2)):
        st = run["stages_ms"]
        assert list(st) == list(fps.STAGES)
        assert st["decode"]["mean"] == pytest.approx(b) and st["preprocess"][
            "p50"
        ] == pytest.approx(2)
        assert st["inference"]["p95"] == pytest.approx(3) and st["postprocess"][
            "mean"
        ] == pytest.approx(4)
        assert run["total_ms"]["mean"] == pytest.approx(9 + b)  # the first call was warm-up
        assert run["images_per_s"] == pytest.approx(b * 1000 / (9 + b))
        assert before <= run["peak_memory_mb"] <= after  # the process's peak RSS, in MiB
    r = fps.measure(_Timed(clock), [b"a"], batch_sizes=(1,), warmup=0, iters=2)
    assert r["runs"][0]["stages_ms"]["postprocess"]["mean"] == pytest.approx(9)
    assert r["runs"][0]["stages_ms"]["postprocess"]["p95"] == pytest.approx(13.5)


def test_measure_defaults(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(fps, "time", clock)
    p = _Timed(clock)
    r = fps.measure(p, [b"a"])
    assert [run["batch"] for run in r["runs"]] == [1, 8] and (r["warmup"], r["iters"]) == (5, 30)
    assert len(p.decoded) == 35 * 1 + 35 * 8  # 5 warm-up and 30 timed batches of each size


def test_environment_and_format():
    import platform

    import torch
    import torchvision

    env = fps.environment()
    assert env == {
        "device": platform.processor() or platform.machine(),
        "device_type": "cpu",
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "memory_note": "process peak RSS",
    }

    class Half:
        device, half = torch.device("cpu"), True

    assert fps.environment(Half())["dtype"] == "float16"

    class Meta:
        device, half = torch.device("meta"), False

    assert fps.environment(Meta())["device_type"] == "meta"  # the predictor's device
    cell = {"mean": 1.25, "p50": 2.0, "p95": 30.06}
    run = {
        "batch": 8,
        "stages_ms": {s: cell for s in fps.STAGES},
        "total_ms": cell,
        "images_per_s": 123.45,
    }
    r = {
        "model": "m",
        "task": "detection",
        "input_size": 32,
        "warmup": 5,
        "iters": 30,
        "environment": {"device_type": "cpu", "threads": 2, "dtype": "float32"},
        "runs": [run],
    }
    lines = fps.format_fps(r).split("\n")
    assert lines[0] == (
        "FPS protocol: m (detection), 32 px, warm-up 5, 30 timed iterations, cpu 2 threads float32"
    )
    assert (
        lines[1]
        == f"{'batch':>5}" + "".join(f"{s:>22}" for s in (*fps.STAGES, "total")) + f"{'img/s':>9}"
    )
    assert (
        lines[2]
        == " " * 5 + " " * 3 + "mean / p50 / p95 ms" + (" " * 3 + "mean / p50 / p95 ms") * 4
    )
    assert lines[3] == "    8" + "     1.2    2.0   30.1" * 5 + "    123.5"
    assert len(lines) == 4


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
