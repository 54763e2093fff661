"""The Ray Data engine: the same job on a Ray cluster (or a local Ray started here).

Paths travel as rows (``from_items``; image bytes never pass through the driver); map tasks
read and letterbox images; a pool of model actors (each loads the model once) runs batched
inference and writes its lines to a shard file of its own under ``OUT/.shards/`` (and masks
or overlays beside them, so ``--out`` must be on a filesystem every node sees). The driver
only counts what comes back, then merges the shards into the job's files, sorted by path,
each image once: a batch retried after an actor died may have been written twice. An
interrupted job's shards are merged by the next run before it decides what is left.

An exported variant with NumPy decoding (``vision.runtime_predictor``) runs in the actors
without torch: the driver makes its small spec once and passes it in, and an actor starts in
about half a second instead of four (torch, torchvision and the model to build).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from vision.batch.job import (
    KILL_ENV,
    ModelSpec,
    PredictJob,
    PredictOptions,
    Recorder,
    error_line,
    runtime_predictor,
)
from vision.batch.outputs import JobFolder
from vision.batch.sources import Item
from vision.errors import DataError

EXTRA = "pip install 'vision-suite[ray]'"
DECODE_CPUS = 0.25  # what a decode task reserves: reading and resizing a batch is light
# a Ray started here keeps idle workers this long: Ray's default (one second, beyond one
# worker per CPU) ended every decode worker between jobs on two cores, and each job then
# paid a worker's start (~1.5 s) again. A cluster keeps its own settings.
IDLE_WORKER_MS = 600_000


def import_ray():
    """Ray and Ray Data, or an error naming the extra that installs them."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise DataError("--engine ray", f"Ray Data installed ({EXTRA})", f"{e}") from e
    return ray


def ensure_ray(address: str | None):
    """Connect to ``address`` (``auto``, ``ray://HOST:PORT``) or start a local Ray, unless
    this process is connected already. Returns (ray, whether this call started it)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kw = {"include_dashboard": False, "logging_level": "WARNING"}
    if address is None and not os.environ.get("RAY_ADDRESS"):  # a new local Ray
        kw["_system_config"] = {"idle_worker_killing_time_threshold_ms": IDLE_WORKER_MS}
    ray.init(address=address, **kw)
    return ray, True


def _items(batch: dict, i: int = 0) -> list[Item]:
    """The items of the ``i``-th chunk row of a batch (a JSON list of [path, id, name])."""
    return [Item(p, int(k), r) for p, k, r in json.loads(str(batch["items"][i]))]


def _decode(batch: dict, size: int, limits, chunk: int) -> dict:
    """Map task over chunk rows: read and letterbox each row's images into a
    ``(chunk, S, S, 3)`` array (zeros where an image failed or the chunk is short), with
    ``meta`` = height, width, scale and decode ms per image, and each failure's reason."""
    from vision.batch.job import read_and_prepare
    from vision.data.letterbox import Letterbox

    letterbox = Letterbox(size)
    n = len(batch["items"])
    arrays = np.zeros((n, chunk, size, size, 3), np.uint8)
    meta = np.zeros((n, chunk, 4), np.float64)
    failed = []
    for row in range(n):
        errors = {}
        for i, item in enumerate(_items(batch, row)):
            got = read_and_prepare(item, letterbox, limits, False)
            if isinstance(got, tuple):
                array, info, _, ms = got
                arrays[row, i] = array
                meta[row, i] = (*info["orig_size"], info["scale"], ms)
            else:
                errors[i] = [got.reason, got.expected, got.got]
        failed.append(json.dumps(errors))
    return {"items": batch["items"], "array": arrays, "meta": meta, "failed": np.asarray(failed)}


class PredictActor:
    """One model per actor: batched inference, lines to this actor's shard files."""

    def __init__(
        self,
        spec: ModelSpec,
        options: PredictOptions,
        out: str,
        device: str,
        threads: int,
        kill_after: int = 0,
        runtime: dict | None = None,
    ):
        import ray

        if runtime is not None:  # an exported variant on NumPy: torch is never imported
            self.pred = runtime_predictor(spec, runtime, int(threads))
        else:
            import torch

            if threads:
                torch.set_num_threads(int(threads))
            self.pred = spec.load(device)
        self.recorder = Recorder(self.pred, options, Path(out))
        self.keep = options.save_drawn
        self.node = ray.get_runtime_context().get_node_id()
        self.folder = JobFolder(out)
        tag = f"{self.node[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.shards = {
            k: self.folder.shards / f"{tag}.{k}.jsonl" for k in ("predictions", "errors")
        }
        self.batches = 0
        self.kill_after = kill_after

    def __call__(self, batch: dict) -> dict:
        """Chunk rows, one model call each: the good images of a chunk through the model
        together, every line to this actor's shards; returns one row per image (path, node,
        whether it was predicted, its stage times)."""
        out: dict[str, list] = {k: [] for k in ("path", "node", "ok", "decode", "infer", "post")}
        for row in range(len(batch["items"])):
            self._chunk(batch, row, out)
        return {k: np.asarray(v) for k, v in out.items()}

    def _chunk(self, batch: dict, row: int, out: dict) -> None:
        from vision.data.io import ImageError, read_image

        items, meta = _items(batch, row), batch["meta"][row]
        failed = {int(i): e for i, e in json.loads(str(batch["failed"][row])).items()}
        ok = [i for i in range(len(items)) if i not in failed]
        errors = [error_line(items[i], ImageError(e[0], items[i].path, e[1], e[2]))
                  for i, e in sorted(failed.items())]  # fmt: skip
        t0 = time.perf_counter()
        raws = self.pred.forward(list(batch["array"][row][ok])) if ok else []  # a copy
        infer = (time.perf_counter() - t0) * 1e3 / max(1, len(ok))
        lines, post = [], {}
        for i, raw in zip(ok, raws, strict=True):
            info = {"orig_size": (int(meta[i][0]), int(meta[i][1])), "scale": float(meta[i][2])}
            image = read_image(items[i].path) if self.keep else None
            timing = {"decode": float(meta[i][3]), "infer": infer}
            lines.append(self.recorder.record(items[i], image, raw, info, timing))
            post[i] = timing["postprocess"]
        self._write("predictions", lines)
        self._write("errors", errors)
        self.batches += 1
        self._maybe_die()
        for i, item in enumerate(items):
            out["path"].append(item.path)
            out["node"].append(self.node)
            out["ok"].append(i not in failed)
            out["decode"].append(float(meta[i][3]))
            out["infer"].append(infer if i not in failed else 0.0)
            out["post"].append(post.get(i, 0.0))

    def _write(self, kind: str, lines: list[dict]) -> None:
        import orjson

        if lines:
            with open(self.shards[kind], "ab") as f:
                f.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    def _maybe_die(self) -> None:
        """The fault drill: the first actor to reach ``kill_after`` batches exits at once."""
        if not self.kill_after or self.batches < self.kill_after:
            return
        marker = self.folder.shards / "killed-once"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def run_ray(
    job: PredictJob,
    size: int,
    chunks: list[list[Item]],
    folder: JobFolder,
    progress: bool,
    address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> dict:
    """The chunks (batches of consecutive items) on Ray Data, one chunk per decode task and per
    model call; returns this run's counts, stage times and images per node."""
    ray, started = ensure_ray(address)
    try:
        return _run(ray, job, size, chunks, folder, progress, num_workers, gpus_per_worker,
                    cpus_per_worker)  # fmt: skip
    finally:
        if started:
            ray.shutdown()


def _run(ray, job, size, chunks, folder, progress, workers, gpus, cpus) -> dict:
    cluster = ray.cluster_resources()
    if workers * cpus > cluster.get("CPU", 0) - DECODE_CPUS or workers * gpus > cluster.get(
        "GPU", 0
    ):
        raise DataError(
            "--num-workers / --cpus-per-worker / --gpus-per-worker",
            f"model actors that leave a quarter CPU for decoding (the cluster has "
            f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs)",
            f"{workers} actors × {cpus:g} CPUs, {gpus:g} GPUs",
            "fewer or smaller actors",
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    folder.shards.mkdir(parents=True, exist_ok=True)
    counts = {"predicted": 0, "errors": 0}
    nodes: Counter = Counter()
    stage = {"decode": 0.0, "infer": 0.0, "postprocess": 0.0}
    if chunks:
        rows = [{"items": json.dumps([[it.path, it.image_id, it.rel] for it in c])} for c in chunks]
        # blocks of about eight chunks: a task's overhead is spread over ~64 images. Decode
        # tasks reserve the memory a worker holds (~0.5 GiB with its imports): their
        # arguments then differ from the actors', so Ray Data keeps the two stages apart
        # (unfused) and decoding overlaps inference
        blocks = min(len(rows), max(len(rows) // 8, 2 * workers))  # every actor gets work
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _decode,
            batch_size=None,
            fn_kwargs={"size": size, "limits": job.limits, "chunk": job.batch},
            num_cpus=DECODE_CPUS,
            # two decode tasks per model actor at a time (four for GPU actors): decoding an
            # image costs a sixth of a CPU model call; unbounded, Ray Data started a decode
            # worker per free quarter CPU, each taking a core while the actors start. Their
            # workers stay warm between jobs (IDLE_WORKER_MS)
            concurrency=workers * (4 if gpus else 2),
            memory=512 * 2**20,
        )
        device = "cuda" if gpus else ("cpu" if job.device == "auto" else job.device)
        ds = ds.map_batches(
            PredictActor,
            batch_size=None,
            fn_constructor_kwargs={
                "spec": job.model,
                "options": job.options,
                "out": str(folder.out),
                "device": device,
                "threads": job.threads or max(1, int(cpus)),
                "kill_after": int(os.environ.get(KILL_ENV, "0")),  # the fault drill (tests)
                "runtime": job.model.runtime(),  # made here, once: actors need no torch
            },
            # actors spread over the nodes (Ray Data's default); two chunks queued per actor
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok = b["ok"].astype(bool)
            counts["predicted"] += int(ok.sum())
            counts["errors"] += int((~ok).sum())
            nodes.update(b["node"].tolist())
            for k, col in (("decode", "decode"), ("infer", "infer"), ("postprocess", "post")):
                stage[k] += float(b[col][ok].sum())
    merged = folder.merge_shards()
    return {
        **counts,
        "merged": merged,
        "nodes": dict(sorted(nodes.items())),
        "stage_ms": {k: round(v, 1) for k, v in stage.items()},
    }
