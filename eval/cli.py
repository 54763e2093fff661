"""``vision eval coco|voc|seg``: evaluate prediction files, print a table, write JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from eval.base import nan_to_none
from vision.errors import DataError


def add_eval_commands(sub) -> None:
    p = sub.add_parser("eval", help="evaluate predictions").add_subparsers(
        dest="cmd", required=True
    )
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
