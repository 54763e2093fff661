"""``run_predict``: a job on the local or the Ray engine, then its totals over every run."""

from __future__ import annotations

import time
from dataclasses import asdict

from vision.batch.job import ENGINES, PredictJob, category_ids
from vision.batch.outputs import JobFolder
from vision.batch.sources import Item, Sources


def batches(items: list[Item], size: int, done: set[str]) -> list[list[Item]]:
    """The model's batches: consecutive ``size`` items of the whole list, less those done.
    Both engines batch alike, and a resumed job as it would have (what a run finished is whole
    batches): the numbers a model gives an image can depend on its batch, so this keeps
    results identical across engines and resumptions (at equal torch threads)."""
    chunks = [
        [it for it in items[i : i + size] if it.path not in done]
        for i in range(0, len(items), size)
    ]
    return [c for c in chunks if c]


def run_predict(
    job: PredictJob,
    sources: Sources,
    engine: str = "local",
    ray_options: dict | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Predict every item not already done in ``job.out`` with ``engine``, then write
    ``coco_results.json`` and ``summary.json`` over every run of the job. Returns the summary
    (its ``exit_status``: 0 when every image was predicted, 1 when any is in errors.jsonl)."""
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    import torch

    threads = torch.get_num_threads()
    if job.threads and engine == "local":  # before the model loads: ONNX Runtime follows it
        torch.set_num_threads(job.threads)
    try:
        return _run_predict(job, sources, engine, ray_options, progress, log)
    finally:
        torch.set_num_threads(threads)


def _run_predict(job, sources, engine, ray_options, progress, log) -> dict:
    folder = JobFolder(job.out)
    folder.out.mkdir(parents=True, exist_ok=True)
    merged = folder.merge_shards()  # an interrupted Ray run's finished work
    done, recovered = folder.done(job.retry_errors)
    chunks = batches(sources.items, job.batch, done)
    todo = sum(map(len, chunks))
    model = job.model.describe()  # (Ray: the model itself loads in the actors only)
    pred = job.model.load(job.device) if engine == "local" else None
    names = model["classes"]
    cat_ids = category_ids(names, sources.categories, "--source (its categories)")
    log(
        f"[predict] {len(sources.items)} images, {len(sources.items) - todo} done earlier, "
        f"{todo} to predict with {job.model.name or job.model.checkpoint} "
        f"({job.model.variant}, {engine} engine) into {folder.out}"
    )
    t0 = time.perf_counter()
    if engine == "local":
        from vision.batch.local import run_local

        stats = run_local(job, pred, chunks, folder, progress)
    else:
        from vision.batch.ray_engine import run_ray

        stats = run_ray(job, model["size"], chunks, folder, progress, **(ray_options or {}))
    seconds = time.perf_counter() - t0
    folder.close()
    totals = folder.totals(model["task"], names)
    results = folder.write_coco_results(model["task"], cat_ids, names)
    summary = {
        "model": job.model.name or job.model.checkpoint,
        "variant": job.model.variant,
        "task": model["task"],
        "engine": engine,
        "options": asdict(job.options),
        **totals,
        "coco_results": results,
        "skipped": sources.skipped,
        "this_run": {
            "to_predict": todo,
            "done_earlier": recovered,
            "merged_from_shards": merged,
            "seconds": round(seconds, 3),
            "images_per_s": round(stats["predicted"] / seconds, 3) if seconds else None,
            **stats,
        },
        "exit_status": int(totals["errors"] > 0),
    }
    folder.write_summary(summary)
    return summary
