"""The service without HTTP: upload validation, the batcher, and every endpoint and error."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from service.batching import Batcher
from service.uploads import ClientError, Limits, image_error, parse_bool, parse_number
from vision.data.io import ImageError, decode_image


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_upload_errors(shapes_dir):
    jpg = (shapes_dir / "VOC/JPEGImages/000001.jpg").read_bytes()
    lim = Limits(max_bytes=len(jpg) * 4, max_pixels=1_000_000)
    assert decode_image(jpg, lim).shape[2] == 3
    cases = [
        (b"", 400, "empty"),
        (b"hello, world\n", 415, "expected image/jpeg"),
        (b"GIF89a" + b"\0" * 20, 415, "GIF"),
        (jpg[: len(jpg) // 2], 400, "truncated"),
        (jpg * 5, 413, "bytes"),
        (_png(2000, 1000), 413, "pixels"),
    ]
    for data, status, words in cases:
        with pytest.raises(ImageError) as e:
            decode_image(data, lim)
        err = image_error(e.value)
        assert err.status == status and words in err.detail["error"], err.detail


@pytest.mark.parametrize(
    "word,want",
    [(w, True) for w in ("true", "TRUE", " 1 ", "yes", "Yes", "on", "ON", True)]
    + [(w, False) for w in ("false", "False", "0", "no", "NO", "off", "Off", False)],
)
def test_parse_bool(word, want):
    assert parse_bool(word, "f", not want) is want
    assert parse_bool(None, "f", True) is True and parse_bool("", "f", False) is False


def test_parse_bool_refuses_other_words():
    with pytest.raises(ClientError) as e:
        parse_bool("maybe", "agnostic_nms", False)
    assert e.value.status == 422
    assert e.value.detail == {
        "error": "'agnostic_nms': expected true or false (or 1/0, yes/no, on/off), got 'maybe'",
        "field": "agnostic_nms",
    }


def test_parse_number():
    assert parse_number("0.3", "t", 0, 1, 0.5) == 0.3 and parse_number(None, "t", 0, 1, 0.5) == 0.5
    assert parse_number("", "t", 0, 1, 0.5) == 0.5
    assert parse_number("0", "t", 0, 1, 0.5) == 0 and parse_number("1", "t", 0, 1, 0.5) == 1
    n = parse_number("7", "m", 1, 1000, 100, integer=True)
    assert n == 7 and isinstance(n, int)
    assert isinstance(parse_number("0.5", "t", 0, 1, 0.5), float)
    for bad in ("x", "2", "-1"):
        with pytest.raises(ClientError) as e:
            parse_number(bad, "t", 0, 1, 0.5)
        assert e.value.status == 422 and "'t'" in e.value.detail["error"]
    cases = {
        ("inf", False): "'t': expected a number in [0, 1], got 'inf'",
        ("2.5", True): "'t': expected an integer in [0, 1], got '2.5'",
        ("9", True): "'t': expected an integer in [0, 1], got 9",
        ("x" * 50, False): f"'t': expected a number in [0, 1], got {'x' * 40!r}",
        ("1.5", False): "'t': expected a number in [0, 1], got 1.5",
    }
    for (value, integer), message in cases.items():
        with pytest.raises(ClientError) as e:
            parse_number(value, "t", 0, 1, 0.5, integer=integer)
        assert e.value.detail == {"error": message, "field": "t"}, value


def test_image_errors_keep_the_decoder_detail_and_status():
    for reason, status in [("empty", 400), ("too_large", 413), ("unsupported", 415),
                           ("unusable", 422), ("something new", 400)]:  # fmt: skip
        err = image_error(ImageError(reason, "upload", "an image", "nothing", pixels=5), "photo")
        assert err.status == status
        assert err.detail == {"error": "'photo': expected an image, got nothing", "field": "photo",
                              "pixels": 5}  # fmt: skip
    assert image_error(ImageError("empty", "upload", "a", "b")).detail["field"] == "image"


def test_batcher_groups_concurrent_requests_and_refuses_when_full():
    sizes = []

    def slow(x):
        time.sleep(0.05)
        return [x[i].sum() for i in range(len(x))]

    async def main():
        b = Batcher(slow, max_batch=8, max_queue=16, on_batch=lambda n, ms: sizes.append(n))
        await b.submit(torch.zeros(1, 2, 2))  # alone: runs at once as a batch of one
        res = await asyncio.gather(*[b.submit(torch.full((1, 2, 2), float(i))) for i in range(9)])
        assert [float(r[0]) for r in res] == [4.0 * i for i in range(9)]  # each gets its own
        full = Batcher(slow, max_batch=1, max_queue=2)
        out = await asyncio.gather(
            *[full.submit(torch.zeros(1, 2, 2)) for _ in range(6)], return_exceptions=True
        )
        return out

    out = asyncio.run(main())
    assert sizes[:3] == [1, 8, 1]  # a lone request alone; 9 waiting ones as 8 + 1
    refused = [o for o in out if isinstance(o, ClientError)]
    assert refused and all(o.status == 503 and "busy" in o.detail["error"] for o in refused)


def test_batcher_failures_wait_and_deadlines():
    """A raising forward pass fails every request of its batch (and the next batch works);
    a failing post-processing fails only its request; max_wait_ms gathers requests that
    arrive a little later; a request past its deadline is answered 503 and not inferred."""
    seen: list[list] = []

    def infer(xs):
        seen.append(list(xs))
        if "boom" in xs:
            raise RuntimeError("forward failed")
        return [f"out:{x}" for x in xs]

    def post(out):
        if out == "out:bad":
            raise ValueError("post failed")
        return out.upper()

    async def main():
        b = Batcher(infer, max_batch=8, max_queue=16)
        await b.submit("warm")
        res = await asyncio.gather(
            *[b.submit(x, post) for x in ("a", "boom", "c")], return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in res), res  # the whole batch failed
        res = await asyncio.gather(
            *[b.submit(x, post) for x in ("a", "bad", "c")], return_exceptions=True
        )
        assert [r[0] for r in (res[0], res[2])] == ["OUT:A", "OUT:C"]
        assert isinstance(res[1], ValueError)
        waiting = Batcher(infer, max_batch=8, max_wait_ms=300)

        async def later(x, delay):
            await asyncio.sleep(delay)
            return await waiting.submit(x)

        got = await asyncio.gather(later("p", 0), later("q", 0.05), later("r", 0.1))
        assert [g[1] for g in got] == [3, 3, 3]  # one batch of three
        slow = Batcher(lambda xs: (time.sleep(0.3), list(xs))[1], max_batch=1, deadline_s=0.1)
        res = await asyncio.gather(*[slow.submit(x) for x in "uvw"], return_exceptions=True)
        late = [r for r in res if isinstance(r, ClientError)]
        assert late and all(e.status == 503 and "deadline" in e.detail["error"] for e in late)
        assert slow.dropped["deadline"] == len(late)

        async def gone():
            return True

        with pytest.raises(asyncio.CancelledError):
            await waiting.submit("left", gone=gone)
        assert waiting.dropped["client_gone"] == 1

    asyncio.run(main())
    assert ["a", "boom", "c"] in seen and "left" not in [x for s in seen for x in s]


@pytest.fixture(scope="module")
def svc(tiny_checkpoints):
    import os

    os.environ["VISION_DETECTOR_CKPT"] = str(tiny_checkpoints["detection"])
    os.environ["VISION_SEGMENTER_CKPT"] = str(tiny_checkpoints["segmentation"])
    os.environ["VISION_MAX_PIXELS"] = "4000000"
    from service.service import VisionService

    return VisionService()


def _call(svc, method, path, **kw):
    resp = asyncio.run(getattr(svc, method)(image=path, **kw))
    return resp.status_code, json.loads(resp.body)


def test_endpoints_and_errors_in_process(svc, shapes_dir, tmp_path, tiny_checkpoints):
    from vision.predictor import Predictor

    img = shapes_dir / "VOC/JPEGImages/000050.jpg"
    status, body = _call(svc, "detect", img, score_threshold=0.05)
    assert status == 200 and body["model"] == "fcos_r18"
    body_det = body
    ref = Predictor.from_checkpoint(tiny_checkpoints["detection"])(
        [np.asarray(Image.open(img).convert("RGB"))], score_threshold=0.05
    )[0]
    assert len(body["detections"]) == len(ref["boxes"])
    if len(ref["boxes"]):
        np.testing.assert_allclose([d["box"] for d in body["detections"]], ref["boxes"], atol=2e-3)
    assert set(body["timing_ms"]) >= {"decode", "preprocess", "inference", "postprocess"}
    status, body = _call(svc, "segment", img)
    assert status == 200 and body["mask"]["format"] == "png"
    assert sum(body["pixel_counts"].values()) == body["width"] * body["height"]
    status, body = _call(svc, "segment", img, mask_format="rle")
    assert status == 200 and body["mask"]["format"] == "rle"
    bad = {
        "empty.jpg": (b"", 400),
        "notes.txt": (b"not an image", 415),
        "half.jpg": (img.read_bytes()[:500], 400),
        "huge.png": (_png(3000, 3000), 413),
    }
    for name, (data, want) in bad.items():
        (tmp_path / name).write_bytes(data)
        assert _call(svc, "detect", tmp_path / name)[0] == want, name
    assert _call(svc, "detect", img, score_threshold="high")[0] == 422
    assert _call(svc, "detect", img, agnostic_nms="sometimes")[0] == 422
    status, one = _call(svc, "detect", img, score_threshold=0.05, agnostic_nms="true")
    assert status == 200 and len(one["detections"]) <= len(body_det["detections"])
    assert _call(svc, "segment", img, mask_format="svg")[0] == 422
    info = svc.info()
    assert set(info["models"]) == {"detection", "segmentation"} and info["device"] == "cpu"
    seg = info["models"]["segmentation"]  # shapes: index 0 is background, VOC colours
    assert seg["mask_classes"] == ["background", *seg["classes"]] == body["classes"]
    assert seg["colors"][:2] == [[0, 0, 0], [128, 0, 0]]
    assert "mask_classes" not in info["models"]["detection"]


def test_service_options_take_effect(svc, shapes_dir):
    """agnostic_nms and max_detections change the answer, on outputs where they must: the
    detector's backend is set to answer one object as two classes, plus a separate box."""
    pred = svc.models["detection"]
    fixed = {
        "boxes": torch.tensor([[10.0, 10, 50, 50], [11, 10, 50, 51], [60, 60, 90, 90]]),
        "scores": torch.tensor([0.9, 0.6, 0.5]),
        "labels": torch.tensor([0, 1, 1]),
    }
    backend = pred.backend
    pred.backend = lambda x: [fixed] * len(x)
    try:
        img = shapes_dir / "VOC/JPEGImages/000050.jpg"
        _, per_class = _call(svc, "detect", img, score_threshold=0.1)
        _, agnostic = _call(svc, "detect", img, score_threshold=0.1, agnostic_nms="true")
        _, capped = _call(svc, "detect", img, score_threshold=0.1, max_detections=2)
    finally:
        pred.backend = backend
    assert [d["class_id"] for d in per_class["detections"]] == [0, 1, 1]
    assert [d["score"] for d in agnostic["detections"]] == pytest.approx([0.9, 0.5])
    assert [d["score"] for d in capped["detections"]] == pytest.approx([0.9, 0.6])


def test_a_task_without_a_model_answers_503(svc, shapes_dir):
    img = shapes_dir / "VOC/JPEGImages/000050.jpg"
    pred = svc.models.pop("segmentation")
    try:
        status, body = _call(svc, "segment", img)
    finally:
        svc.models["segmentation"] = pred
    assert status == 503 and "no segmentation model" in body["error"]


def test_batcher_reports_a_stuck_forward_pass_only_while_it_runs():
    async def main():
        b = Batcher(lambda xs: (time.sleep(0.4), list(xs))[1], max_batch=1)
        assert not b.stuck(0.0)  # idle: never stuck
        task = asyncio.ensure_future(b.submit("x"))
        await asyncio.sleep(0.25)
        during = (b.stuck(0.1), b.stuck(5.0))
        await task
        return during, b.stuck(0.0)

    during, after = asyncio.run(main())
    assert during == (True, False) and after is False


def test_drain_waits_for_requests_in_flight_then_hands_the_signal_over():
    import signal
    import threading

    from service.drain import Drain

    got: list[int] = []
    d = Drain(min_s=0.2, max_s=5.0, poll_s=0.01)
    d._previous = lambda sig, frame: got.append(sig)
    busy = [2]
    d.in_flight = lambda: busy[0]
    t0 = time.monotonic()
    d._on_term(signal.SIGTERM, None)
    assert d.draining and not got
    time.sleep(0.4)
    assert not got and not d.done()  # past min_s, still two in flight
    busy[0] = 0
    while not got and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert got == [signal.SIGTERM] and 0.4 <= time.monotonic() - t0 < 1.0
    d._on_term(signal.SIGTERM, None)  # handed over once only
    assert got == [signal.SIGTERM]
    capped = Drain(min_s=0.0, max_s=0.3, poll_s=0.01)
    capped.in_flight = lambda: 1  # never finishes: handed over at max_s
    capped.since = time.monotonic()
    assert not capped.done()
    time.sleep(0.35)
    assert capped.done()
    impatient = Drain(min_s=10, max_s=60)
    impatient._previous = lambda sig, frame: got.append(-sig)
    impatient._on_term(signal.SIGTERM, None)
    impatient._on_term(signal.SIGTERM, None)  # a second SIGTERM: at once
    assert got[-1] == -signal.SIGTERM
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(Drain().install()))
    worker.start()
    worker.join()
    assert outcome == [False]  # only the main thread may set signal handlers
    before = signal.getsignal(signal.SIGTERM)
    try:
        mine = Drain()
        assert mine.install() and signal.getsignal(signal.SIGTERM) == mine._on_term
        assert mine._previous == before
    finally:
        signal.signal(signal.SIGTERM, before)
