"""Batch prediction speed: the local engine and the Ray engine against a naive loop, measured
in the same run (round-robin; images/s and per-round ratios as medians of ``--repeats``).

    .venv/bin/python -m bench.predict_speed [--model vision-detector:latest] [--images 1000]
        [--repeats 3] [--out bench/results/predict_speed.json]

The naive loop is what a user writes without ``vision predict``: for each image, read it,
``Predictor.prepare``, ``Predictor.forward`` on one image, ``finish``, one JSON line written.
The engines run the same model with the same options (the service's defaults) on the same
images, batch 8, two decode threads (the local engine with torch's own threads); Ray runs
on this machine (started once, before the rounds: its start-up is reported apart) with
``--ray-workers`` model actors of ``--ray-cpus`` CPUs and ``--ray-threads`` threads each (by
default one of two threads: each actor pays its own start, so on two cores one two-thread
actor beat two one-thread ones, 0.68 against 0.54 of the local engine, when an actor still
imported torch; an exported variant's actor now starts in about half a second).
Every engine's images/s counts the whole job, writing included. Needs the main job's store
models (``bash run.sh``) and its dataset (``datasets/shapes``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import torch

from service.store import stored_model
from vision.batch import ModelSpec, PredictJob, collect, run_predict
from vision.config import load_config
from vision.data.io import DecodeLimits


def naive(spec: ModelSpec, paths: list[str], out: Path) -> float:
    pred = spec.load("cpu")
    limits = DecodeLimits.from_env()
    t0 = time.perf_counter()
    with open(out / "naive.jsonl", "wb") as f:
        for p in paths:
            array, info = pred.prepare(Path(p).read_bytes(), limits)
            (raw,) = pred.forward([array])
            res = pred.finish(raw, info, score_threshold=0.25, max_detections=100)
            line = {"path": p, **pred.render(res)} if pred.task == "detection" else {"path": p}
            f.write(orjson.dumps(line) + b"\n")
    return len(paths) / (time.perf_counter() - t0)


def engine(spec: ModelSpec, sources, out: Path, name: str, a) -> float:
    threads = a.ray_threads if name == "ray" else None
    job = PredictJob(spec, out / name, batch=8, workers=2, threads=threads)
    opts = {"num_workers": a.ray_workers, "cpus_per_worker": a.ray_cpus} if name == "ray" else None
    t0 = time.perf_counter()
    summary = run_predict(job, sources, name, opts, progress=False, log=lambda *a: None)
    seconds = time.perf_counter() - t0
    assert summary["images"] == len(sources.items) and summary["errors"] == 0, summary
    return len(sources.items) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vision-detector:latest")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=["naive", "local", "ray"])
    ap.add_argument("--ray-workers", type=int, default=1, help="model actors")
    ap.add_argument("--ray-cpus", type=float, default=1.5, help="CPUs per actor")
    ap.add_argument("--ray-threads", type=int, default=2, help="torch threads per actor")
    ap.add_argument("--out", default="bench/results/predict_speed.json")
    a = ap.parse_args()
    stored = stored_model(a.model)
    if stored is not None:
        spec = ModelSpec(stored.checkpoint, stored.variant, stored.file, stored.tag)
    else:
        spec = ModelSpec.from_path(a.model)
    jpegs = sorted((load_config("shapes").root / "JPEGImages").glob("*.jpg"))[: a.images]
    assert len(jpegs) == a.images, (
        f"expected {a.images} images in datasets/shapes, got {len(jpegs)}"
    )
    work = Path(tempfile.mkdtemp(prefix="predict_speed-"))
    (work / "src").mkdir()
    for p in jpegs:
        (work / "src" / p.name).symlink_to(p.resolve())
    sources = collect([str(work / "src")])
    threads = torch.get_num_threads()
    ray_start = None
    if "ray" in a.engines:
        from vision.batch.ray_engine import ensure_ray

        t0 = time.perf_counter()
        ray, _ = ensure_ray(None)
        ray_start = time.perf_counter() - t0
    runs: dict[str, list[float]] = {e: [] for e in a.engines}
    for r in range(a.repeats):
        for e in a.engines:
            out = work / f"r{r}"
            out.mkdir(exist_ok=True)
            ips = naive(spec, [i.path for i in sources.items], out) if e == "naive" else engine(
                spec, sources, out, e, a
            )  # fmt: skip
            runs[e].append(ips)
            print(f"round {r + 1}/{a.repeats} {e:<6} {ips:7.1f} images/s", flush=True)
            shutil.rmtree(out / e, ignore_errors=True)
    med = {e: statistics.median(v) for e, v in runs.items()}
    # each round's ratio (its engines ran back to back, so the host's drift mostly cancels),
    # then the median over rounds
    ratios, per_round = {}, {}
    for name, (num, den) in {"local_vs_naive": ("local", "naive"),
                             "ray_vs_local": ("ray", "local")}.items():  # fmt: skip
        if num in runs and den in runs:
            per_round[name] = [n / d for n, d in zip(runs[num], runs[den], strict=True)]
            ratios[name] = statistics.median(per_round[name])
    result = {
        "model": spec.name,
        "variant": spec.variant,
        "images": a.images,
        "repeats": a.repeats,
        "threads": threads,
        "ray": {"workers": a.ray_workers, "cpus_per_worker": a.ray_cpus, "threads": a.ray_threads},
        "images_per_s": runs,
        "median_images_per_s": med,
        "ratios": ratios,
        "ratios_per_round": per_round,
        "ray_start_s": ray_start,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps({"median_images_per_s": med, "ratios": ratios, "ray_start_s": ray_start}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
