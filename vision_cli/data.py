"""``vision data shapes|check|convert``: the synthetic dataset, health reports, VOC → COCO."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vision.errors import DataError


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="dataset tools").add_subparsers(dest="cmd", required=True)
    s = p.add_parser("shapes", help="generate the synthetic shapes dataset (VOC + COCO trees)")
    s.add_argument("--out", default="datasets/shapes")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train", type=int, default=2000)
    s.add_argument("--val", type=int, default=400)
    s.add_argument("--min-size", type=int, default=160)
    s.add_argument("--max-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=None)
    s.set_defaults(func=cmd_shapes)
    c = p.add_parser("check", help="dataset health report")
    c.add_argument("config", help="datasets/NAME.yaml or a known dataset name")
    c.add_argument("--json", default=None, help="also write the report as JSON here")
    c.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    c.set_defaults(func=cmd_check)
    v = p.add_parser("convert", help="convert a VOC split to COCO instances JSON")
    v.add_argument("config", help="datasets/NAME.yaml (format voc) or a known dataset name")
    v.add_argument("--split", default="val")
    v.add_argument("--task", default="detection", choices=["detection", "segmentation"])
    v.add_argument("--out", required=True)
    v.set_defaults(func=cmd_convert)


def cmd_shapes(a) -> int:
    from vision.data.shapes import ShapesSpec, generate

    spec = ShapesSpec(
        train=a.train, val=a.val, min_size=a.min_size, max_size=a.max_size, seed=a.seed
    )
    t0 = time.perf_counter()
    counts = generate(a.out, spec, workers=a.workers)
    print(f"wrote {a.out} in {time.perf_counter() - t0:.1f} s: {json.dumps(counts)}")
    return 0


def cmd_check(a) -> int:
    from vision.data.health import check_dataset, format_report

    report = check_dataset(a.config, decode=not a.no_decode)
    print(format_report(report))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def cmd_convert(a) -> int:
    from vision.config import load_config
    from vision.data.build import build_dataset
    from vision.data.convert import voc_to_coco

    cfg = load_config(a.config)
    if cfg.format != "voc":
        raise DataError(str(cfg.source), "a VOC-format dataset to convert", cfg.format)
    data = voc_to_coco(build_dataset(cfg, a.task, a.split), a.out)
    print(
        f"wrote {a.out}: {len(data['images'])} images, {len(data['annotations'])} annotations,"
        f" {len(data['categories'])} categories"
    )
    return 0
