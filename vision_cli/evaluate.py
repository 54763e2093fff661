"""``vision eval coco|voc|seg|run``: score prediction files, or a checkpoint on a dataset
split (a report with every metric of its task, samples and provenance)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate predictions or a checkpoint")
    p = p.add_subparsers(dest="cmd", required=True)
    c = p.add_parser("coco", help="COCO protocol (12 stats + per-class AP)")
    c.add_argument("--gt", required=True, help="COCO instances JSON")
    c.add_argument("--pred", required=True, help="COCO results JSON (list of detections)")
    c.add_argument("--iou-type", default="bbox", choices=["bbox", "segm"])
    c.add_argument("--engine", default="numpy", choices=["numpy", "faster", "pycocotools"])
    c.add_argument("--max-dets", type=int, nargs="+", default=None)
    c.add_argument("--out", default=None)
    c.set_defaults(func=cmd_coco)
    v = p.add_parser("voc", help="VOC protocol (per-class AP, mAP)")
    v.add_argument("--annotations", required=True, help="folder of VOC XML files")
    v.add_argument(
        "--pred",
        required=True,
        help='JSON list of {"image_id": stem, "category": name, "bbox": [x,y,w,h], "score": s}',
    )
    v.add_argument("--metric", default="voc12", choices=["voc07", "voc12"])
    v.add_argument("--iou", type=float, default=0.5)
    v.add_argument(
        "--voc07-thresholds",
        default="python",
        choices=["python", "matlab"],
        help="recall thresholds of the 11-point AP: np.arange(0, 1.1, 0.1) as the Python "
        "reference scripts (default), or the MATLAB devkit's 0:0.1:1",
    )
    v.add_argument("--names", nargs="+", default=None, help="the classes to score, by name")
    v.add_argument(
        "--classes",
        default=None,
        help="the classes to score: a dataset YAML/name or a file with one name per line "
        "(default: every name in the XML files); objects of other classes are left out",
    )
    v.add_argument(
        "--ignore-unknown",
        action="store_true",
        help="leave out (and count) detections of classes that are not scored",
    )
    v.add_argument("--out", default=None)
    v.set_defaults(func=cmd_voc)
    s = p.add_parser("seg", help="semantic segmentation (pixel acc, mean acc, mIoU, fwIoU)")
    s.add_argument("--gt", required=True, help="folder of ground-truth PNG masks")
    s.add_argument("--pred", required=True, help="folder of predicted PNG masks (same stems)")
    s.add_argument("--num-classes", type=int, required=True)
    s.add_argument("--ignore-index", type=int, default=255)
    s.add_argument("--out", default=None)
    s.set_defaults(func=cmd_seg)
    r = p.add_parser("run", help="evaluate a checkpoint on a dataset and write a report")
    r.add_argument(
        "--checkpoint",
        "--model",
        dest="checkpoint",
        required=True,
        help="a checkpoint, or a model that ships its weights (--model nanodet_coco)",
    )
    r.add_argument("--data", default="shapes")
    r.add_argument("--split", default="val")
    r.add_argument("--out", required=True, help="report folder")
    r.add_argument("--device", default="cpu")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--fps", action="store_true", help="also run the FPS protocol")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    r.set_defaults(func=cmd_run)


def _fmt(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"


def write_json(out: str | None, result: dict) -> None:
    if out:
        from eval.base import nan_to_none

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(nan_to_none(result), indent=1))
        print(f"wrote {out}")


def _print_per_class(per_class: dict, label: str) -> None:
    width = max([len(n) for n in per_class] + [5])
    print(f"  {'class':<{width}}  {label}")
    for n, v in per_class.items():
        print(f"  {n:<{width}}  {_fmt(v)}")


def cmd_coco(a) -> int:
    from eval.coco import coco_evaluate

    r = coco_evaluate(a.gt, a.pred, a.iou_type, a.engine, max_dets=a.max_dets)
    print(r["protocol"])
    for k, v in r.items():
        if k not in ("per_class", "protocol", "pr_curves"):
            print(f"  {k:<8}{_fmt(v)}")
    _print_per_class(r["per_class"], "AP")
    write_json(a.out, r)
    return 0


def cmd_voc(a) -> int:
    from eval.voc import voc_evaluate
    from eval.voc_io import load_voc_detections, load_voc_folder, read_classes

    names = a.names or read_classes(a.classes)
    gts, names, left_out = load_voc_folder(Path(a.annotations), names)
    dets, unknown = load_voc_detections(Path(a.pred), gts, names, a.ignore_unknown)
    r = voc_evaluate(gts, dets, names, a.iou, a.metric, True, a.voc07_thresholds)
    r["skipped"] = {"ground_truth_other_classes": left_out, "detections_unknown_class": unknown}
    print(r["protocol"])
    print(f"  mAP  {_fmt(r['mAP'])}  ({len(gts)} images, {len(dets)} detections)")
    if left_out or unknown:
        print(
            f"  left out: {left_out} ground-truth objects of other classes, "
            f"{unknown} detections of unknown classes"
        )
    _print_per_class(r["per_class"], "AP")
    write_json(a.out, r)
    return 0


def cmd_seg(a) -> int:
    from eval.seg import evaluate_folders

    r = evaluate_folders(a.gt, a.pred, a.num_classes, a.ignore_index)
    print(
        f"{r['protocol']} ({r['images']} images, {a.num_classes} classes, ignore {a.ignore_index})"
    )
    for k in ("pixel_acc", "mean_acc", "mIoU", "fwIoU"):
        print(f"  {k:<10}{_fmt(r[k])}")
    _print_per_class(r["per_class_iou"], "IoU")
    write_json(a.out, r)
    return 0


def check_classes(model: list[str], data: list[str], checkpoint: str, dataset: str) -> None:
    """A model scored on a dataset must number the classes as the dataset does."""
    if list(model) != list(data):
        raise SystemExit(
            f"eval run: {checkpoint} predicts {len(model)} classes {list(model)[:4]}...; "
            f"expected the classes of {dataset} in its order ({len(data)}: "
            f"{list(data)[:4]}...); fix: evaluate on the data the model was trained for"
        )


def cmd_run(a) -> int:
    from eval.bench import training_rows
    from eval.metrics import score
    from eval.provenance import provenance
    from eval.report import write_model_report
    from eval.samples import Quality, drawn_samples
    from vision.config import load_config
    from vision.data.build import build_dataset
    from vision.predictor import Predictor

    p = Predictor.from_checkpoint(a.checkpoint, a.device, input_size=a.img_size)
    cfg = load_config(a.data)
    check_classes(p.meta.class_names, cfg.names, a.checkpoint, cfg.name)
    reader = build_dataset(cfg, p.task, a.split)
    reader.limit(a.limit)
    quality = Quality(p.task, len(cfg.names))
    metrics, _ = score(p, reader, cfg.names, batch=a.batch, observe=quality)
    fps = None
    if a.fps:
        from eval.fps import measure

        fps = measure(p, [s.path.read_bytes() for s in reader.samples[:32]], (1, 8), 3, 15)
    title = f"{p.meta.name} on {cfg.name}/{a.split} ({p.task})"
    samples, colors = drawn_samples(p, reader, quality)
    write_model_report(
        a.out,
        title,
        p.task,
        metrics,
        cfg.names,
        samples,
        fps,
        provenance(reader, cfg.name, a.checkpoint, p),
        model=p.meta.name,
        training=training_rows(Path(a.checkpoint)),
        colors=colors,
    )
    from eval.report import headline_rows

    for row in headline_rows(p.task, metrics):
        print(f"  {row[0]:<20}{row[1]:>8}   {row[2]}")
    print(f"wrote {a.out}/report.html, report.md, report.json")
    return 0
