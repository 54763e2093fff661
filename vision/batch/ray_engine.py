"""The Ray Data engine: the same job on a Ray cluster (or a local Ray started here).

Paths travel as rows (``from_items``; image bytes never pass through the driver); map tasks
read and letterbox images; a pool of model actors (each loads the model once) runs batched
inference and writes its lines to a shard file of its own under ``OUT/.shards/`` (and masks
or overlays beside them, so ``--out`` must be on a filesystem every node sees). The driver
only counts what comes back, then merges the shards into the job's files, sorted by path,
each image once: a batch retried after an actor died may have been written twice. An
interrupted job's shards are merged by the next run before it decides what is left.
"""

from __future__ import annotations

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
)
from vision.batch.outputs import JobFolder
from vision.batch.sources import Item
from vision.errors import DataError

EXTRA = "pip install 'vision-suite[ray]'"


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
    ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    return ray, True


def _items(row: dict, i: int = 0) -> list[Item]:
    """The items of the ``i``-th chunk row of a batch."""
    return [
        Item(str(p), int(k), str(r))
        for p, k, r in zip(row["paths"][i], row["ids"][i], row["rels"][i], strict=True)
    ]


def _decode(batch: dict, size: int, limits, chunk: int) -> dict:
    """Map task, one chunk row: read and letterbox its images into a ``(chunk, S, S, 3)``
    array (zeros where an image failed or the chunk is short), failures with their reason."""
    from vision.batch.job import read_and_prepare
    from vision.predictor import Letterbox

    letterbox = Letterbox(size)
    items = _items(batch)
    arrays = np.zeros((1, chunk, size, size, 3), np.uint8)
    cols = {k: [] for k in ("h", "w", "scale", "decode_ms", "reason", "expected", "got")}
    for i, item in enumerate(items):
        got = read_and_prepare(item, letterbox, limits, False)
        if isinstance(got, tuple):
            array, info, _, ms = got
            arrays[0, i] = array
            h, w = info["orig_size"]
            row = (h, w, info["scale"], ms, "", "", "")
        else:
            row = (0, 0, 0.0, 0.0, got.reason, got.expected, got.got)
        for k, v in zip(cols, row, strict=True):
            cols[k].append(v)
    return {**batch, "array": arrays, **{k: [v] for k, v in cols.items()}}


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
    ):
        import ray
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
        """One chunk row: its good images through the model together, every line to this
        actor's shards; returns one row per image (path, node, whether it was predicted)."""
        from vision.data.io import ImageError, read_image

        items = _items(batch)
        reason = [str(r) for r in batch["reason"][0]]
        ok = [i for i, r in enumerate(reason) if not r]
        errors = [
            error_line(
                items[i],
                ImageError(
                    reason[i], items[i].path, str(batch["expected"][0][i]), str(batch["got"][0][i])
                ),
            )  # fmt: skip
            for i, r in enumerate(reason)
            if r
        ]
        t0 = time.perf_counter()
        arrays = batch["array"][0][ok] if ok else []  # a copy: Ray's batch is read-only
        raws = self.pred.forward(list(arrays)) if ok else []
        infer = (time.perf_counter() - t0) * 1e3
        lines, post = [], 0.0
        for i, raw in zip(ok, raws, strict=True):
            info = {"orig_size": (int(batch["h"][0][i]), int(batch["w"][0][i]))}
            info["scale"] = float(batch["scale"][0][i])
            image = read_image(items[i].path) if self.keep else None
            timing = {"decode": float(batch["decode_ms"][0][i]), "infer": infer / len(ok)}
            lines.append(self.recorder.record(items[i], image, raw, info, timing))
            post += timing["postprocess"]
        self._write("predictions", lines)
        self._write("errors", errors)
        self.batches += 1
        self._maybe_die()
        n, good = len(items), np.asarray([not r for r in reason])
        return {
            "path": np.asarray([it.path for it in items]),
            "node": np.asarray([self.node] * n),
            "ok": good,
            "decode_ms": np.asarray(batch["decode_ms"][0], np.float64),
            "infer_ms": np.full(n, infer / max(1, len(ok))),
            "post_ms": np.full(n, post / max(1, len(ok))),
        }

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
    pred,
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
        return _run(ray, job, pred, chunks, folder, progress, num_workers, gpus_per_worker,
                    cpus_per_worker)  # fmt: skip
    finally:
        if started:
            ray.shutdown()


def _run(ray, job, pred, chunks, folder, progress, workers, gpus, cpus) -> dict:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    folder.shards.mkdir(parents=True, exist_ok=True)
    counts = {"predicted": 0, "errors": 0}
    nodes: Counter = Counter()
    stage = {"decode": 0.0, "infer": 0.0, "postprocess": 0.0}
    if chunks:
        rows = [
            {
                "paths": [it.path for it in c],
                "ids": [it.image_id for it in c],
                "rels": [it.rel for it in c],
            }
            for c in chunks
        ]
        # decode tasks reserve memory for a batch of images: their arguments then differ from
        # the actors', so Ray Data keeps them apart (unfused) and decoding overlaps inference
        ds = ray.data.from_items(rows).map_batches(
            _decode,
            batch_size=1,
            fn_kwargs={"size": pred.size, "limits": job.limits, "chunk": job.batch},
            num_cpus=0.5,
            memory=64 * 2**20,
        )
        device = "cuda" if gpus else ("cpu" if job.device == "auto" else job.device)
        ds = ds.map_batches(
            PredictActor,
            batch_size=1,
            fn_constructor_kwargs={
                "spec": job.model,
                "options": job.options,
                "out": str(folder.out),
                "device": device,
                "threads": job.threads or max(1, int(cpus)),
                "kill_after": int(os.environ.get(KILL_ENV, "0")),  # the fault drill (tests)
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
            stage["decode"] += float(b["decode_ms"][ok].sum())
            stage["infer"] += float(b["infer_ms"][ok].sum())
            stage["postprocess"] += float(b["post_ms"][ok].sum())
    merged = folder.merge_shards()
    return {
        **counts,
        "merged": merged,
        "nodes": dict(sorted(nodes.items())),
        "stage_ms": {k: round(v, 1) for k, v in stage.items()},
    }
