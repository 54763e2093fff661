"""``vision eval coco|voc|seg``: evaluate prediction files, print a table, write JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from eval.base import nan_to_none
from vision.errors import DataError


def add_eval_commands(sub):
    """Add ``vision eval ...`` and ``vision bench fps``; returns the ``bench`` subparsers."""
    p = sub.add_parser("eval", help="evaluate predictions").add_subparsers(
        dest="cmd", required=True
    )
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="cmd", required=True)
    add_run_commands(p, bench)
    c = p.add_parser("coco", help="COCO protocol (12 stats + per-class AP)")
    c.add_argument("--gt", required=True, help="COCO instances JSON")
    c.add_argument("--pred", required=True, help="COCO results JSON (list of detections)")
    c.add_argument("--iou-type", default="bbox", choices=["bbox", "segm"])
    c.add_argument("--engine", default="faster", choices=["faster", "pycocotools"])
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
        "--names",
        nargs="+",
        default=None,
        help="class names (default: every name found in the XML files, sorted)",
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
    return bench


def _fmt(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"


def _write(out: str | None, result: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(nan_to_none(result), indent=1))
        print(f"wrote {out}")


def cmd_coco(a) -> int:
    from eval.coco import coco_evaluate

    r = coco_evaluate(a.gt, a.pred, a.iou_type, a.engine, max_dets=a.max_dets)
    print(r["protocol"])
    for k, v in r.items():
        if k not in ("per_class", "protocol"):
            print(f"  {k:<8}{_fmt(v)}")
    _print_per_class(r["per_class"], "AP")
    _write(a.out, r)
    return 0


def _print_per_class(per_class: dict, label: str) -> None:
    width = max([len(n) for n in per_class] + [5])
    print(f"  {'class':<{width}}  {label}")
    for n, v in per_class.items():
        print(f"  {n:<{width}}  {_fmt(v)}")


def load_voc_folder(folder: Path, names: list[str] | None) -> tuple[dict, list[str]]:
    """Ground truth of every XML in ``folder`` (raw devkit coordinates) and the class names."""
    import xml.etree.ElementTree as ET

    from vision.data.voc import parse_voc_xml

    folder = Path(folder)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(str(folder), "a folder of VOC XML files", "no *.xml files")
    if names is None:
        found = set()
        for f in files:
            try:
                found |= {n.text.strip() for n in ET.parse(f).getroot().iter("name") if n.text}
            except ET.ParseError as e:
                raise DataError(f"{f}:{e.position[0]}", "well-formed VOC XML", str(e)) from e
        names = sorted(found)
    idx = {n: i for i, n in enumerate(names)}
    gts = {}
    for f in files:
        ann = parse_voc_xml(f, idx, strict=True, check_bounds=False, zero_based=False)
        gts[f.stem] = ann
    return gts, names


def cmd_voc(a) -> int:
    from eval.voc import voc_evaluate

    gts, names = load_voc_folder(Path(a.annotations), a.names)
    dets = load_voc_detections(Path(a.pred), gts, names)
    r = voc_evaluate(gts, dets, names, a.iou, a.metric, plus_one=True)
    print(r["protocol"])
    print(f"  mAP  {_fmt(r['mAP'])}  ({len(gts)} images, {len(dets)} detections)")
    _print_per_class(r["per_class"], "AP")
    _write(a.out, r)
    return 0


def load_voc_detections(path: Path, gts: dict, names: list[str]) -> list[dict]:
    """Validate the VOC detection list and turn ``[x, y, w, h]`` into corners."""
    if not path.is_file():
        raise DataError(str(path), "a JSON file of detections", "no such file")
    text = path.read_text()
    if not text.strip():
        raise DataError(str(path), "a JSON list of detections", "an empty file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}", "valid JSON", e.msg) from e
    if not isinstance(raw, list):
        raise DataError(str(path), "a JSON list of detections", type(raw).__name__)
    idx = {n: i for i, n in enumerate(names)}
    dets = []
    for i, d in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(d, dict):
            raise DataError(where, "a detection object", type(d).__name__)
        for key in ("image_id", "category", "bbox", "score"):
            if key not in d:
                raise DataError(where, f"field '{key}'", f"fields {sorted(d)}")
        if str(d["image_id"]) not in gts:
            raise DataError(
                f"{where} image_id",
                "the stem of an XML file in the annotations",
                repr(d["image_id"]),
            )
        if d["category"] not in idx:
            raise DataError(
                f"{where} category", f"a class of the ground truth {names}", repr(d["category"])
            )
        b = d["bbox"]
        if not (isinstance(b, list) and len(b) == 4):
            raise DataError(f"{where} bbox", "[x, y, w, h]", repr(b))
        x, y, w, h = (float(v) for v in b)
        if not (w >= 0 and h >= 0):
            raise DataError(f"{where} bbox", "[x, y, w, h] with w >= 0 and h >= 0", repr(b))
        dets.append(
            {
                "image_id": str(d["image_id"]),
                "label": idx[d["category"]],
                "box": [x, y, x + w, y + h],
                "score": float(d["score"]),
            }
        )
    return dets


def cmd_seg(a) -> int:
    from eval.seg import evaluate_folders

    r = evaluate_folders(a.gt, a.pred, a.num_classes, a.ignore_index)
    print(
        f"{r['protocol']} ({r['images']} images, {a.num_classes} classes, ignore {a.ignore_index})"
    )
    for k in ("pixel_acc", "mean_acc", "mIoU", "fwIoU"):
        print(f"  {k:<10}{_fmt(r[k])}")
    _print_per_class(r["per_class_iou"], "IoU")
    _write(a.out, r)
    return 0


def add_run_commands(eval_sub, bench_sub) -> None:
    r = eval_sub.add_parser("run", help="evaluate a checkpoint on a dataset and write a report")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--data", default="shapes")
    r.add_argument("--split", default="val")
    r.add_argument("--out", required=True, help="report folder")
    r.add_argument("--device", default="cpu")
    r.add_argument("--fps", action="store_true", help="also run the FPS protocol")
    r.add_argument("--limit", type=int, default=None)
    r.set_defaults(func=cmd_run)
    f = bench_sub.add_parser("fps", help="the FPS protocol for a model or a checkpoint")
    f.add_argument("--model", required=True, help="a registered name or a checkpoint path")
    f.add_argument("--img-size", type=int, default=192)
    f.add_argument("--num-classes", type=int, default=4)
    f.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    f.add_argument("--warmup", type=int, default=5)
    f.add_argument("--iters", type=int, default=30)
    f.add_argument("--device", default="cpu")
    f.add_argument("--half", action="store_true", help="float16 on CUDA")
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--data", default=None, help="decode this dataset's val images")
    f.add_argument("--out", default=None)
    f.set_defaults(func=cmd_fps)


def _predictor(model: str, device: str, img_size: int = 192, num_classes: int = 4, **kw):
    from vision.models import build_model
    from vision.predictor import Predictor

    if Path(model).suffix in (".pt", ".pth"):
        return Predictor.from_checkpoint(model, device, **kw)
    return Predictor(build_model(model, num_classes, input_size=img_size), device, **kw)


def cmd_fps(a) -> int:
    import torch

    from eval.fps import format_fps, measure, synthetic_jpegs

    if a.threads:
        torch.set_num_threads(a.threads)
    p = _predictor(a.model, a.device, a.img_size, a.num_classes, half=a.half)
    if a.data:
        from vision.data.build import build_dataset

        ds = build_dataset(a.data, p.task, "val")
        images = [s.path.read_bytes() for s in ds.samples[:64]]
    else:
        images = synthetic_jpegs(16, a.img_size)
    r = measure(p, images, a.batch, a.warmup, a.iters)
    print(format_fps(r))
    _write(a.out, r)
    return 0


def provenance(reader, data: str, checkpoint: str, predictor) -> dict:
    from eval.fps import environment
    from eval.runner import dataset_hash, git_commit

    return {
        "git_commit": git_commit(),
        "dataset": data,
        "dataset_hash": dataset_hash(reader),
        "images": len(reader),
        "checkpoint": checkpoint,
        "model": predictor.meta.name,
        "input_size": predictor.size,
        **environment(predictor),
    }


def cmd_run(a) -> int:
    from eval.report import headline_rows, write_model_report
    from eval.runner import evaluate_model, sample_images
    from vision.config import load_config
    from vision.data.build import build_dataset

    p = _predictor(a.checkpoint, a.device)
    cfg = load_config(a.data)
    reader = build_dataset(cfg, p.task, a.split)
    reader.limit(a.limit)
    res = evaluate_model(p, reader, cfg.names)
    fps = None
    if a.fps:
        from eval.fps import measure

        fps = measure(p, [s.path.read_bytes() for s in reader.samples[:32]], (1, 8), 3, 15)
    samples = sample_images(reader, res["predictions"], cfg.names, p.task)
    title = f"{p.meta.name} on {cfg.name}/{a.split} ({p.task})"
    write_model_report(
        a.out,
        title,
        p.task,
        res["metrics"],
        cfg.names,
        samples,
        fps,
        provenance(reader, cfg.name, a.checkpoint, p),
    )
    for row in headline_rows(p.task, res["metrics"]):
        print(f"  {row[0]:<20}{row[1]:>8}   {row[2]}")
    print(f"wrote {a.out}/report.html, report.md, report.json")
    return 0
