"""What the REST service does, as a plain class: load the models, warm them up, answer
``/detect``, ``/segment`` and ``/info``, and say whether the worker is alive and ready.

``service.service.VisionService`` (the BentoML service) holds one :class:`VisionCore` and
hands every call to it. Keeping the logic out of the class that ``@bentoml.service`` wraps
lets it be built and tested like any object (and mutation-tested: mutmut's method trampolines
need the class's own attributes, which BentoML's wrapper does not keep).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import prometheus_client
import torch
from starlette.responses import JSONResponse

from service.batching import Batcher, inference_thread
from service.drain import Drain
from service.launch import CKPT_ENV, STORE, TAG_ENV, VARIANT_ENV, half_precision
from service.memory import IdleTrim, mmap_threshold_kib, pin_mmap_threshold
from service.store import stored_model
from service.uploads import ClientError, Limits, image_error, parse_bool, parse_number
from vision.data.io import ImageError
from vision.deploy import VARIANT_KINDS, variant_predictor
from vision.postprocess import MASK_FORMATS
from vision.predictor import Predictor

logger = logging.getLogger("vision.service")

INFER_MS = prometheus_client.Histogram(
    name="vision_inference_latency_ms",
    documentation="Model forward time per batch (ms)",
    labelnames=["task"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
BATCH = prometheus_client.Histogram(
    name="vision_batch_size",
    documentation="Images per model forward (adaptive batching)",
    labelnames=["task"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)
REQUESTS = prometheus_client.Counter(
    name="vision_requests",
    documentation="Requests by endpoint and HTTP status",
    labelnames=["endpoint", "status"],
)


def _load(task: str, device: str, half: bool) -> tuple[Predictor | None, dict]:
    path = os.environ.get(CKPT_ENV[task])
    if path:
        variant, _, file = os.environ.get(VARIANT_ENV[task], "eager").partition(":")
        pred = variant_predictor(path, variant, file or None, device=device, half=half)
        # the file name only: responses never show server paths
        return pred, {"version": Path(path).name, "variant": variant}
    stored = stored_model(os.environ.get(TAG_ENV[task], f"{STORE[task]}:latest"))
    if stored is None:
        return None, {}
    # the deployable variant promotion chose
    pred = variant_predictor(
        stored.checkpoint, stored.variant, stored.file, device=device, half=half
    )
    return pred, {"version": stored.tag, **stored.metadata}


def _answer(pred: Predictor, raw, *, info: dict, finish: dict, render: dict) -> dict:
    """On the inference thread, right after the batch's forward pass: one image's raw output
    → its result in original pixels → JSON-ready data."""
    return pred.render(pred.finish(raw, info, **finish), **render)


def _reply(ctx, endpoint: str, status: int, body: dict, headers: dict | None = None):
    """A JSON answer with its status (BentoML takes the status of an endpoint that has a
    context from ``ctx.response``, so it is set there too)."""
    REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
    if ctx is not None:
        ctx.response.status_code = status
        ctx.response.metadata.update(headers or {})
    return JSONResponse(body, status_code=status, headers=headers)


def _scalars(metrics: dict | None) -> dict:
    """A model's metrics without their curves and matrices (numbers and per-class values)."""
    out = {}
    for key, d in (metrics or {}).items():
        if isinstance(d, dict):
            d = {m: v for m, v in d.items() if m == "per_class" or not isinstance(v, list | dict)}
        out[key] = d
    return out


def _timings(clock: tuple[float, float, float, float], queue_ms, infer_ms, post_ms) -> dict:
    """An answer's ``timing_ms`` from the ``perf_counter`` readings at its start, after the
    upload was read, after it was prepared and at its end, and the batcher's own times."""
    start, read, prepared, end = clock
    return {
        "decode": (read - start) * 1000,
        "preprocess": (prepared - read) * 1000,
        "queue": queue_ms,
        "inference": infer_ms,
        "postprocess": post_ms,
        "total": (end - start) * 1000,
    }


def _set_threads() -> int:
    threads = os.environ.get("VISION_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _observer(task: str):
    def observe(n: int, ms: float) -> None:
        BATCH.labels(task=task).observe(n)
        INFER_MS.labels(task=task).observe(ms)

    return observe


class VisionCore:
    """The models of one worker, their batchers and threads, and the answers to its routes.

    ``drain`` says when the worker is shutting down (``/readyz`` then fails); ``idle`` gives
    freed memory back once the worker is idle. Both are started once the models are warm.
    """

    def __init__(self, drain: Drain, idle: IdleTrim) -> None:
        self.drain, self.idle = drain, idle
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.half = self.device == "cuda" and half_precision()
        self.limits = Limits.from_env()
        self.models: dict[str, Predictor] = {}
        self.model_info: dict[str, dict] = {}
        self.batchers: dict[str, Batcher] = {}
        max_batch = int(os.environ.get("VISION_MAX_BATCH", "8"))
        max_wait = float(os.environ.get("VISION_MAX_WAIT_MS", "0"))
        max_queue = int(os.environ.get("VISION_MAX_QUEUE", "64"))
        deadline = float(os.environ.get("VISION_DEADLINE_S", "30"))
        # a forward pass running longer than this makes /livez and /readyz unhealthy
        self.stuck_s = float(os.environ.get("VISION_STUCK_S", "60"))
        # fault drills (tests, the soak benchmark): a request header x-vision-fault makes the
        # next forward pass raise ("raise") or stall ("stall=SECONDS"); off unless asked for
        self.faults = os.environ.get("VISION_FAULTS") == "1"
        self._fault: str | None = None
        # every torch op of this process (loading, warm-up, forward, post-processing) runs on
        # this one thread, shared by both tasks, so the process has a single OpenMP team
        self.infer_pool = inference_thread()
        self.decode_pool = ThreadPoolExecutor(1, thread_name_prefix="vision-decode")
        self.threads = self.infer_pool.submit(_set_threads).result()
        for task in STORE:
            pred, info = self.infer_pool.submit(_load, task, self.device, self.half).result()
            if pred is None:
                continue
            self.models[task], self.model_info[task] = pred, info
            self.batchers[task] = Batcher(
                self._forward(pred),
                max_batch,
                max_wait,
                max_queue,
                _observer(task),
                pool=self.infer_pool,
                deadline_s=deadline,
            )
            warm = [np.zeros((pred.size, pred.size, 3), np.uint8)] * 2
            # warm-up before we report ready: allocations and the OpenMP team are made now
            self.infer_pool.submit(pred, warm).result()
        # request bodies and decoded images in their own mmaps, so they go back to the OS when
        # freed; not when torch runs a model on the CPU (service/memory.py)
        torch_on_cpu = any(
            p.device.type == "cpu" and not p.runtime_backend for p in self.models.values()
        )
        pin_mmap_threshold(mmap_threshold_kib(os.environ, torch_on_cpu))
        if not self.models:
            raise RuntimeError(
                "no model to serve: expected vision-detector/vision-segmenter in"
                " the BentoML store (run `vision promote`) or a checkpoint in "
                "VISION_DETECTOR_CKPT / VISION_SEGMENTER_CKPT"
            )
        self.ready = True
        drain.install()
        idle.start()

    def is_alive(self) -> bool:
        """False while the inference thread is gone or a forward pass is stuck (longer than
        ``VISION_STUCK_S``); true again once it finishes."""
        pool_ok = not self.infer_pool._shutdown and not self.infer_pool._broken
        return pool_ok and not any(b.stuck(self.stuck_s) for b in self.batchers.values())

    def is_ready(self) -> bool:
        return self.ready and not self.drain.draining and self.is_alive()

    def _forward(self, pred: Predictor):
        def forward(arrays: list[np.ndarray]) -> list:
            fault, self._fault = self._fault, None
            if fault == "raise":
                raise RuntimeError("injected fault: the forward pass raised")
            if fault and fault.startswith("stall="):
                time.sleep(float(fault.split("=", 1)[1]))
            return pred.forward(arrays)

        return forward

    async def _run(self, task: str, image: Path, endpoint: str, params, ctx=None) -> JSONResponse:
        """Upload → JSON through the Predictor: ``prepare`` on the decode thread, then
        ``forward`` (batched across requests), ``finish`` and ``render`` on the inference
        thread."""
        t0 = time.perf_counter()
        try:
            if task not in self.models:
                raise ClientError(503, f"no {task} model is loaded on this server")
            pred = self.models[task]
            finish, render = params()
            # decoding and resizing run off the event loop, so a big upload stalls no one else;
            # one decode thread: more would only fight the inference thread for the cores
            loop = asyncio.get_running_loop()
            t1, x, info = await loop.run_in_executor(self.decode_pool, self._prepare, pred, image)
            t2 = time.perf_counter()
            gone = ctx.request.is_disconnected if ctx is not None else None
            if self.faults and ctx is not None:
                self._fault = ctx.request.headers.get("x-vision-fault") or self._fault
            answer, batch, infer_ms, queue_ms, post_ms = await self.batchers[task].submit(
                x, partial(_answer, pred, info=info, finish=finish, render=render), gone
            )
            t4 = time.perf_counter()
        except ClientError as e:
            retry = {"Retry-After": "1"} if e.status == 503 else {}
            return _reply(ctx, endpoint, e.status, e.detail, retry)
        except asyncio.CancelledError:  # the client left before its image was inferred
            return _reply(ctx, endpoint, 499, {"error": "client closed the request"})
        except Exception as e:  # noqa: BLE001 - the server's fault: this batch only
            logger.exception("inference failed")
            error = {"error": f"inference failed: {type(e).__name__}: {e}"}
            return _reply(ctx, endpoint, 500, error)
        h, w = info["orig_size"]
        body = {
            "model": pred.meta.name,
            "version": self.model_info[task].get("version"),
            "width": w,
            "height": h,
            "batch_size": batch,
            "timing_ms": _timings((t0, t1, t2, t4), queue_ms, infer_ms, post_ms),
            **answer,
        }
        return _reply(ctx, endpoint, 200, body)

    def _prepare(self, pred: Predictor, image: Path):
        data = Path(image).read_bytes() if image is not None else b""
        t1 = time.perf_counter()
        try:
            x, info = pred.prepare(data, self.limits)  # NumPy only: torch stays on one thread
        except ImageError as e:
            raise image_error(e) from None
        return t1, x, info

    async def detect(
        self, image: Path, score_threshold=None, max_detections=None, agnostic_nms=None, ctx=None
    ) -> JSONResponse:
        """Boxes in original pixels; the parameters are checked when the request is run."""

        def params():
            finish = {
                "score_threshold": parse_number(score_threshold, "score_threshold", 0, 1, 0.25),
                "max_detections": parse_number(
                    max_detections, "max_detections", 1, 1000, 100, integer=True
                ),
                "agnostic_nms": parse_bool(agnostic_nms, "agnostic_nms", False),
            }
            return finish, {}

        return await self._run("detection", image, "detect", params, ctx)

    async def segment(self, image: Path, mask_format: str = "png", ctx=None) -> JSONResponse:
        """Pixel counts and the class-index mask in ``mask_format`` (``MASK_FORMATS``)."""

        def params():
            if mask_format not in MASK_FORMATS:
                raise ClientError(
                    422,
                    f"'mask_format': expected one of {list(MASK_FORMATS)}, got {mask_format!r}",
                    field="mask_format",
                )
            return {}, {"mask_format": mask_format}

        return await self._run("segmentation", image, "segment", params, ctx)

    def info(self) -> dict:
        """The loaded models (classes, input size, metrics, report, variant), the device, the
        threads and the upload limits, as JSON-ready data."""
        models = {}
        for task, pred in self.models.items():
            meta = self.model_info[task]
            variant = meta.get("variant", "eager")
            backend, precision = VARIANT_KINDS[variant]
            models[task] = {
                "name": pred.meta.name,
                "version": meta.get("version"),
                **pred.labels(),  # classes (and a segmenter's class-map layout)
                "input_size": pred.size,
                "metrics": _scalars(pred.meta.metrics),
                "report": {
                    k: meta.get(k)
                    for k in ("report_id", "primary_metric", "primary", "latency_ms_p50", "metrics")
                },
                "variant": {
                    "name": variant,
                    "backend": backend,
                    "precision": "float16" if pred.half else precision,
                    "metric": meta.get("variant_metric", meta.get("primary")),
                    "p50_ms": meta.get("variant_p50_ms"),
                    "rule": meta.get("variant_rule"),
                },
            }
        data = {
            "models": models,
            "device": self.device,
            "threads": self.threads,
            "half_precision": self.half,
            "limits": self.limits.__dict__,
        }
        return json.loads(json.dumps(data, default=str))
