"""``vision optimize``: every deployable variant of a trained model (eager, fused, bf16, ONNX
Runtime float32 and int8), scored with the evaluation suite and the FPS protocol in one
table; ``--promote`` puts the fastest variant within the accuracy budget into the store."""

from __future__ import annotations

from pathlib import Path


def add_commands(sub) -> None:
    o = sub.add_parser("optimize", help="export, quantize and benchmark deployable variants")
    o.add_argument(
        "--checkpoint",
        "--model",
        dest="checkpoint",
        required=True,
        help="a checkpoint, a store model (vision-detector:latest) or nanodet_coco",
    )
    o.add_argument(
        "--data", default="shapes", help="dataset: validation split scored, train split calibrates"
    )
    o.add_argument("--split", default="val")
    o.add_argument(
        "--variants", nargs="+", default=None, help="default: all (eager fused bf16 onnx int8)"
    )
    o.add_argument("--budget", type=float, default=0.01, help="metric loss allowed vs eager")
    o.add_argument("--calibration", type=int, default=64, help="training images for int8")
    o.add_argument(
        "--calibration-data",
        default=None,
        help="dataset whose train split calibrates int8 (default: --data; needed when the "
        "scored split is the training images, as in coco128)",
    )
    o.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    o.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    o.add_argument("--limit", type=int, default=None, help="validation images (default all)")
    o.add_argument("--threads", type=int, default=None)
    o.add_argument("--out", required=True)
    o.add_argument("--promote", action="store_true", help="store the chosen variant")
    o.set_defaults(func=cmd_optimize)


def resolve_checkpoint(spec: str) -> Path:
    """A checkpoint path, the ``model.pt`` of a BentoML store model given by tag, or the name
    of a model that ships its weights (``nanodet_coco``)."""
    from service.store import looks_like_tag, stored_model
    from vision.models.zoo import is_pretrained

    if Path(spec).is_file() or is_pretrained(spec):
        return Path(spec)
    stored = stored_model(spec) if looks_like_tag(spec) else None  # as vision predict reads tags
    if stored is not None:
        return Path(stored.checkpoint)
    raise FileNotFoundError(
        f"--checkpoint: expected a checkpoint file, a store tag or nanodet_coco, got {spec!r}"
    )


def optimize(
    checkpoint: Path,
    data: str,
    out: Path,
    split: str = "val",
    variants=None,
    budget: float = 0.01,
    calibration: int = 64,
    rounds: int = 3,
    iters: int = 10,
    limit: int | None = None,
    log=print,
    calibration_data: str | None = None,
) -> dict:
    """The variants table of one checkpoint (written to ``out``), with its chosen row."""
    from eval.variants import VARIANTS, format_table, run_variants, write_table
    from vision.config import load_config
    from vision.data.build import build_dataset
    from vision.engine.checkpoint import load_checkpoint

    task = load_checkpoint(checkpoint, mmap=True)["meta"]["task"]
    cfg = load_config(data)
    val = build_dataset(cfg, task, split)
    val.limit(limit)
    train = build_dataset(load_config(calibration_data) if calibration_data else cfg, task, "train")
    table = run_variants(
        checkpoint, cfg, val, train, out, variants or VARIANTS, calibration, rounds, iters, log
    )
    table["calibration"]["dataset"] = calibration_data or data
    chosen = write_table(out, table, budget)
    log(format_table(table))
    log(f"[optimize] chosen: {chosen['variant']} ({table['rule']}); {out}/variants.html")
    return table


def cmd_optimize(a) -> int:
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    ckpt = resolve_checkpoint(a.checkpoint)
    table = optimize(
        ckpt, a.data, Path(a.out), a.split, a.variants, a.budget, a.calibration, a.rounds,
        a.iters, a.limit, calibration_data=a.calibration_data,
    )  # fmt: skip
    if a.promote:
        from service.promote import store

        chosen = next(r for r in table["rows"] if r.get("chosen"))
        record = {
            "model": table["model"],
            "dataset": table["dataset"],
            "primary_metric": table["primary_metric"],
            "primary": next(r["metric"] for r in table["rows"] if r["variant"] == "eager"),
            "latency_ms_p50": chosen["p50_ms"],
            "metrics": {},
            "report_id": str(a.out),
            "rule": table["rule"],
        }
        store(table["task"], ckpt, record, table)
    return 0
