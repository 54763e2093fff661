"""The figures of a report, as HTML ``<figure>`` blocks: a model's curves, confusion matrix,
per-class bars and training curves; a dataset's health charts. Each image's ``alt`` text
names what it shows and the model (the browser tests find them by it)."""

from __future__ import annotations

import math

from eval import plots
from eval.html import figure


def _mean(values) -> float:
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else math.nan


def detection_figures(metrics: dict, model: str) -> list[str]:
    out = []
    coco, prf = metrics.get("coco", {}), metrics.get("prf", {})
    curves = coco.get("pr_curves") or {}
    rec = curves.get("recall") or []
    for key, label in (("iou50", "COCO IoU 0.5"), ("iou50_95", "COCO IoU .50:.95")):
        per = curves.get(key) or {}
        if per and rec:
            ap = {n: _mean(c) for n, c in per.items()}
            mean = [_mean(col) for col in zip(*per.values(), strict=True)]
            png = plots.pr_curves({n: (rec, c) for n, c in per.items()}, label, ap, (rec, mean))
            out.append(
                figure(
                    png,
                    f"precision–recall curves ({label}) — {model}",
                    f"Precision at each recall, per class (AP in the legend), "
                    f"101-point interpolation, {label}.",
                )
            )
    voc = prf.get("pr_curves") or {}
    if voc:
        ap = metrics.get("voc12", {}).get("per_class")
        png = plots.pr_curves(
            {n: (c["recall"], c["precision"]) for n, c in voc.items()}, "VOC, IoU 0.5", ap
        )
        out.append(
            figure(
                png,
                f"precision–recall curves (VOC) — {model}",
                "Interpolated precision envelope, VOC devkit matching at IoU 0.5 "
                "(VOC12 AP in the legend).",
            )
        )
    f1 = prf.get("f1_curve")
    if f1:
        png = plots.f1_confidence(
            f1["conf"],
            f1["overall"],
            f1["per_class"],
            prf.get("best_F1_conf"),
            "F1 against confidence",
        )
        out.append(
            figure(
                png,
                f"F1–confidence curve — {model}",
                "F1 at IoU 0.5 for each confidence threshold; the dashed line is the "
                "threshold of the best pooled F1.",
            )
        )
    conf = prf.get("confusion")
    if conf:
        png = plots.confusion(conf["matrix"], conf["labels"], "objects: true × predicted")
        out.append(
            figure(png, f"confusion matrix — {model}", conf["protocol"] + "; each row normalized.")
        )
    if coco.get("per_class"):
        png = plots.bars(coco["per_class"], "COCO AP per class", "AP @[.50:.95]")
        out.append(figure(png, f"per-class AP — {model}", "COCO AP per class."))
    return out


def segmentation_figures(metrics: dict, model: str) -> list[str]:
    seg = metrics.get("seg", {})
    out = []
    if seg.get("confusion"):
        names = list(seg["per_class_iou"])
        png = plots.confusion(seg["confusion"], names, "pixels: true × predicted")
        out.append(
            figure(
                png,
                f"confusion matrix — {model}",
                "Pixels by true (rows) and predicted class, each row normalized; "
                "void pixels left out.",
            )
        )
    if seg.get("per_class_iou"):
        png = plots.bars(seg["per_class_iou"], "IoU per class", "IoU")
        out.append(figure(png, f"per-class IoU — {model}", "Intersection over union per class."))
    return out


def training_figure(rows: list[dict], metric: str, model: str) -> list[str]:
    """The run's curves from its ``metrics.jsonl`` rows (what TensorBoard's ``epoch/`` scalars
    hold too: both are written from the same dict)."""
    if not rows:
        return []
    png = plots.training_curves(rows, metric, f"training of {model}")
    return [
        figure(
            png,
            f"training curves — {model}",
            "Per epoch: mean training loss, the learning rate at the epoch's end, and "
            f"the validation {metric} (epochs that validated).",
        )
    ]


def model_figures(task: str, metrics: dict, model: str, training=None, metric="") -> list[str]:
    figs = (
        detection_figures(metrics, model)
        if task == "detection"
        else segmentation_figures(metrics, model)
    )
    return figs + training_figure(training or [], metric, model)


def health_figures(health: dict, dataset: str) -> list[str]:
    """Objects per class and box sizes (detection), label pixels per class (segmentation),
    for the training split (else the first split)."""
    splits = health.get("splits", {})
    out = []
    for task in ("detection", "segmentation"):
        keys = [k for k in splits if k.startswith(task + "/")]
        if not keys:
            continue
        key = next((k for k in keys if k.endswith("/train")), keys[0])
        s = splits[key]
        if task == "detection":
            png = plots.bars(
                s["objects_per_class"], f"objects per class ({key})", "objects", "{:.0f}"
            )
            out.append(figure(png, f"objects per class — {dataset}", f"{dataset}, {key}."))
            if s.get("box_sizes"):
                b = s["box_sizes"]
                png = plots.histogram(
                    b["counts"], b["edges"], f"box sizes ({key})", "box size: √area (px)"
                )
                out.append(
                    figure(
                        png,
                        f"box-size histogram — {dataset}",
                        "Objects by the square root of their box area; COCO's small/"
                        "medium/large split at 32 and 96 px.",
                    )
                )
        elif s.get("pixels_per_class"):
            px = {k: v for k, v in s["pixels_per_class"].items() if k != "void"}
            total = sum(px.values()) or 1
            share = {k: 100 * v / total for k, v in px.items()}
            png = plots.bars(
                share, f"label pixels per class ({key})", "% of labelled pixels", "{:.2f}%"
            )
            out.append(
                figure(
                    png,
                    f"label pixel share — {dataset}",
                    "Share of the split's labelled pixels per class (void apart).",
                )
            )
    return out
