"""One real `bentoml serve` on 127.0.0.1: load with malformed traffic, health, metrics, and the
web page in a real headless Chromium."""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from vision.predictor import Predictor

from .conftest import serving

MAX_BYTES = 2_000_000


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    env = {
        "VISION_THREADS": "1",
        "VISION_DETECTOR_CKPT": str(tiny_checkpoints["detection"]),
        "VISION_SEGMENTER_CKPT": str(tiny_checkpoints["segmentation"]),
        "VISION_MAX_BYTES": str(MAX_BYTES),
        "VISION_MAX_PIXELS": "40000000",
    }
    with serving(tmp_path_factory.mktemp("bentoml"), env) as (url, _):
        yield url


def _bad_requests(jpg: bytes) -> list[tuple[str, bytes, int]]:
    huge = io.BytesIO()
    Image.new("L", (10000, 10000)).save(huge, "PNG")  # 100 megapixels, small file
    return [
        ("empty.jpg", b"", 400),
        ("cut.jpg", jpg[: len(jpg) // 3], 400),
        ("notes.txt", b"just some text\n" * 20, 415),
        ("huge.png", huge.getvalue(), 413),
        ("big.jpg", os.urandom(MAX_BYTES + 200_000), 413),
    ]


def _matches(served: list[dict], ref: dict, thr: float, cap: int = 100) -> bool:
    """Same detections up to float noise of batched vs single inference (boxes rounded to
    1e-3 px in JSON). Detections within 1e-3 of the cut may flip: the threshold, or the lowest
    score kept when the list is at the model's cap of ``cap`` detections. Each reference
    detection is paired with its own served one (same class, corners within 0.2 px, score
    within 1e-3): no sort order, which a coordinate on a rounding boundary could swap."""
    ref_scores = ref["scores"].tolist()
    cut = thr
    if len(served) >= cap or len(ref_scores) >= cap:
        cut = max(thr, min((d["score"] for d in served), default=thr), min(ref_scores, default=thr))
    a = [
        (d["class_id"], np.asarray(d["box"]), d["score"]) for d in served if d["score"] > cut + 1e-3
    ]
    b = [
        (int(lb), np.asarray(bx), s)
        for bx, s, lb in zip(ref["boxes"].tolist(), ref_scores, ref["labels"].tolist(), strict=True)
        if s > cut + 1e-3
    ]
    if len(a) != len(b):
        return False
    free = list(range(len(a)))
    for label, box, score in b:
        hit = next(
            (
                j
                for j in free
                if a[j][0] == label
                and abs(a[j][2] - score) < 1e-3
                and np.allclose(a[j][1], box, atol=0.2)
            ),
            None,
        )
        if hit is None:
            return False
        free.remove(hit)
    return True


def test_load_with_malformed_requests(server, shapes_dir, tiny_checkpoints):
    jpgs = sorted((shapes_dir / "VOC/JPEGImages").glob("*.jpg"))[:10]
    det = Predictor.from_checkpoint(tiny_checkpoints["detection"])
    seg = Predictor.from_checkpoint(tiny_checkpoints["segmentation"])
    refs = {
        p.name: (
            det([np.asarray(Image.open(p).convert("RGB"))], score_threshold=0.1)[0],
            seg([np.asarray(Image.open(p).convert("RGB"))])[0],
        )
        for p in jpgs
    }
    bad = _bad_requests(jpgs[0].read_bytes())
    jobs = []
    for i in range(200):
        if i % 5 == 4:
            jobs.append(("bad", *bad[(i // 5) % len(bad)]))
        else:
            p = jpgs[i % len(jpgs)]
            jobs.append(("detect" if i % 2 else "segment", p.name, p.read_bytes(), 200))

    def send(job):
        kind, name, data, want = job
        route = "/segment" if kind == "segment" else "/detect"
        with httpx.Client(timeout=120) as c:
            r = c.post(
                server + route,
                files={"image": (name, data)},
                data={"score_threshold": "0.1"} if route == "/detect" else {},
            )
        return job, r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, jobs))
    statuses = [s for _, s, _ in results]
    assert not [s for s in statuses if s >= 500], statuses
    for (kind, name, _, want), status, body in results:
        assert status == want, (kind, name, status, body)
        assert "error" in body if status != 200 else True
        if kind == "detect":
            assert _matches(body["detections"], refs[name][0], 0.1), (name, body)
        elif kind == "segment":
            import base64

            served = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"]))))
            assert (served == refs[name][1]["mask"].numpy()).mean() > 0.999
    assert max(b.get("batch_size", 1) for _, _, b in results) >= 1
    assert httpx.get(server + "/readyz").status_code == 200
    assert httpx.get(server + "/livez").status_code == 200
    metrics = httpx.get(server + "/metrics").text
    assert "vision_batch_size_bucket" in metrics and "vision_inference_latency_ms" in metrics
    r = httpx.post(server + "/detect", files={"image": ("a.jpg", jpgs[1].read_bytes())})
    assert r.status_code == 200


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_web_page_in_headless_chromium(server, shapes_dir, tmp_path):
    exe = _chromium()
    assert exe, "Debian's chromium is required (run.sh installs it)"
    from playwright.sync_api import sync_playwright

    img = shapes_dir / "VOC/JPEGImages/000052.jpg"
    expected = httpx.post(
        server + "/detect",
        files={"image": (img.name, img.read_bytes())},
        data={"score_threshold": "0.05", "agnostic_nms": "true"},  # the page's defaults
    ).json()["detections"]
    assert expected, "the test needs an image with detections"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.goto(server + "/ui/")
        page.set_input_files("#file", str(img))
        page.fill("#thr", "0.05")
        page.click("#run")
        page.wait_for_selector("#view[data-done='1']", timeout=60_000)
        items = page.eval_on_selector_all(
            "li.det", "els => els.map(e => [e.dataset.label, parseFloat(e.dataset.score)])"
        )
        status = page.text_content("#status")
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert status.endswith("detections by fcos_r18"), status
    assert [lb for lb, _ in items] == [d["label"] for d in expected]
    np.testing.assert_allclose([s for _, s in items], [d["score"] for d in expected], atol=2e-3)
