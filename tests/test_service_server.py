"""One real `bentoml serve` on 127.0.0.1: load with malformed traffic, health, metrics, and the
web page in a real headless Chromium."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from vision.predictor import Predictor

from .conftest import chromium_page, serving

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


def test_web_page_in_headless_chromium(server, shapes_dir, tmp_path):
    """The page as a user meets it: the model card, sample images, an upload drawn as boxes
    (canvas pixels on a returned box take its class colour), one table row per detection,
    a class toggled off taking its boxes and rows away, and a text file's upload showing the
    API's own error message."""
    img = shapes_dir / "VOC/JPEGImages/000052.jpg"
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n" * 10)
    api_error = httpx.post(server + "/detect", files={"image": ("notes.txt", notes.read_bytes())})
    assert api_error.status_code == 415
    with chromium_page() as page:
        page.goto(server + "/ui/")
        page.wait_for_function("document.querySelector('#models dl') !== null")
        card = page.text_content("#models")
        assert "fcos_r18" in card and "fcn8s_slim" in card and "circle" in card
        page.wait_for_function("document.querySelectorAll('#samples img').length === 3")
        assert page.eval_on_selector_all(
            "#samples img", "els => els.every(e => e.complete && e.naturalWidth > 0)"
        )
        page.fill("#thr", "0.05")  # every returned detection shown
        with page.expect_response("**/detect") as answer:
            page.set_input_files("#file", str(img))
        detections = answer.value.json()["detections"]
        assert detections, "the test needs an image with detections"
        page.wait_for_function(f"document.querySelectorAll('#detections tbody tr').length === "
                               f"{len(detections)}")  # fmt: skip
        rows = page.eval_on_selector_all(
            "#detections tbody tr", "trs => trs.map(t => t.cells[0].textContent)"
        )
        assert rows == [d["label"] for d in detections]
        first = detections[0]
        x1, y1, x2, _ = (round(v) for v in first["box"])
        probe = f"[{(x1 + x2) // 2}, {y1 + 1}]"  # on the box's top edge
        pixel = "([x, y]) => Array.from(document.querySelector('#canvas').getContext('2d')" \
                ".getImageData(x, y, 1, 1).data.slice(0, 3))"  # fmt: skip
        drawn = page.evaluate(pixel, json.loads(probe))
        color = page.evaluate(f"voc({first['class_id']} + 1)")
        assert drawn == color, (drawn, color)  # the box, in its class's colour
        page.uncheck(f"#legend input[data-class='{first['class_id']}']")
        left = [d for d in detections if d["class_id"] != first["class_id"]]
        page.wait_for_function(f"document.querySelectorAll('#detections tbody tr').length === "
                               f"{len(left)}")  # fmt: skip
        assert first["label"] not in page.eval_on_selector_all(
            "#detections tbody tr", "trs => trs.map(t => t.cells[0].textContent)"
        )
        assert page.evaluate(pixel, json.loads(probe)) != color  # its boxes are gone
        page.set_input_files("#file", str(notes))
        page.wait_for_function("document.querySelector('#error').textContent.length > 0")
        assert page.text_content("#error") == api_error.json()["error"]
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # the one console error is the browser's note of the 415 the test asked for
        assert [p for p in page.problems if "status of 415" not in p] == [], page.problems
