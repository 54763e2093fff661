"""A figure read back as plain data (what it draws: lines, points, bars, texts, ticks,
legends, limits, colours, axes positions), and the unusual matplotlib style the report's
figures are drawn under in tests (they must not change with a user's style)."""

from __future__ import annotations

import math

import numpy as np
from cycler import cycler
from matplotlib.figure import Figure


def _num(v):
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else round(float(v), 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_num(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    return v


def _text(t) -> dict:
    out = {
        "text": t.get_text(),
        "pos": _num(t.get_position()),
        "size": t.get_fontsize(),
        "color": str(t.get_color()),
        "ha": t.get_ha(),
        "va": t.get_va(),
        "rotation": t.get_rotation(),
    }
    if hasattr(t, "xyann"):
        out |= {"xy": _num(t.xy), "xytext": _num(t.xyann), "coords": str(t.anncoords)}
    return out


def describe(fig: Figure) -> dict:
    """What a figure shows, as plain data."""
    axes = []
    for ax in fig.axes:
        legend = ax.get_legend()
        grid = [ax.xaxis.get_gridlines(), ax.yaxis.get_gridlines()]
        axes.append(
            {
                "position": _num(ax.get_position().bounds),
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "xlim": _num(ax.get_xlim()),
                "ylim": _num(ax.get_ylim()),
                "y_inverted": bool(ax.yaxis_inverted()),
                "lines": [
                    {
                        "x": _num(np.asarray(ln.get_xdata(), float)),
                        "y": _num(np.asarray(ln.get_ydata(), float)),
                        "color": str(ln.get_color()),
                        "lw": ln.get_linewidth(),
                        "ls": ln.get_linestyle(),
                        "alpha": ln.get_alpha(),
                        "marker": str(ln.get_marker()),
                        "label": ln.get_label(),
                    }
                    for ln in ax.get_lines()
                ],
                "texts": [_text(t) for t in ax.texts],
                "points": [
                    {
                        "xy": _num(c.get_offsets()),
                        "sizes": _num(c.get_sizes()) if hasattr(c, "get_sizes") else None,
                        "color": _num(c.get_facecolor()),
                        "z": c.get_zorder(),
                        "label": c.get_label(),
                        "marker": len(c.get_paths()[0].vertices) if c.get_paths() else 0,
                    }
                    for c in ax.collections
                ],
                "bars": [
                    {
                        "x": _num(p.get_x()),
                        "y": _num(p.get_y()),
                        "w": _num(p.get_width()),
                        "h": _num(p.get_height()),
                        "color": _num(p.get_facecolor()),
                    }
                    for p in ax.patches
                ],
                "images": [
                    {
                        "data": _num(np.asarray(im.get_array())),
                        "cmap": im.get_cmap().name,
                        "clim": _num(im.get_clim()),
                    }
                    for im in ax.get_images()
                ],
                "xticks": [_num(ax.get_xticks()), [_text(t) for t in ax.get_xticklabels()]],
                "yticks": [_num(ax.get_yticks()), [_text(t) for t in ax.get_yticklabels()]],
                "grid": [[bool(g.get_visible()), g.get_alpha()] for gs in grid for g in gs[:1]],
                "legend": None
                if legend is None
                else {
                    "texts": [t.get_text() for t in legend.get_texts()],
                    "size": [t.get_fontsize() for t in legend.get_texts()],
                    "loc": legend._loc,
                    "ncols": legend._ncols,
                    "anchor": _num(
                        legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).bounds
                    ),
                },
            }
        )
    sup = fig._suptitle
    return {
        "size": _num(fig.get_size_inches()),
        "suptitle": None if sup is None else [sup.get_text(), sup.get_fontsize()],
        "axes": axes,
    }


# a user's matplotlib style far from the defaults: a report's figures must not change with it
STYLE = {
    "axes.prop_cycle": cycler(color=["#000001"]),
    "lines.linewidth": 3.3,
    "font.size": 5.5,
    "figure.figsize": (1.0, 1.0),
    "savefig.format": "svg",
    "savefig.dpi": 50,
}
