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


TRAIN_DEFAULTS = (("detect", "detection", "fcos_r18"), ("segment", "segmentation", "fcn8s_slim"))


def _train_commands(sub) -> None:
    p = sub.add_parser("train", help="train a detector or a segmenter")
    p = p.add_subparsers(dest="cmd", required=True)
    # vision.models.DEFAULT_DETECTOR / DEFAULT_SEGMENTER, spelled out so that the command line
    # starts without importing torch (a test keeps them equal)
    for cmd, task, default in TRAIN_DEFAULTS:
        t = p.add_parser(cmd, help=f"train a {task} model")
        t.set_defaults(func=cmd_train, task=task)
        t.add_argument("--data", default="shapes", help="datasets/NAME.yaml or a known name")
        t.add_argument("--model", default=default, help="a registered model name")
        t.add_argument("--epochs", type=int, default=10)
        t.add_argument("--img-size", type=int, default=192)
        t.add_argument("--batch", type=int, default=16)
        t.add_argument("--out", default=None, help="run folder (default runs/MODEL)")
        t.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
        t.add_argument("--lr", type=float, default=1e-3)
        t.add_argument("--weight-decay", type=float, default=1e-4)
        t.add_argument("--schedule", default="cosine", choices=["cosine", "poly"])
        t.add_argument("--warmup-iters", type=int, default=100)
        t.add_argument("--clip", type=float, default=0.0, help="gradient norm clip (0: off)")
        t.add_argument("--workers", type=int, default=2)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--no-amp", dest="amp", action="store_false", help="disable AMP on CUDA")
        t.add_argument(
            "--bf16",
            action="store_true",
            help="bfloat16 autocast on the CPU (1.4-1.6x faster on CPUs with AVX512-BF16)",
        )
        t.add_argument(
            "--val-every", type=int, default=1, help="validate every N epochs and after the last"
        )
        t.add_argument(
            "--seg-loss", default="ce", choices=["ce", "ce+dice"], help="segmentation loss"
        )
        t.add_argument("--channels-last", action="store_true")
        t.add_argument(
            "--resume",
            nargs="?",
            const="auto",
            default=None,
            help="continue a run (default: OUT/last.pt)",
        )
        t.add_argument("--weights", default=None, help="initialize from a checkpoint (transfer)")
        t.add_argument("--freeze-backbone", action="store_true")
        t.add_argument("--limit-train", type=int, default=None)
        t.add_argument("--limit-val", type=int, default=None)
        t.add_argument("--max-iters", type=int, default=None, help="per epoch (smoke tests)")
        t.add_argument("--threads", type=int, default=None)
        t.add_argument(
            "--stop-after",
            type=int,
            default=None,
            help="run this many epochs now, continue later with --resume",
        )
        t.add_argument(
            "--model-arg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="extra model constructor argument, e.g. upsample=bilinear",
        )


def _model_kwargs(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataError("--model-arg", "KEY=VALUE", repr(pair))
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def make_evaluator(val_reader, names, task):
    """The evaluation suite's evaluator for a training run's validation split."""
    if task == "detection":
        from eval.coco import COCOEvaluator

        return COCOEvaluator.from_dataset(val_reader, names)
    from eval.seg import SegEvaluator

    return SegEvaluator(len(names) + 1, ["background", *names])


def cmd_train(a) -> int:
    from vision.engine.train import TrainConfig, train

    cfg = TrainConfig(
        task=a.task,
        data=a.data,
        model=a.model,
        out=a.out or f"runs/{a.model}",
        epochs=a.epochs,
        img_size=a.img_size,
        batch=a.batch,
        optimizer=a.optimizer,
        lr=a.lr,
        weight_decay=a.weight_decay,
        schedule=a.schedule,
        warmup_iters=a.warmup_iters,
        clip=a.clip,
        workers=a.workers,
        seed=a.seed,
        amp=a.amp,
        bf16=a.bf16,
        val_every=a.val_every,
        seg_loss=a.seg_loss,
        channels_last=a.channels_last,
        resume=a.resume,
        weights=a.weights,
        freeze_backbone=a.freeze_backbone,
        limit_train=a.limit_train,
        limit_val=a.limit_val,
        max_iters=a.max_iters,
        threads=a.threads,
        stop_after=a.stop_after,
        model_kwargs=_model_kwargs(a.model_arg),
    )
    summary = train(cfg, make_evaluator)
    print(json.dumps(summary))
    return 0


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


# the main job's suite on a CPU, and on a machine with CUDA
MAIN_SUITES = ("bench/suites/default.yaml", "bench/suites/default_gpu.yaml")


def main_suite() -> str:
    """The suite the main job runs: the GPU recipes when torch sees a CUDA device."""
    import torch

    return MAIN_SUITES[1] if torch.cuda.is_available() else MAIN_SUITES[0]


def cmd_main(a) -> int:
    """The main job: dataset → train the defaults → benchmark report → promote → serve."""
    import os
    import time

    from vision.config import load_config
    from vision.data.health import check_dataset, format_report
    from vision.data.shapes import ShapesSpec, generate

    t0 = time.perf_counter()
    cfg = load_config("shapes")
    out = cfg.root.parent
    if a.force or not (out / "spec.json").is_file():
        print(f"[main] 1/4 generating the built-in dataset under {out} ...", flush=True)
        print(f"[main] {generate(out, ShapesSpec(**cfg.extra.get('generate', {})))}", flush=True)
    else:
        print(f"[main] 1/4 reusing {out} (--force regenerates)", flush=True)
    report = check_dataset(cfg)
    print(format_report(report), flush=True)
    Path("reports").mkdir(exist_ok=True)
    Path("reports/shapes_health.json").write_text(json.dumps(report, indent=1))
    if not report["ok"]:
        return 1
    print(
        "[main] 2/4 training (or reusing) the default detector and segmenter, then "
        "benchmarking them",
        flush=True,
    )
    from service.cli import run as run_suite

    suite = main_suite()
    report = Path("reports") / Path(suite).stem
    if suite != MAIN_SUITES[0]:
        print(f"[main] a CUDA device is present: {suite} (the 5-minute GPU recipes)", flush=True)
    run_suite(suite, str(report), promote=True, force=a.force)
    print(f"[main] 3/4 report: {(report / 'index.html').resolve()}", flush=True)
    print(f"[main] finished in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.no_serve:
        return 0
    port = str(a.port)
    print(
        f"[main] 4/4 serving the promoted models on http://127.0.0.1:{port} "
        f"(web page: http://127.0.0.1:{port}/ui/). Try:\n"
        f"  curl -F image=@datasets/shapes/VOC/JPEGImages/002000.jpg "
        f"http://127.0.0.1:{port}/detect",
        flush=True,
    )
    from service.launch import serve_argv

    argv = serve_argv(a.host, port)
    os.execv(argv[0], argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="group", required=True)
    m = sub.add_parser("main", help="run the main job on the built-in dataset")
    m.add_argument("--force", action="store_true", help="redo every step")
    m.add_argument("--no-serve", action="store_true", help="stop after promotion")
    m.add_argument("--port", type=int, default=3000)
    m.add_argument("--host", default="127.0.0.1")
    m.set_defaults(func=cmd_main)
    _data_commands(sub)
    _train_commands(sub)
    try:
        from eval.cli import add_eval_commands
    except ImportError:  # the evaluation layer is optional for the library
        add_eval_commands = None
    if add_eval_commands is not None:
        bench = add_eval_commands(sub)
        try:
            from service.cli import add_service_commands
        except ImportError:
            add_service_commands = None
        if add_service_commands is not None:
            add_service_commands(sub, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, FloatingPointError) as e:  # worded for users
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
