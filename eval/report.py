"""Reports for people and machines: JSON, Markdown and one self-contained HTML page.

The HTML has no external references: plots are inline SVG, images are base64 PNG. Every
number is shown next to its protocol, and the page ends with provenance (git commit, dataset
hash, configuration, device, library versions).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from eval.base import nan_to_none
from eval.figures import model_figures
from eval.html import fmt, legend, md_table, page, png_data_uri, table

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
    """The per-class table: every protocol the metrics hold (n/a where one is missing)."""

    def pc(key: str, name: str, field: str | None = None):
        v = (metrics.get(key) or {}).get("per_class", {}).get(name)
        return v.get(field) if field and isinstance(v, dict) else v

    if task == "detection":
        names = names or list((metrics.get("coco") or {}).get("per_class", {}))
        head = ["class", "COCO AP", "VOC07 AP", "VOC12 AP", "P@0.5", "R@0.5", "F1@0.5"]
        rows = [
            [
                n,
                fmt(pc("coco", n)),
                fmt(pc("voc07", n)),
                fmt(pc("voc12", n)),
                fmt(pc("prf", n, "precision")),
                fmt(pc("prf", n, "recall")),
                fmt(pc("prf", n, "f1")),
            ]
            for n in names
        ]
        return head, rows
    s = metrics["seg"]
    acc = s.get("per_class_acc", {})
    return ["class", "IoU", "accuracy"], [
        [n, fmt(v), fmt(acc.get(n))] for n, v in s["per_class_iou"].items()
    ]


def write_model_report(
    out: Path | str,
    title: str,
    task: str,
    metrics: dict,
    names: list[str],
    samples: list[dict] | None = None,
    fps: dict | None = None,
    provenance: dict | None = None,
    model: str = "model",
    training: list[dict] | None = None,
    colors: dict | None = None,
) -> dict:
    """Write ``report.json``, ``report.md`` and ``report.html`` for one model on one dataset.
    ``samples``: ``{"image", "caption"}`` drawings (ground truth beside prediction);
    ``colors``: the legend of those drawings, ``{"names", "rgb"}``; ``training``: the run's
    ``metrics.jsonl`` rows for its curves."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "title": title,
        "task": task,
        "metrics": metrics,
        "fps": fps,
        "provenance": provenance or {},
        "samples": [s["caption"] for s in samples or []],
    }
    (out / "report.json").write_text(json.dumps(nan_to_none(data), indent=1))
    head_rows = headline_rows(task, metrics)
    pc_head, pc_rows = per_class_rows(task, metrics, names)
    fps_rows = [
        [
            str(r["batch"]),
            fmt(r["total_ms"]["p50"], 1, "ms"),
            fmt(r["total_ms"]["p95"], 1, "ms"),
            fmt(r["stages_ms"]["inference"]["p50"], 1, "ms"),
            fmt(r["images_per_s"], 1, "img/s"),
        ]
        for r in (fps or {}).get("runs", [])
    ]
    fps_head = ["batch", "total p50", "total p95", "inference p50", "throughput"]
    prov_rows = [
        [k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
        for k, v in (provenance or {}).items()
    ]
    md = [
        f"# {title}",
        "",
        md_table(head_rows, ["metric", "value", "protocol"]),
        "",
        "## Per class",
        "",
        md_table(pc_rows, pc_head),
    ]
    if fps_rows:
        md += ["", "## Speed (FPS protocol)", "", md_table(fps_rows, fps_head)]
    md += ["", "## Provenance", "", md_table(prov_rows, ["key", "value"]), ""]
    (out / "report.md").write_text("\n".join(md))
    primary = "coco/AP" if task == "detection" else "seg/mIoU"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Headline metrics</h2>",
        table(head_rows, ["metric", "value", "protocol"], numeric=(1,)),
        "<h2>Per class</h2><p class=small>Click a column to sort.</p>",
        table(pc_rows, pc_head, sortable=True, numeric=range(1, len(pc_head))),
        "<h2>Curves and matrices</h2><div class=figs>",
        *model_figures(task, metrics, model, training, primary),
        "</div>",
    ]
    if samples:
        body += [
            "<h2>Samples</h2><p class=small>The images the model does worst on (per-image AP "
            "at IoU 0.5, or mean IoU) and a few typical ones: ground truth on the left, the "
            "prediction on the right.</p>",
            legend(colors["names"], colors["rgb"]) if colors else "",
            '<div class="samples">',
            *(
                f'<figure><img alt="sample {i}: {html.escape(s["caption"])}" '
                f'src="{png_data_uri(s["image"])}"><figcaption>{html.escape(s["caption"])}'
                "</figcaption></figure>"
                for i, s in enumerate(samples)
            ),
            "</div>",
        ]
    if fps_rows:
        env = fps["environment"]
        body += [
            "<h2>Speed (FPS protocol)</h2>",
            f"<p class=small>{fps['input_size']} px, {fps['warmup']} warm-up + "
            f"{fps['iters']} timed iterations, {html.escape(str(env['device']))}, "
            f"{env['threads']} threads, {env['dtype']}</p>",
            table(fps_rows, fps_head, numeric=range(1, 5)),
        ]
    body += ["<h2>Provenance</h2>", table(prov_rows, ["key", "value"])]
    (out / "report.html").write_text(page(title, body))
    return data
