"""Report figures with matplotlib, as PNG bytes (embedded in the HTML reports as data URIs,
so a report opens offline): precision–recall and F1–confidence curves, confusion matrices,
training curves, accuracy–latency scatter plots with labelled points, and bar charts.

Only matplotlib's object API (``Figure`` + the Agg canvas) is used: no pyplot state, safe in
threads and servers, no display needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 100
# colour of class k, the same in every figure of a report (tab10, then tab20's light shades)
CLASS_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip


def class_color(k: int) -> str:
    return CLASS_COLORS[k % len(CLASS_COLORS)]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _legend(ax, n: int) -> None:
    """A legend beside the axes when there are many entries, inside otherwise."""
    if n > 10:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=1 + n // 30)
    elif n:
        ax.legend(fontsize=8, loc="lower left")


def pr_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    ap: dict[str, float] | None = None,
    mean: tuple[Sequence[float], Sequence[float]] | None = None,
) -> bytes:
    """Precision against recall, one line per class (labelled with its AP when given), and the
    mean over classes as a thick black line."""
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.add_subplot()
    for k, (name, (rec, prec)) in enumerate(curves.items()):
        pts = [(r, p) for r, p in zip(rec, prec, strict=True) if p is not None and p >= 0]
        label = f"{name} {ap[name]:.3f}" if ap and ap.get(name) is not None else name
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=class_color(k), lw=1.2, label=label)
    if mean is not None:
        pts = [(r, p) for r, p in zip(*mean, strict=True) if p is not None and p >= 0]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color="black", lw=2.6, label="all classes")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    _legend(ax, len(curves) + (mean is not None))
    return _png(fig)


def f1_confidence(
    conf: Sequence[float],
    overall: Sequence[float],
    per_class: dict[str, Sequence[float]],
    chosen: float | None,
    title: str,
) -> bytes:
    """F1 against the confidence threshold, per class and for all classes pooled, with the
    chosen threshold marked."""
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.add_subplot()
    for k, (name, f1) in enumerate(per_class.items()):
        ax.plot(
            conf,
            [np.nan if v is None else v for v in f1],
            color=class_color(k),
            lw=1,
            alpha=0.7,
            label=name,
        )
    ax.plot(
        conf,
        [np.nan if v is None else v for v in overall],
        color="black",
        lw=2.6,
        label="all classes",
    )
    if chosen is not None and not math.isnan(chosen):
        best = max(_finite(overall), default=0.0)
        ax.axvline(chosen, color="#d62728", ls="--", lw=1.5)
        ax.annotate(
            f"best F1 {best:.3f}\nat {chosen:.2f}",
            (chosen, best),
            xytext=(8, -28),
            textcoords="offset points",
            fontsize=8,
            color="#d62728",
        )
    ax.set(xlabel="confidence threshold", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    _legend(ax, len(per_class) + 1)
    return _png(fig)


def confusion(
    matrix: Sequence[Sequence[float]],
    labels: Sequence[str],
    title: str,
    xlabel: str = "predicted",
    ylabel: str = "true",
) -> bytes:
    """A confusion matrix, each row normalized (the share of a true class's pixels or objects
    that went to each prediction), counts in the tooltip-free cells as shares."""
    m = np.asarray(matrix, np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(labels)
    size = min(12.0, 2.5 + 0.45 * n)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black",
                    )
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _png(fig)


def training_curves(rows: list[dict], metric: str, title: str) -> bytes:
    """A run's ``metrics.jsonl``: training loss, learning rate and the validation metric per
    epoch (epochs without validation are left out of the last)."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10.5, 3.0))
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [r.get("train_loss") for r in rows], "o-", color="#1f77b4")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    axes[1].plot(epochs, [r.get("lr") for r in rows], "o-", color="#ff7f0e")
    axes[1].set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    val = [(r["epoch"], r[metric]) for r in rows if r.get(metric) is not None]
    if val:
        axes[2].plot(*zip(*val, strict=True), "o-", color="#2ca02c")
    axes[2].set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def scatter(
    points: list[tuple[str, float, float]],
    xlabel: str,
    ylabel: str,
    title: str,
    front: list[str] | None = None,
    highlight: str | None = None,
) -> bytes:
    """Labelled points (label, x, y), e.g. accuracy against latency; ``front`` (labels, in x
    order) joined by a line (the Pareto front); ``highlight`` drawn as a star."""
    fig = Figure(figsize=(5.6, 4.0))
    ax = fig.add_subplot()
    for k, (label, x, y) in enumerate(points):
        star = label == highlight
        ax.scatter(
            [x],
            [y],
            s=120 if star else 45,
            marker="*" if star else "o",
            color=class_color(k),
            zorder=3,
            label=label,
        )
        ax.annotate(label, (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8)
    if front:
        pts = sorted((x, y) for label, x, y in points if label in front)
        ax.plot(*zip(*pts, strict=True), "--", color="gray", lw=1, label="Pareto front")
    xs = [p[1] for p in points]
    ax.set_xlim(0, max(xs) * 1.25 if xs else 1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def bars(values: dict[str, float], title: str, xlabel: str, fmt: str = "{:.3f}") -> bytes:
    """Horizontal bars, one per class (in the given order), the value written at each bar's
    end; NaN (a class without ground truth) shown as 'n/a'."""
    names = list(values)
    vals = [values[n] for n in names]
    fig = Figure(figsize=(6.0, 0.8 + 0.28 * max(len(names), 2)))
    ax = fig.add_subplot()
    finite = [0.0 if v is None or math.isnan(v) else v for v in vals]
    ax.barh(range(len(names)), finite, color=[class_color(k) for k in range(len(names))])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    top = max(finite, default=1.0) or 1.0
    for i, v in enumerate(vals):
        text = "n/a" if v is None or math.isnan(v) else fmt.format(v)
        ax.text(finite[i] + top * 0.01, i, text, va="center", fontsize=7)
    ax.set_xlim(0, top * 1.15)
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def histogram(counts: Sequence[int], edges: Sequence, title: str, xlabel: str) -> bytes:
    """Counts per bin ``[edges[i], edges[i+1])`` as bars with the bins' edges as labels (an
    upper edge None or inf: an open last bin)."""
    edges = [math.inf if e is None else e for e in edges]
    fig = Figure(figsize=(6.0, 3.0))
    ax = fig.add_subplot()
    labels = [
        f"{edges[i]:g}–{edges[i + 1]:g}" if math.isfinite(edges[i + 1]) else f"≥ {edges[i]:g}"
        for i in range(len(counts))
    ]
    ax.bar(range(len(counts)), counts, color="#1f77b4")
    ax.set_xticks(range(len(counts)), labels, rotation=45, ha="right", fontsize=8)
    ax.set(xlabel=xlabel, ylabel="objects", title=title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
