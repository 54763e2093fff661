"""The metric vocabulary and the one way to score a model.

Every score the project shows — training validation (``metrics.jsonl``, the checkpoint's
``meta.metrics``), ``vision eval run`` reports, benchmark pairs and leaderboards, the BentoML
store's metadata and the service's ``/info`` — comes from ``build_evaluator`` and uses these
keys (``{key: {metric: value}}``; flattened ``"key/metric"``):

=========  =================================================================================
key        what (see the module that computes it)
=========  =================================================================================
coco       COCO bbox: ``AP`` (IoU .50:.05:.95), ``AP50``, ``AP75``, ``APs/m/l``, ``AR1/10/100``,
           ``ARs/m/l``, ``per_class`` (``eval.coco``)
coco_segm  the same for instance masks, when asked for
voc07      VOC2007 11-point ``mAP`` and ``per_class`` AP at IoU 0.5 (``eval.voc``)
voc12      VOC2010+ all-point ``mAP`` and ``per_class`` AP at IoU 0.5
prf        ``precision``, ``recall``, ``F1``, ``TP/FP/FN`` at confidence 0.5 and IoU 0.5;
           ``best_F1`` and ``best_F1_conf``; ``per_class``; ``pr_curves`` (``eval.prf``)
seg        ``mIoU``, ``pixel_acc``, ``mean_acc``, ``fwIoU``, ``per_class_iou``,
           ``per_class_acc``, ``confusion`` (``eval.seg``)
=========  =================================================================================

``PRIMARY`` is the metric that ranks models, picks ``best.pt`` and decides promotion.
"""

from __future__ import annotations

from typing import Any

from eval.base import Evaluator, Evaluators, flatten
from eval.coco import COCOEvaluator
from eval.devkit import VOCEvaluator
from eval.seg import SegEvaluator
from vision.data.sample import mask_classes

PRIMARY = {"detection": "coco/AP", "segmentation": "seg/mIoU"}
KEYS = {"detection": ("coco", "voc07", "voc12", "prf"), "segmentation": ("seg",)}
TASKS = tuple(PRIMARY)

__all__ = ["KEYS", "PRIMARY", "build_evaluator", "flatten", "primary_value", "score"]


def build_evaluator(
    task: str,
    reader,
    names: list[str],
    keys: tuple[str, ...] | None = None,
    voc07_thresholds: str = "python",
) -> Evaluator:
    """The evaluator of ``task`` on a reader's split: every key of ``KEYS[task]`` (or the
    ``keys`` asked for), with ``PRIMARY[task]`` as its primary metric."""
    if task not in PRIMARY:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    keys = tuple(keys or KEYS[task])
    unknown = sorted(
        set(keys) - set(KEYS[task]) - ({"coco_segm"} if task == "detection" else set())
    )
    if unknown:
        raise ValueError(f"{task} metric keys: expected some of {KEYS[task]}, got {unknown}")
    if task == "segmentation":
        classes = mask_classes(names, getattr(reader, "background", True))
        return Evaluators([SegEvaluator(len(classes), classes)], PRIMARY[task])
    parts: list[Evaluator] = []
    iou_types = tuple(t for t, k in (("bbox", "coco"), ("segm", "coco_segm")) if k in keys)
    if iou_types:
        parts.append(COCOEvaluator.from_dataset(reader, names, iou_types=iou_types))
    voc = tuple(k for k in keys if k in ("voc07", "voc12", "prf"))
    if voc:
        parts.append(
            VOCEvaluator.from_dataset(reader, names, keys=voc, thresholds=voc07_thresholds)
        )
    primary = (
        PRIMARY[task]
        if "coco" in keys
        else next((f"{k}/mAP" for k in ("voc07", "voc12") if k in keys), "prf/F1")
    )
    return Evaluators(parts, primary)


def primary_value(task: str, metrics: dict[str, dict[str, Any]]) -> float:
    """The primary metric's value in a ``{key: {metric: value}}`` result."""
    key, metric = PRIMARY[task].split("/")
    return metrics[key][metric]


def score(predictor, reader, names: list[str], batch: int = 8, keep: int = 0, observe=None, **kw):
    """Score a predictor on a reader's split: ``(metrics, first `keep` predictions)``; the same
    pass training validation runs (``vision.engine.loop.evaluate``). ``observe(samples,
    outputs)`` sees every batch (``eval.samples.Quality`` scores each image)."""
    from vision.engine.loop import evaluate

    if predictor.task == "segmentation":
        check_label_layout(predictor.meta, reader)
    evaluator = build_evaluator(predictor.task, reader, names, **kw)
    return evaluate(predictor, reader, evaluator, batch, keep, observe)


def check_label_layout(meta, reader) -> None:
    """A segmenter's class map and a split's label maps must index classes alike."""
    want = getattr(reader, "background", True)
    if meta.background != want:
        layout = {True: "index 0 = background", False: "every index a class, no background"}
        raise ValueError(
            f"model {meta.name}: expected class maps laid out as the dataset's label maps "
            f"({layout[want]}), got a model trained with {layout[meta.background]}; "
            "evaluate it on a dataset of its own layout, or train one for this dataset"
        )
