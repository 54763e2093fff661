"""How the vision service is started: its ``bentoml serve`` command line, the settings it reads
from the environment, and a launcher for tests and benchmarks (127.0.0.1, waits for ready)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# where each task's model comes from: the BentoML store's name (``NAME:latest``, or the tag in
# ``TAG_ENV``) unless a checkpoint path is given in ``CKPT_ENV``
STORE = {"detection": "vision-detector", "segmentation": "vision-segmenter"}
CKPT_ENV = {"detection": "VISION_DETECTOR_CKPT", "segmentation": "VISION_SEGMENTER_CKPT"}
TAG_ENV = {"detection": "VISION_DETECTOR_MODEL", "segmentation": "VISION_SEGMENTER_MODEL"}
# with a checkpoint path: a deployable variant of it (vision.deploy.VARIANT_KINDS) and, for
# onnx/int8, its ONNX file (store models carry both in their metadata)
VARIANT_ENV = {"detection": "VISION_DETECTOR_VARIANT", "segmentation": "VISION_SEGMENTER_VARIANT"}


def serve_argv(host: str, port: int | str) -> list[str]:
    """``python -m bentoml serve ...``: works however bentoml was installed (venv, --target)."""
    app = "service.service:VisionService"
    return [sys.executable, "-m", "bentoml", "serve", app, "--host", host, "--port", str(port)]


def half_precision(env: Mapping[str, str] = os.environ) -> bool:
    """float16 inference on CUDA, asked for with ``VISION_HALF=1``."""
    return env.get("VISION_HALF", "0") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    env: dict[str, str], log=subprocess.DEVNULL, timeout: float = 120.0, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """``bentoml serve service.service:VisionService`` with ``env`` added to the environment;
    returns the process and its URL once ``/readyz`` answers 200 (raises if it never does)."""
    port = port or free_port()
    proc = subprocess.Popen(
        serve_argv("127.0.0.1", port),
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode} before ready")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"bentoml serve not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """Stop a server from ``start_server`` with its workers: SIGTERM (the workers drain), then
    after ``timeout`` SIGKILL to whatever is left of the process tree. Killing only the parent
    would leave its workers running, orphaned."""
    import psutil

    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = []
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    for pid in tree[1:]:  # workers that outlived their arbiter
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    return proc.returncode
