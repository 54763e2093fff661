"""The report's figures, read back from matplotlib's objects instead of pixels: what each plot
draws (lines, points, bars, texts, ticks, legends, limits, colours) and which plot each report
section asks for with which data. The PNG step itself is checked once, on a real figure."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from eval import plots

from .figure_data import STYLE


def test_png_is_tight_at_the_report_dpi():
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(2, 1), dpi=72)
        fig.add_subplot().plot([0, 1], [0, 1])
        im = Image.open(io.BytesIO(plots._png(fig)))
    assert im.format == "PNG" and plots.DPI == 100
    assert [round(v) for v in im.info["dpi"]] == [100, 100]
    assert im.size != (200, 100) and abs(im.size[0] - 200) < 40  # trimmed to the drawing


def test_class_colors_cycle():
    assert plots.class_color(0) == "#1f77b4" and plots.class_color(19) == "#9edae5"
    assert plots.class_color(20) == "#1f77b4" and len(plots.CLASS_COLORS) == 20


def test_finite():
    assert plots._finite([1.0, None, float("nan"), 2, 0.0]) == [1.0, 2, 0.0]


def test_pr_curves(seen):
    curves = {"a": ([0.0, 0.5, 1.0], [1.0, None, 0.5]), "b": ([0.0, 1.0], [-1, -1])}
    d = seen(plots.pr_curves(curves, "T", {"a": 0.75, "b": None}, ([0.0, 1.0], [0.9, -1])))
    ax = d["axes"][0]
    assert d["size"] == [5.6, 4.2] and ax["title"] == "T"
    assert (ax["xlabel"], ax["ylabel"], ax["xlim"], ax["ylim"]) == (
        "recall",
        "precision",
        [0, 1],
        [0, 1.02],
    )
    a, mean = ax["lines"]  # b has no point with a precision: no line
    assert (a["x"], a["y"], a["color"], a["lw"], a["label"]) == (
        [0, 1],
        [1, 0.5],
        "#1f77b4",
        1.2,
        "a 0.750",
    )
    assert (mean["x"], mean["y"], mean["color"], mean["lw"]) == ([0], [0.9], "black", 2.6)
    assert mean["label"] == "all classes" and ax["grid"] == [[True, 0.3], [True, 0.3]]
    assert ax["legend"]["texts"] == ["a 0.750", "all classes"] and ax["legend"]["loc"] == 3
    assert ax["legend"]["size"] == [8, 8]
    plain = seen(plots.pr_curves({"a": ([0, 1], [1, 1])}, "T"))["axes"][0]
    assert plain["lines"][0]["label"] == "a" and plain["legend"]["texts"] == ["a"]
    none = seen(plots.pr_curves({"a": ([0.0], [None])}, "T", mean=([0.0], [-1])))["axes"][0]
    assert none["lines"] == [] and none["legend"]["texts"] == []
    # recall as x (not the point's index), and a precision of 0 drawn
    at = seen(plots.pr_curves({"a": ([0.2, 0.5, 1.0], [1, 0, -1])}, "T", mean=([0.3], [0.0])))
    a, mean = at["axes"][0]["lines"]
    assert (a["x"], a["y"], mean["x"], mean["y"]) == ([0.2, 0.5], [1, 0], [0.3], [0])


def test_legend_beside_many_entries(seen):
    many = {f"c{k}": ([0, 1], [1, 1]) for k in range(31)}
    leg = seen(plots.pr_curves(many, "T"))["axes"][0]["legend"]
    assert leg["loc"] == 2 and leg["ncols"] == 2 and leg["size"][0] == 7
    for n, cols in ((29, 1), (30, 2)):  # a second column from 30 entries
        some = {f"c{k}": ([0, 1], [1, 1]) for k in range(n)}
        assert seen(plots.pr_curves(some, "T"))["axes"][0]["legend"]["ncols"] == cols
    ten = {f"c{k}": ([0, 1], [1, 1]) for k in range(10)}
    assert seen(plots.pr_curves(ten, "T"))["axes"][0]["legend"]["loc"] == 3
    eleven = seen(plots.pr_curves(ten, "T", mean=([0, 1], [1, 1])))["axes"][0]["legend"]
    assert eleven["loc"] == 2 and eleven["ncols"] == 1 and eleven["anchor"][:2] == [1.01, 1]


def test_f1_confidence(seen):
    d = seen(
        plots.f1_confidence([0.1, 0.5, 0.9], [0.2, 0.8, None], {"a": [0.1, None, 0.3]}, 0.5, "F")
    )
    ax = d["axes"][0]
    assert d["size"] == [5.6, 4.2]
    a, overall, mark = ax["lines"]
    assert (a["x"], a["y"], a["color"], a["lw"], a["alpha"], a["label"]) == (
        [0.1, 0.5, 0.9],
        [0.1, None, 0.3],
        "#1f77b4",
        1,
        0.7,
        "a",
    )
    assert (overall["x"], overall["y"], overall["color"], overall["lw"], overall["label"]) == (
        [0.1, 0.5, 0.9],
        [0.2, 0.8, None],
        "black",
        2.6,
        "all classes",
    )
    assert (mark["x"], mark["color"], mark["ls"], mark["lw"]) == ([0.5, 0.5], "#d62728", "--", 1.5)
    (note,) = ax["texts"]
    assert note["text"] == "best F1 0.800\nat 0.50" and note["xy"] == [0.5, 0.8]
    assert (note["xytext"], note["coords"], note["size"], note["color"]) == (
        [8, -28],
        "offset points",
        8,
        "#d62728",
    )
    assert (ax["xlabel"], ax["ylabel"], ax["xlim"], ax["ylim"], ax["title"]) == (
        "confidence threshold",
        "F1",
        [0, 1],
        [0, 1.02],
        "F",
    )
    assert ax["legend"]["texts"] == ["a", "all classes"] and ax["grid"][0] == [True, 0.3]
    nine = {f"c{k}": [0.5, 0.5] for k in range(9)}  # with all classes: 10 entries, inside
    assert (
        seen(plots.f1_confidence([0, 1], [0.5, 0.5], nine, None, "F"))["axes"][0]["legend"]["loc"]
        == 3
    )
    for chosen in (None, float("nan")):
        ax = seen(plots.f1_confidence([0, 1], [0.1, 0.2], {}, chosen, "F"))["axes"][0]
        assert len(ax["lines"]) == 1 and ax["texts"] == []
    ax = seen(plots.f1_confidence([0, 1], [None, None], {}, 0.5, "F"))["axes"][0]
    assert ax["texts"][0]["text"] == "best F1 0.000\nat 0.50"


def test_confusion(seen):
    d = seen(plots.confusion([[3, 1], [0, 0]], ["a", "b"], "C"))
    ax, bar = d["axes"]
    assert d["size"] == [pytest.approx(3.4), pytest.approx(3.4 * 0.85)]
    # the colour bar beside the matrix: 4.6 % of the width, 4 % apart
    assert (ax["position"], bar["position"]) == (
        [0.17885, 0.11, 0.6545, 0.77],
        [0.86435, 0.11, 0.03565, 0.77],
    )
    even = seen(plots.confusion([[1, 1], [1, 1]], ["a", "b"], "C"))["axes"][0]["images"][0]
    assert even["clim"] == [0, 1]  # shares on a fixed scale, whatever the data's range
    assert ax["images"][0] == {"data": [[0.75, 0.25], [0, 0]], "cmap": "Blues", "clim": [0, 1]}
    assert [t["text"] for t in ax["texts"]] == ["0.75", "0.25"]  # empty cells unwritten
    t0, t1 = ax["texts"]
    assert (t0["pos"], t0["color"], t0["size"], t0["ha"], t0["va"]) == (
        [0, 0],
        "white",
        7,
        "center",
        "center",
    )
    assert (t1["pos"], t1["color"]) == ([1, 0], "black")
    assert [t["text"] for t in ax["xticks"][1]] == ["a", "b"] and ax["xticks"][0] == [0, 1]
    assert (
        ax["xticks"][1][0]["rotation"],
        ax["xticks"][1][0]["ha"],
        ax["xticks"][1][0]["size"],
    ) == (60, "right", 8)
    assert [t["text"] for t in ax["yticks"][1]] == ["a", "b"] and ax["yticks"][1][0]["size"] == 8
    assert (ax["xlabel"], ax["ylabel"], ax["title"]) == ("predicted", "true", "C")
    assert bar["ylim"] == [0, 1]
    six = seen(plots.confusion([[6, 4]] * 2, ["a", "b"], "C", "p", "t"))
    assert [t["color"] for t in six["axes"][0]["texts"]] == ["black", "black", "black", "black"]
    assert (six["axes"][0]["xlabel"], six["axes"][0]["ylabel"]) == ("p", "t")
    assert (
        seen(plots.confusion([[0.61, 0.39], [0, 1]], ["a", "b"], "C"))["axes"][0]["texts"][0][
            "color"
        ]
        == "white"
    )
    big = seen(plots.confusion(np.eye(26), [str(k) for k in range(26)], "C"))
    assert big["axes"][0]["texts"] == [] and big["size"][0] == 12.0
    at25 = seen(plots.confusion(np.eye(25), [str(k) for k in range(25)], "C"))
    assert len(at25["axes"][0]["texts"]) == 25 and at25["size"][0] == 12.0


def test_training_curves(seen):
    rows = [
        {"epoch": 1, "train_loss": 2.0, "lr": 0.1},
        {"epoch": 2, "train_loss": 1.0, "lr": 0.05, "mAP": 0.4},
    ]
    d = seen(plots.training_curves(rows, "mAP", "run"))
    assert d["size"] == [10.5, 3.0] and d["suptitle"] == ["run", 10]
    loss, lr, val = d["axes"]
    assert (loss["lines"][0]["x"], loss["lines"][0]["y"], loss["lines"][0]["color"]) == (
        [1, 2],
        [2, 1],
        "#1f77b4",
    )
    assert loss["lines"][0]["marker"] == "o" and loss["lines"][0]["ls"] == "-"
    assert (loss["xlabel"], loss["ylabel"], loss["title"]) == ("epoch", "training loss", "loss")
    assert (lr["lines"][0]["x"], lr["lines"][0]["marker"], lr["lines"][0]["ls"]) == (
        [1, 2],
        "o",
        "-",
    )
    # three panels side by side
    assert [p["position"] for p in d["axes"]] == [
        [0.125, 0.11, 0.227941, 0.77],
        [0.398529, 0.11, 0.227941, 0.77],
        [0.672059, 0.11, 0.227941, 0.77],
    ]
    assert (lr["lines"][0]["y"], lr["lines"][0]["color"], lr["title"]) == (
        [0.1, 0.05],
        "#ff7f0e",
        "learning rate",
    )
    assert lr["ylabel"] == "learning rate (end of epoch)" and lr["xlabel"] == "epoch"
    assert (val["lines"][0]["marker"], val["lines"][0]["ls"]) == ("o", "-")
    assert (val["lines"][0]["x"], val["lines"][0]["y"], val["lines"][0]["color"]) == (
        [2],
        [0.4],
        "#2ca02c",
    )
    assert (val["xlabel"], val["ylabel"], val["title"]) == ("epoch", "mAP", "validation mAP")
    assert all(a["grid"][0] == [True, 0.3] for a in d["axes"])
    none = seen(plots.training_curves(rows[:1], "mAP", "run"))
    assert none["axes"][2]["lines"] == [] and none["axes"][2]["title"] == "validation mAP"


def test_scatter(seen):
    pts = [("eager", 10.0, 0.6), ("onnx", 5.0, 0.59), ("int8", 2.0, 0.5)]
    d = seen(plots.scatter(pts, "ms", "AP", "S", front=["int8", "onnx"], highlight="onnx"))
    ax = d["axes"][0]
    assert d["size"] == [5.6, 4.0]
    eager, onnx, int8 = ax["points"]
    assert eager["xy"] == [[10, 0.6]] and eager["sizes"] == [45] and onnx["sizes"] == [120]
    assert eager["marker"] != onnx["marker"] and eager["marker"] == int8["marker"]
    assert eager["z"] == 3 and eager["label"] == "eager"
    assert eager["color"][0][:3] == pytest.approx([0x1F / 255, 0x77 / 255, 0xB4 / 255], abs=1e-6)
    assert [t["text"] for t in ax["texts"]] == ["eager", "onnx", "int8"]
    t = ax["texts"][1]
    assert (t["xy"], t["xytext"], t["coords"], t["size"]) == ([5, 0.59], [6, 5], "offset points", 8)
    (front,) = ax["lines"]
    assert (front["x"], front["y"], front["ls"], front["color"], front["lw"]) == (
        [2, 5],
        [0.5, 0.59],
        "--",
        "gray",
        1,
    )
    assert front["label"] == "Pareto front" and ax["xlim"] == [0, 12.5]
    assert (ax["xlabel"], ax["ylabel"], ax["title"], ax["grid"][0]) == (
        "ms",
        "AP",
        "S",
        [True, 0.3],
    )
    assert ax["legend"]["loc"] == 4 and ax["legend"]["size"][0] == 8
    assert ax["legend"]["texts"] == ["eager", "onnx", "int8", "Pareto front"]
    plain = seen(plots.scatter(pts[:1], "x", "y", "S"))["axes"][0]
    assert plain["lines"] == [] and plain["points"][0]["sizes"] == [45]
    assert seen(plots.scatter([], "x", "y", "S"))["axes"][0]["xlim"] == [0, 1]
    eleven = [(f"m{k}", 1.0 + k, 0.5) for k in range(11)]  # the 11th: tab20's first light shade
    last = seen(plots.scatter(eleven, "x", "y", "S"))["axes"][0]["points"][10]["color"][0]
    assert last[:3] == pytest.approx([0xAE / 255, 0xC7 / 255, 0xE8 / 255], abs=1e-6)


def test_bars(seen):
    d = seen(plots.bars({"a": 0.5, "b": float("nan"), "c": None, "d": 0.25}, "B", "AP"))
    ax = d["axes"][0]
    assert d["size"] == [6.0, pytest.approx(0.8 + 0.28 * 4)]
    assert [b["w"] for b in ax["bars"]] == [0.5, 0, 0, 0.25] and [b["y"] for b in ax["bars"]][
        0
    ] == -0.4
    assert ax["bars"][1]["color"][:3] == pytest.approx([1, 0x7F / 255, 0x0E / 255], abs=1e-6)
    assert [t["text"] for t in ax["texts"]] == ["0.500", "n/a", "n/a", "0.250"]
    assert ax["texts"][0]["pos"] == [0.505, 0] and ax["texts"][3]["pos"] == [0.255, 3]
    assert (ax["texts"][0]["va"], ax["texts"][0]["size"]) == ("center", 7)
    assert [t["text"] for t in ax["yticks"][1]] == ["a", "b", "c", "d"] and ax["yticks"][1][0][
        "size"
    ] == 8
    assert ax["y_inverted"] and ax["xlim"] == [0, 0.575]
    assert (ax["xlabel"], ax["title"], ax["grid"]) == ("AP", "B", [[True, 0.3], [False, 1.0]])
    one = seen(plots.bars({"a": 3.0}, "B", "n", "{:.0f}"))
    assert (
        one["size"][1] == pytest.approx(0.8 + 0.28 * 2)
        and one["axes"][0]["texts"][0]["text"] == "3"
    )
    zero = seen(plots.bars({"a": 0.0}, "B", "n"))["axes"][0]
    assert zero["xlim"] == [0, 1.15] and zero["texts"][0]["pos"] == [0.01, 0]
    assert seen(plots.bars({}, "B", "n"))["axes"][0]["xlim"] == [0, 1.15]


def test_histogram(seen):
    d = seen(plots.histogram([3, 5, 1], [0, 32, 96, None], "H", "size"))
    ax = d["axes"][0]
    assert d["size"] == [6.0, 3.0] and [b["h"] for b in ax["bars"]] == [3, 5, 1]
    assert ax["bars"][0]["color"][:3] == pytest.approx(
        [0x1F / 255, 0x77 / 255, 0xB4 / 255], abs=1e-6
    )
    ticks = ax["xticks"][1]
    assert [t["text"] for t in ticks] == ["0–32", "32–96", "≥ 96"]
    assert (ticks[0]["rotation"], ticks[0]["ha"], ticks[0]["size"]) == (45, "right", 8)
    assert (ax["xlabel"], ax["ylabel"], ax["title"]) == ("size", "objects", "H")
    assert ax["grid"] == [[False, 1.0], [True, 0.3]]
    inf = seen(plots.histogram([1, 2], [0.5, 1.5, float("inf")], "H", "s"))["axes"][0]
    assert [t["text"] for t in inf["xticks"][1]] == ["0.5–1.5", "≥ 1.5"]
