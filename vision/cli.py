"""The ``vision`` command line. The one module allowed to import every layer (lazily).

vision main                                   the main job on the built-in dataset
vision data shapes --out DIR [--seed K]       generate the synthetic dataset
vision data check datasets/shapes.yaml        dataset health report (exit 1 on errors)
vision data convert shapes --split val --out val.json   VOC → COCO JSON
vision eval coco|voc|seg ...                  evaluation (see ``vision eval -h``)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vision.errors import DataError


def _data_commands(sub) -> None:
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
    import time

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


def cmd_main(a) -> int:
    """The main job: make sure the built-in dataset exists, then report its health."""
    from vision.config import load_config
    from vision.data.health import check_dataset, format_report
    from vision.data.shapes import ShapesSpec, generate

    cfg = load_config("shapes")
    out = cfg.root.parent
    if a.force or not (out / "spec.json").is_file():
        gen = cfg.extra.get("generate", {})
        print(f"[main] generating the built-in dataset under {out} ...", flush=True)
        spec = ShapesSpec(**gen)
        print(f"[main] {generate(out, spec)}", flush=True)
    else:
        print(f"[main] reusing {out} (use --force to regenerate)", flush=True)
    report = check_dataset(cfg)
    print(format_report(report))
    Path("reports").mkdir(exist_ok=True)
    Path("reports/shapes_health.json").write_text(json.dumps(report, indent=1))
    print("[main] health report: reports/shapes_health.json")
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="group", required=True)
    m = sub.add_parser("main", help="run the main job on the built-in dataset")
    m.add_argument("--force", action="store_true", help="redo every step")
    m.set_defaults(func=cmd_main)
    _data_commands(sub)
    try:
        from eval.cli import add_eval_commands
    except ImportError:  # the evaluation layer is optional for the library
        add_eval_commands = None
    if add_eval_commands is not None:
        add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as e:  # evaluation-time mismatches, already worded for users
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
