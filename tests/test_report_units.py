"""The report's building blocks one at a time: number formats, tables, the page frame, the
detection confusion matrix, per-image quality and the samples chosen from it, the FPS
protocol's bookkeeping (on a clock the test drives) and its text table."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from eval import html
from eval.confusion import detection_confusion, image_confusion

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
