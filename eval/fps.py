"""The FPS protocol: per-stage latency (decode, preprocess, inference, postprocess) as mean,
p50 and p95 milliseconds per batch, throughput in images/s, and peak memory, for each batch
size. Warm-up iterations are run and discarded; CUDA is synchronized before every clock read.
The same ``Predictor`` stages run in evaluation and in the REST service.
"""

from __future__ import annotations

import io
import platform
import resource
import time

import numpy as np
import torch
import torchvision
from PIL import Image

from vision.predictor import Predictor

STAGES = ("decode", "preprocess", "inference", "postprocess")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
    }


def synthetic_jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    """Encoded test images (smooth noise) for when no dataset images are given."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def measure(
    predictor: Predictor, images: list[bytes], batch_sizes=(1, 8), warmup: int = 5, iters: int = 30
) -> dict:
    """Time the predictor's stages on encoded ``images`` (cycled) for each batch size."""
    dev = predictor.device
    runs = []
    for b in batch_sizes:
        times: dict[str, list[float]] = {s: [] for s in STAGES}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for it in range(warmup + iters):
            batch = [images[(it * b + k) % len(images)] for k in range(b)]
            t = [time.perf_counter()]
            decoded = [predictor.decode(x) for x in batch]
            t.append(time.perf_counter())
            x, info = predictor.preprocess(decoded)
            _sync(dev)
            t.append(time.perf_counter())
            raw = predictor.infer(x)
            _sync(dev)
            t.append(time.perf_counter())
            predictor.postprocess(raw, info)
            _sync(dev)
            t.append(time.perf_counter())
            if it >= warmup:
                for s, (t0, t1) in zip(STAGES, zip(t, t[1:], strict=False), strict=True):
                    times[s].append((t1 - t0) * 1000)
        total = [sum(v) for v in zip(*times.values(), strict=True)]
        runs.append(
            {
                "batch": b,
                "stages_ms": {s: _summary(v) for s, v in times.items()},
                "total_ms": _summary(total),
                "images_per_s": b * 1000 / float(np.mean(total)),
                "peak_memory_mb": (
                    torch.cuda.max_memory_allocated(dev) / 2**20
                    if dev.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                ),
            }
        )
    return {
        "model": predictor.meta.name,
        "task": predictor.task,
        "input_size": predictor.size,
        "warmup": warmup,
        "iters": iters,
        "runs": runs,
        "environment": environment(predictor),
    }


def environment(predictor: Predictor | None = None) -> dict:
    dev = predictor.device if predictor else torch.device("cpu")
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "device_type": dev.type,
        "threads": torch.get_num_threads(),
        "dtype": "float16" if predictor and predictor.half else "float32",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "memory_note": "CUDA peak allocated" if dev.type == "cuda" else "process peak RSS",
    }


def format_fps(r: dict) -> str:
    lines = [
        f"FPS protocol: {r['model']} ({r['task']}), {r['input_size']} px, warm-up "
        f"{r['warmup']}, {r['iters']} timed iterations, {r['environment']['device_type']} "
        f"{r['environment']['threads']} threads {r['environment']['dtype']}"
    ]
    head = f"{'batch':>5}" + "".join(f"{s:>22}" for s in (*STAGES, "total")) + f"{'img/s':>9}"
    lines += [head, f"{'':>5}" + f"{'mean / p50 / p95 ms':>22}" * 5]
    for run in r["runs"]:
        cells = [run["stages_ms"][s] for s in STAGES] + [run["total_ms"]]
        lines.append(
            f"{run['batch']:>5}"
            + "".join(f"{c['mean']:>8.1f}{c['p50']:>7.1f}{c['p95']:>7.1f}" for c in cells)
            + f"{run['images_per_s']:>9.1f}"
        )
    return "\n".join(lines)
