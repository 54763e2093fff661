"""``vision bench fps|run|list|show``: the FPS protocol for a model or checkpoint, benchmark
suites (run locally or as Ray tasks), and the suites that ship with the package."""

from __future__ import annotations

from pathlib import Path


def add_commands(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="cmd", required=True)
    f = bench.add_parser("fps", help="the FPS protocol for a model or a checkpoint")
    f.add_argument("--model", required=True, help="a registered name or a checkpoint path")
    f.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input size (default: a checkpoint's own; 192 for a registered name)",
    )
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
    r = bench.add_parser("run", help="run a benchmark suite (datasets × models)")
    r.add_argument(
        "suite",
        help="a shipped suite's name (default, camvid, bccd, raccoon, coco128...) or a suite YAML",
    )
    r.add_argument("--out", default=None, help="report folder (default reports/SUITE_NAME)")
    r.add_argument("--promote", action="store_true", help="promote each task's best model")
    r.add_argument("--force", action="store_true", help="recompute every pair and retrain")
    r.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: the pairs as Ray tasks (a GPU each where there are GPUs)",
    )
    r.add_argument("--address", default=None, help="Ray: auto, ray://HOST:PORT (default: local)")
    r.set_defaults(func=cmd_run)
    bench.add_parser("list", help="the suites shipped with the package").set_defaults(func=cmd_list)
    s = bench.add_parser("show", help="print a suite's file (to read or copy)")
    s.add_argument("suite", help="a shipped suite's name or a suite YAML")
    s.set_defaults(func=cmd_show)


def cmd_fps(a) -> int:
    import torch

    from eval.fps import format_fps, measure, synthetic_jpegs
    from vision.models import build_model
    from vision.predictor import Predictor
    from vision_cli.evaluate import write_json

    if a.threads:
        torch.set_num_threads(a.threads)
    from vision.models.zoo import is_pretrained

    if Path(a.model).suffix in (".pt", ".pth") or is_pretrained(a.model):
        p = Predictor.from_checkpoint(a.model, a.device, half=a.half, input_size=a.img_size)
    else:
        model = build_model(a.model, a.num_classes, input_size=a.img_size or 192)
        p = Predictor(model, a.device, half=a.half)
    if a.data:
        from vision.data.build import build_dataset

        ds = build_dataset(a.data, p.task, "val")
        images = [s.path.read_bytes() for s in ds.samples[:64]]
    else:
        images = synthetic_jpegs(16, p.size)
    r = measure(p, images, a.batch, a.warmup, a.iters)
    print(format_fps(r))
    write_json(a.out, r)
    return 0


def cmd_run(a) -> int:
    from vision_cli.orchestrate import run_suite

    run_suite(a.suite, a.out, a.promote, a.force, engine=a.engine, address=a.address)
    return 0


def cmd_list(a) -> int:
    from eval.bench import SUITES, load_suite, shipped_suites

    for name in shipped_suites():
        suite = load_suite(name)
        models = ", ".join(m["name"] for m in suite["models"])
        print(f"{name:<14} datasets: {', '.join(map(str, suite['datasets']))}; models: {models}")
    print(f"(files in {SUITES}; `vision bench show NAME` prints one)")
    return 0


def cmd_show(a) -> int:
    from eval.bench import find_suite

    path = find_suite(a.suite)
    print(f"# {path}")
    print(path.read_text(), end="")
    return 0
