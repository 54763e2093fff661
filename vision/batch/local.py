"""The local engine: decode threads read and letterbox the images of the next batches while
the main thread runs the model on this one and writes its lines; decoding overlaps inference
(the model's threads release the GIL)."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from vision.batch.job import KILL_ENV, PredictJob, Recorder, error_line, read_and_prepare
from vision.batch.outputs import JobFolder
from vision.batch.sources import Item
from vision.data.io import ImageError


def run_local(
    job: PredictJob, pred, chunks: list[list[Item]], folder: JobFolder, progress: bool
) -> dict:
    """Every chunk (a batch of consecutive items) through ``pred``, in order; returns this
    run's counts and stage times (ms, summed over images)."""
    return _run(job, pred, chunks, folder, progress)


def _run(job: PredictJob, pred, chunks: list[list[Item]], folder: JobFolder, progress) -> dict:
    recorder = Recorder(pred, job.options, folder.out)
    kill_after = int(os.environ.get(KILL_ENV, "0"))  # the fault drill (tests)
    stage = {"decode": 0.0, "infer": 0.0, "postprocess": 0.0, "write": 0.0}
    counts = {"predicted": 0, "errors": 0, "batches": 0}
    keep = job.options.save_drawn
    total = sum(map(len, chunks))
    bar = tqdm(total=total, unit="img", desc="predict", disable=not progress, smoothing=0.1)
    ahead = max(2, -(-4 * job.workers // job.batch))  # chunks decoded ahead of the model
    with ThreadPoolExecutor(job.workers, thread_name_prefix="predict-decode") as pool:

        def submit(chunk):
            return [
                (it, pool.submit(read_and_prepare, it, pred.letterbox, job.limits, keep))
                for it in chunk
            ]

        pending = deque(submit(c) for c in chunks[:ahead])
        for i in range(len(chunks)):
            decoded = [(it, f.result()) for it, f in pending.popleft()]
            if i + ahead < len(chunks):
                pending.append(submit(chunks[i + ahead]))
            lines, errors = _batch(pred, recorder, decoded, stage)
            t0 = time.perf_counter()
            folder.append("predictions", lines)
            folder.append("errors", errors)
            stage["write"] += (time.perf_counter() - t0) * 1e3
            counts["predicted"] += len(lines)
            counts["errors"] += len(errors)
            counts["batches"] += 1
            bar.update(len(decoded))
            if kill_after and counts["batches"] >= kill_after:
                os._exit(1)
    bar.close()
    return {**counts, "stage_ms": {k: round(v, 1) for k, v in stage.items()}}


def _batch(pred, recorder: Recorder, decoded: list, stage: dict) -> tuple[list, list]:
    """One chunk: its good images through the model together, its bad ones as error lines."""
    good = [(it, got) for it, got in decoded if not isinstance(got, ImageError)]
    errors = [error_line(it, got) for it, got in decoded if isinstance(got, ImageError)]
    lines = []
    if good:
        t0 = time.perf_counter()
        raws = pred.forward([got[0] for _, got in good])
        infer = (time.perf_counter() - t0) * 1e3
        stage["infer"] += infer
        for (item, (_, info, image, decode_ms)), raw in zip(good, raws, strict=True):
            stage["decode"] += decode_ms
            timing = {"decode": decode_ms, "infer": infer / len(good)}
            lines.append(recorder.record(item, image, raw, info, timing))
            stage["postprocess"] += timing["postprocess"]
    return lines, errors
