"""``vision predict``: a model on unlabeled images, from one file to a Ray cluster.

Exit status: 0 when every image was predicted; 1 when at least one image could not be used
(it is in ``OUT/errors.jsonl`` with its reason; every other image was still predicted); 2 when
the command itself is wrong (no such model or source, bad options).
"""

from __future__ import annotations

import json
from pathlib import Path

from vision.errors import DataError

MODEL_HELP = (
    "a checkpoint (.pt), an exported variant (.onnx written by `vision optimize`), a "
    "model-store tag (vision-detector:latest: served as promotion chose), or a model that "
    "ships its weights (nanodet_coco)"
)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="run a model on unlabeled images (files, folders, globs, lists, a COCO JSON)",
        description=__doc__,
    )
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--variant",
        default=None,
        help="with a checkpoint: a deployable variant, KIND[:FILE.onnx] (eager, fused, bf16, "
        "onnx:FILE, int8:FILE)",
    )
    p.add_argument(
        "--source",
        nargs="+",
        required=True,
        help="image files, folders (recursive), globs, a .txt list of paths, or a COCO "
        "instances .json (its ids and category ids are kept)",
    )
    p.add_argument("--image-root", default=None, help="where a COCO JSON's file names are")
    p.add_argument("--out", required=True, help="the job folder (re-run it to resume)")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--agnostic-nms", action="store_true", help="one label per object")
    p.add_argument(
        "--mask-format",
        choices=["png", "rle"],
        default="png",
        help="png: index PNGs under OUT/masks; rle: COCO RLE in each line",
    )
    p.add_argument("--save-color", action="store_true", help="masks with the dataset's colours")
    p.add_argument("--save-drawn", action="store_true", help="overlays under OUT/drawn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=2, help="decode threads (local engine)")
    p.add_argument(
        "--retry-errors", action="store_true", help="try again the images of errors.jsonl"
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray: auto, ray://HOST:PORT (default: local)")
    p.add_argument("--num-workers", type=int, default=1, help="Ray: model actors")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per actor")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per actor")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the model (local: this process; Ray: each actor, default its "
        "CPUs); results are identical across engines and runs at equal threads",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def model_spec(name: str, variant: str | None):
    """What ``--model`` (and ``--variant``) name, as a ``ModelSpec``."""
    from vision.batch import ModelSpec

    path = Path(name).expanduser()
    if path.exists():
        spec = ModelSpec.from_path(path)
        if variant:
            kind, _, file = variant.partition(":")
            spec = ModelSpec(spec.checkpoint, kind, file or None, spec.name)
        return spec
    from vision.models.zoo import is_pretrained

    if is_pretrained(name):  # a model that ships its weights (nanodet_coco)
        kind, _, file = (variant or "eager").partition(":")
        return ModelSpec(name, kind, file or None, name)
    from service.store import looks_like_tag, stored_model

    stored = stored_model(name) if looks_like_tag(name) else None
    if stored is None:
        raise DataError("--model", MODEL_HELP, f"{name!r}: no such file or store model")
    if variant:
        raise DataError("--variant", "no --variant with a store model", variant)
    return ModelSpec(stored.checkpoint, stored.variant, stored.file, stored.tag)


def cmd_predict(a) -> int:
    from vision.batch import PredictJob, PredictOptions, collect, run_predict

    job = PredictJob(
        model=model_spec(a.model, a.variant),
        out=Path(a.out),
        options=PredictOptions(
            a.score_threshold,
            a.max_detections,
            a.agnostic_nms,
            a.mask_format,
            a.save_color,
            a.save_drawn,
        ),
        batch=a.batch,
        device=a.device,
        workers=a.workers,
        retry_errors=a.retry_errors,
        threads=a.threads,
    )
    sources = collect(a.source, a.image_root)
    ray_options = {
        "address": a.address,
        "num_workers": a.num_workers,
        "gpus_per_worker": a.gpus_per_worker,
        "cpus_per_worker": a.cpus_per_worker,
    }
    summary = run_predict(job, sources, a.engine, ray_options, progress=not a.quiet)
    brief = {k: summary[k] for k in ("images", "errors", "errors_by_reason", "coco_results")}
    print(json.dumps({**brief, "images_per_s": summary["this_run"]["images_per_s"]}))
    print(f"[predict] wrote {Path(a.out) / 'predictions.jsonl'} and summary.json")
    return summary["exit_status"]
