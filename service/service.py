"""The REST inference service: ``bentoml serve service.service:VisionService``.

Models come from the BentoML store (``vision-detector:latest``, ``vision-segmenter:latest``,
put there by ``vision promote``) or from checkpoint paths in ``VISION_DETECTOR_CKPT`` /
``VISION_SEGMENTER_CKPT``. They are loaded once per worker and warmed up before ``/readyz``
says ready. On CUDA they run in float32 unless ``VISION_HALF=1`` (on an H100 float16 was no
faster for the default models: ``bench/records/h100_2026-11-22/gpu_check.json``).
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

import bentoml
import numpy as np
import prometheus_client
import torch
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from service.access import from_env as access_from_env
from service.batching import Batcher, inference_thread
from service.drain import Drain
from service.guard import RequestGuard
from service.launch import CKPT_ENV, STORE, TAG_ENV, VARIANT_ENV, half_precision
from service.memory import IdleTrim, mmap_threshold_kib, pin_mmap_threshold
from service.store import stored_model
from service.timeout import install as install_request_timeout
from service.uploads import ClientError, Limits, image_error, parse_bool, parse_number
from vision.data.io import ImageError
from vision.deploy import VARIANT_KINDS, variant_predictor
from vision.postprocess import MASK_FORMATS
from vision.predictor import Predictor

WEB = Path(__file__).parent / "web"
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
# SIGTERM → 503s for new requests while those in flight finish (installed by the service
# instance, which BentoML creates on the worker's main thread after uvicorn set its handlers)
DRAIN = Drain.from_env()
# once idle (VISION_TRIM_IDLE_S, default 2 s), freed memory goes back to the OS: the RSS
# high-water mark of a load peak does not stay (service/memory.py)
IDLE = IdleTrim.from_env()
# traffic.timeout through service/timeout.py: BentoML's own middleware keeps every request's
# context (and its tracing span) alive for the whole timeout after the answer
install_request_timeout()
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


def _ui_app() -> Starlette:
    """The web page, and the sample images it offers (``service/web/samples``)."""

    async def index(_):
        return FileResponse(WEB / "index.html", media_type="text/html")

    async def samples(_):
        return JSONResponse(sorted(p.name for p in (WEB / "samples").glob("*.jpg")))

    async def sample(request):
        name = request.path_params["name"]
        path = WEB / "samples" / name
        if "/" in name or not name.endswith(".jpg") or not path.is_file():
            return JSONResponse({"error": f"no sample named {name!r}"}, status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/samples.json", samples),
            Route("/samples/{name}", sample),
        ]
    )


@bentoml.service(
    name="vision",
    traffic={"timeout": 120, "max_concurrency": 512},
    resources={"gpu": 1} if torch.cuda.is_available() else {"cpu": "2"},
    workers=1,
    # one log line per request costs the event loop CPU that the model needs on a small
    # machine: VISION_ACCESS_LOG=0 turns it off
    logging={"access": {"enabled": os.environ.get("VISION_ACCESS_LOG", "1") != "0"}},
)
@bentoml.asgi_app(_ui_app(), path="/ui")
class VisionService:
    def __init__(self) -> None:
        self.ready = False
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
        self.faults = os.environ.get("VISION_FAULTS", "0") == "1"
        self._fault: str | None = None
        # every torch op of this process (loading, warm-up, forward, post-processing) runs on
        # this one thread, shared by both tasks, so the process has a single OpenMP team
        self.infer_pool = inference_thread()
        self.decode_pool = ThreadPoolExecutor(1, thread_name_prefix="vision-decode")
        self.threads = self.infer_pool.submit(self._set_threads).result()
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
                self._observer(task),
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
        DRAIN.install()
        IDLE.start()

    @staticmethod
    def _set_threads() -> int:
        threads = os.environ.get("VISION_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        return torch.get_num_threads()

    def __is_alive__(self) -> bool:
        """False while the inference thread is gone or a forward pass is stuck (longer than
        ``VISION_STUCK_S``); true again once it finishes."""
        pool_ok = not self.infer_pool._shutdown and not getattr(self.infer_pool, "_broken", False)
        return pool_ok and not any(b.stuck(self.stuck_s) for b in self.batchers.values())

    def __is_ready__(self) -> bool:
        return self.ready and not DRAIN.draining and self.__is_alive__()

    def _forward(self, pred: Predictor):
        def forward(arrays: list[np.ndarray]) -> list:
            fault, self._fault = self._fault, None
            if fault == "raise":
                raise RuntimeError("injected fault: the forward pass raised")
            if fault and fault.startswith("stall="):
                time.sleep(float(fault.split("=", 1)[1]))
            return pred.forward(arrays)

        return forward

    @staticmethod
    def _observer(task: str):
        def observe(n: int, ms: float) -> None:
            BATCH.labels(task=task).observe(n)
            INFER_MS.labels(task=task).observe(ms)

        return observe

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
            "timing_ms": {
                "decode": (t1 - t0) * 1000,
                "preprocess": (t2 - t1) * 1000,
                "queue": queue_ms,
                "inference": infer_ms,
                "postprocess": post_ms,
                "total": (t4 - t0) * 1000,
            },
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

    @bentoml.api(route="/detect")
    async def detect(
        self,
        image: Path,
        score_threshold: float | str | None = None,
        max_detections: float | str | None = None,
        agnostic_nms: bool | str | None = None,
        ctx: bentoml.Context = None,
    ) -> dict:
        """Boxes in original pixels: ``{box: [x1, y1, x2, y2], score, label, class_id}``;
        ``agnostic_nms=true``: one label per object."""

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

    @bentoml.api(route="/segment")
    async def segment(
        self, image: Path, mask_format: str = "png", ctx: bentoml.Context = None
    ) -> dict:
        """Per-class pixel counts and the class-index mask as PNG (base64) or COCO RLE."""

        def params():
            if mask_format not in MASK_FORMATS:
                raise ClientError(
                    422,
                    f"'mask_format': expected one of {list(MASK_FORMATS)}, got {mask_format!r}",
                    field="mask_format",
                )
            return {}, {"mask_format": mask_format}

        return await self._run("segmentation", image, "segment", params, ctx)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """Loaded models: classes, input size, device, and their scores under the keys of
        ``eval.metrics`` (``coco/AP``, ``seg/mIoU``...): ``metrics`` from the checkpoint's last
        validation, ``report`` from the benchmark report that promoted it (store models)."""
        models = {}
        for task, pred in self.models.items():
            meta = self.model_info[task]
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
                    "name": meta.get("variant", "eager"),
                    "backend": VARIANT_KINDS[meta.get("variant", "eager")][0],
                    "precision": "float16"
                    if pred.half
                    else VARIANT_KINDS[meta.get("variant", "eager")][1],
                    "metric": meta.get("variant_metric", meta.get("primary")),
                    "p50_ms": meta.get("variant_p50_ms"),
                    "rule": meta.get("variant_rule"),
                },
            }
        return json.loads(
            json.dumps(
                {
                    "models": models,
                    "device": self.device,
                    "threads": self.threads,
                    "half_precision": self.half,
                    "limits": self.limits.__dict__,
                },
                default=str,
            )
        )


CORS_ENV = "VISION_CORS_ORIGINS"  # comma-separated origins allowed to call from a browser
if os.environ.get(CORS_ENV):  # off unless asked for; outermost, so it answers preflights
    from starlette.middleware.cors import CORSMiddleware

    VisionService.add_asgi_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in os.environ[CORS_ENV].split(",") if o.strip()],
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "x-api-key", "content-type"],
        expose_headers=["retry-after", "www-authenticate"],
    )
# the image limit plus room for the multipart framing and the other fields
KEYS, LIMITER = access_from_env()  # a malformed keys file or rate stops the start here
VisionService.add_asgi_middleware(
    RequestGuard,
    max_bytes=Limits.from_env().max_bytes + 65536,
    max_pending=int(os.environ.get("VISION_MAX_PENDING", "64")),
    drain=DRAIN,
    idle=IDLE,
    keys=KEYS,
    limiter=LIMITER,
)
