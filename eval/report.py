"""Reports for people and machines: JSON, Markdown and one self-contained HTML page.

The HTML has no external references: plots are inline SVG, images are base64 PNG. Every
number is shown next to its protocol, and the page ends with provenance (git commit, dataset
hash, configuration, device, library versions).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from eval.base import nan_to_none

PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def png_data_uri(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def svg_lines(
    series: dict[str, tuple[list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    w: int = 420,
    h: int = 300,
    xlim=(0.0, 1.0),
    ylim=(0.0, 1.0),
) -> str:
    """A line chart as inline SVG (one polyline per series, with a legend)."""
    left, bottom, right, top = 45, 35, 10, 10
    pw, ph = w - left - right, h - top - bottom

    def px(x, y):
        fx = (x - xlim[0]) / ((xlim[1] - xlim[0]) or 1)
        fy = (y - ylim[0]) / ((ylim[1] - ylim[0]) or 1)
        return left + fx * pw, top + (1 - fy) * ph

    parts = [
        f'<svg width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in np.linspace(0, 1, 6):
        x, y = px(xlim[0] + t * (xlim[1] - xlim[0]), ylim[0] + t * (ylim[1] - ylim[0]))
        parts.append(
            f'<text x="{x:.1f}" y="{h - bottom + 14}" text-anchor="middle">'
            f"{xlim[0] + t * (xlim[1] - xlim[0]):.2g}</text>"
        )
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{ylim[0] + t * (ylim[1] - ylim[0]):.2g}</text>"
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{h - 4}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 12 '
        f'{top + ph / 2})">{html.escape(ylabel)}</text>'
    )
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        if xs:
            pts = " ".join("{:.1f},{:.1f}".format(*px(x, y)) for x, y in zip(xs, ys, strict=True))
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{pts}"/>'
            )
        parts.append(
            f'<text x="{left + pw - 4}" y="{top + 14 + 13 * i}" text-anchor="end" '
            f'fill="{color}">{html.escape(name)}</text>'
        )
    return "".join(parts) + "</svg>"


def svg_heatmap(matrix: list[list[float]], labels: list[str], cell: int = 34) -> str:
    """A row-normalized confusion matrix (rows: ground truth, columns: prediction)."""
    m = np.asarray(matrix, np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(labels)
    pad = 90
    w = pad + n * cell + 10
    parts = [f'<svg width="{w}" height="{w}" font-family="sans-serif" font-size="10">']
    for i in range(n):
        parts.append(
            f'<text x="{pad - 4}" y="{pad + i * cell + cell / 2 + 3}" '
            f'text-anchor="end">{html.escape(labels[i])}</text>'
        )
        parts.append(
            f'<text x="{pad + i * cell + cell / 2}" y="{pad - 6}" text-anchor="start" '
            f'transform="rotate(-45 {pad + i * cell + cell / 2} {pad - 6})">'
            f"{html.escape(labels[i])}</text>"
        )
        for j in range(n):
            v = norm[i, j]
            shade = int(255 - 200 * v)
            parts.append(
                f'<rect x="{pad + j * cell}" y="{pad + i * cell}" width="{cell}" '
                f'height="{cell}" fill="rgb({shade},{shade},255)" stroke="#fff">'
                f"<title>gt {html.escape(labels[i])} → pred {html.escape(labels[j])}: "
                f"{int(m[i, j])} px</title></rect>"
            )
            parts.append(
                f'<text x="{pad + j * cell + cell / 2}" y="{pad + i * cell + cell / 2 + 3}"'
                f' text-anchor="middle" fill="{"#fff" if v > 0.6 else "#000"}">'
                f"{v:.2f}</text>"
            )
    return "".join(parts) + "</svg>"


def _table(rows: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _md_table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


COCO_LABELS = {
    "AP": "COCO AP, IoU .50:.05:.95, all areas, 100 dets, 101-point",
    "AP50": "COCO AP, IoU .50, all areas, 100 dets",
    "AP75": "COCO AP, IoU .75, all areas, 100 dets",
    "APs": "COCO AP, IoU .50:.95, small (< 32² px)",
    "APm": "COCO AP, IoU .50:.95, medium (32²–96² px)",
    "APl": "COCO AP, IoU .50:.95, large (≥ 96² px)",
    "AR100": "COCO AR, IoU .50:.95, all areas, 100 dets",
}


def headline_rows(task: str, metrics: dict) -> list[list[str]]:
    """(metric, value, protocol) rows of a model's evaluation."""
    if task == "detection":
        c, v7, v12, prf = metrics["coco"], metrics["voc07"], metrics["voc12"], metrics["prf"]
        rows = [[k, fmt(c[k]), COCO_LABELS[k]] for k in COCO_LABELS]
        rows += [
            ["mAP (VOC07)", fmt(v7["mAP"]), v7["protocol"]],
            ["mAP (VOC12)", fmt(v12["mAP"]), v12["protocol"]],
        ]
        rows += [[k, fmt(prf[k]), prf["protocol"]] for k in ("precision", "recall", "F1")]
        rows.append(
            [
                "best-F1 confidence",
                fmt(prf["best_F1_conf"], 3),
                f"F1 {fmt(prf['best_F1'])} at that confidence",
            ]
        )
        return rows
    s = metrics["seg"]
    return [[k, fmt(s[k]), s["protocol"]] for k in ("mIoU", "pixel_acc", "mean_acc", "fwIoU")]


def per_class_rows(task: str, metrics: dict, names: list[str]) -> tuple[list[str], list[list]]:
    if task == "detection":
        c, v7, v12 = metrics["coco"], metrics["voc07"], metrics["voc12"]
        prf = metrics["prf"]["per_class"]
        head = ["class", "COCO AP", "VOC07 AP", "VOC12 AP", "P@0.5", "R@0.5", "F1@0.5"]
        rows = [
            [
                n,
                fmt(c["per_class"][n]),
                fmt(v7["per_class"][n]),
                fmt(v12["per_class"][n]),
                fmt(prf[n]["precision"]),
                fmt(prf[n]["recall"]),
                fmt(prf[n]["f1"]),
            ]
            for n in names
        ]
        return head, rows
    s = metrics["seg"]
    return ["class", "IoU", "accuracy"], [
        [n, fmt(s["per_class_iou"][n]), fmt(s["per_class_acc"][n])] for n in s["per_class_iou"]
    ]


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:left}th{background:#f3f3f3}h1{font-size:22px}h2{font-size:17px;
margin-top:28px}.imgs img{max-width:250px;margin:4px;border:1px solid #ccc}.small{color:#666;
font-size:12px}"""


def write_model_report(
    out: Path | str,
    title: str,
    task: str,
    metrics: dict,
    names: list[str],
    samples: list[np.ndarray] | None = None,
    fps: dict | None = None,
    provenance: dict | None = None,
) -> dict:
    """Write ``report.json``, ``report.md`` and ``report.html`` for one model on one dataset."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "title": title,
        "task": task,
        "metrics": metrics,
        "fps": fps,
        "provenance": provenance or {},
    }
    (out / "report.json").write_text(json.dumps(nan_to_none(data), indent=1))
    head_rows = headline_rows(task, metrics)
    pc_head, pc_rows = per_class_rows(task, metrics, names)
    fps_rows = [
        [
            str(r["batch"]),
            fmt(r["total_ms"]["p50"], 1),
            fmt(r["total_ms"]["p95"], 1),
            fmt(r["stages_ms"]["inference"]["p50"], 1),
            fmt(r["images_per_s"], 1),
        ]
        for r in (fps or {}).get("runs", [])
    ]
    fps_head = ["batch", "total p50 ms", "total p95 ms", "inference p50 ms", "images/s"]
    prov_rows = [
        [k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
        for k, v in (provenance or {}).items()
    ]
    md = [
        f"# {title}",
        "",
        _md_table(head_rows, ["metric", "value", "protocol"]),
        "",
        "## Per class",
        "",
        _md_table(pc_rows, pc_head),
    ]
    if fps_rows:
        md += ["", "## Speed (FPS protocol)", "", _md_table(fps_rows, fps_head)]
    md += ["", "## Provenance", "", _md_table(prov_rows, ["key", "value"]), ""]
    (out / "report.md").write_text("\n".join(md))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Headline metrics</h2>",
        _table(head_rows, ["metric", "value", "protocol"]),
        "<h2>Per class</h2>",
        _table(pc_rows, pc_head),
    ]
    if task == "detection":
        curves = {n: (c["recall"], c["precision"]) for n, c in metrics["prf"]["pr_curves"].items()}
        body += [
            "<h2>Precision–recall curves</h2>",
            "<p class=small>Interpolated precision envelope, VOC devkit matching at IoU 0.5</p>",
            svg_lines(curves, "recall", "precision"),
        ]
    else:
        body += [
            "<h2>Confusion matrix</h2><p class=small>Rows: ground truth, columns: "
            "prediction, row-normalized pixel counts (ignore pixels excluded)</p>",
            svg_heatmap(metrics["seg"]["confusion"], list(metrics["seg"]["per_class_iou"])),
        ]
    if samples:
        body += [
            "<h2>Samples</h2><div class=imgs>"
            + "".join(
                f'<img alt="sample {i}" src="{png_data_uri(s)}">' for i, s in enumerate(samples)
            )
            + "</div>"
        ]
    if fps_rows:
        env = fps["environment"]
        body += [
            "<h2>Speed (FPS protocol)</h2>",
            f"<p class=small>{fps['input_size']} px, {fps['warmup']} warm-up + "
            f"{fps['iters']} timed iterations, {html.escape(str(env['device']))}, "
            f"{env['threads']} threads, {env['dtype']}</p>",
            _table(fps_rows, fps_head),
        ]
    body += ["<h2>Provenance</h2>", _table(prov_rows, ["key", "value"])]
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    (out / "report.html").write_text(page)
    return data
