"""The REST inference service: ``bentoml serve service.service:VisionService``.

Models come from the BentoML store (``vision-detector:latest``, ``vision-segmenter:latest``,
put there by ``vision promote``) or from checkpoint paths in ``VISION_DETECTOR_CKPT`` /
``VISION_SEGMENTER_CKPT``. They are loaded once per worker and warmed up before ``/readyz``
says ready. On CUDA they run in float32 unless ``VISION_HALF=1`` (on an H100 float16 was no
faster for the default models: ``bench/records/h100_2026-11-22/gpu_check.json``).
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import torch

from service.access import from_env as access_from_env
from service.core import VisionCore
from service.drain import Drain
from service.guard import RequestGuard
from service.memory import IdleTrim
from service.timeout import install as install_request_timeout
from service.ui import ui_app
from service.uploads import Limits

# SIGTERM → 503s for new requests while those in flight finish (installed by the service
# instance, which BentoML creates on the worker's main thread after uvicorn set its handlers)
DRAIN = Drain.from_env()
# once idle (VISION_TRIM_IDLE_S, default 2 s), freed memory goes back to the OS: the RSS
# high-water mark of a load peak does not stay (service/memory.py)
IDLE = IdleTrim.from_env()
# traffic.timeout through service/timeout.py: BentoML's own middleware keeps every request's
# context (and its tracing span) alive for the whole timeout after the answer
install_request_timeout()


@bentoml.service(
    name="vision",
    traffic={"timeout": 120, "max_concurrency": 512},
    resources={"gpu": 1} if torch.cuda.is_available() else {"cpu": "2"},
    workers=1,
    # one log line per request costs the event loop CPU that the model needs on a small
    # machine: VISION_ACCESS_LOG=0 turns it off
    logging={"access": {"enabled": os.environ.get("VISION_ACCESS_LOG", "1") != "0"}},
)
@bentoml.asgi_app(ui_app(), path="/ui")
class VisionService:
    """BentoML's side: routes, health checks and middleware; the work is
    :class:`service.core.VisionCore`'s."""

    def __init__(self) -> None:
        self.core = VisionCore(DRAIN, IDLE)

    def __is_alive__(self) -> bool:
        return self.core.is_alive()

    def __is_ready__(self) -> bool:
        return self.core.is_ready()

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
        return await self.core.detect(image, score_threshold, max_detections, agnostic_nms, ctx)

    @bentoml.api(route="/segment")
    async def segment(
        self, image: Path, mask_format: str = "png", ctx: bentoml.Context = None
    ) -> dict:
        """Per-class pixel counts and the class-index mask as PNG (base64) or COCO RLE."""
        return await self.core.segment(image, mask_format, ctx)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """Loaded models: classes, input size, device, and their scores under the keys of
        ``eval.metrics`` (``coco/AP``, ``seg/mIoU``...): ``metrics`` from the checkpoint's last
        validation, ``report`` from the benchmark report that promoted it (store models)."""
        return self.core.info()


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
