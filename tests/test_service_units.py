"""The service object in process, on untrained checkpoints built in a second: every answer's
fields, the parameters' defaults and limits, the errors (bad image, no model, a failing
forward pass), the settings read from the environment, /info, the health checks, the counters
and the web page's routes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vision.models import build_model

IMG_W, IMG_H = 80, 60


class _Drain:
    """Stands in for service.drain.Drain: the flag the core reads, and its installation."""

    def __init__(self) -> None:
        self.draining, self.installed = False, 0

    def install(self) -> None:
        self.installed += 1


class _Idle:
    def __init__(self) -> None:
        self.started = 0

    def start(self) -> None:
        self.started += 1


def _checkpoint(path: Path, name: str) -> Path:
    torch.manual_seed(0)
    model = build_model(name, 2, class_names=["cat", "dog"], input_size=64)
    model.meta.metrics = {"coco": {"AP": 0.5, "pr_curves": [1, 2], "per_class": {"cat": 0.4}}}
    torch.save(
        {
            "model": model.state_dict(),
            "meta": model.meta.as_dict(),
            "args": {"model": name, "img_size": 64, "model_kwargs": {}},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("svc")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (IMG_H, IMG_W, 3), np.uint8)).save(d / "img.png")
    (d / "bad.jpg").write_bytes(b"not an image")
    return {
        "detection": _checkpoint(d / "det.pt", "fcos_slim"),
        "segmentation": _checkpoint(d / "seg.pt", "fcn8s_slim"),
        "img": d / "img.png",
        "bad": d / "bad.jpg",
        "home": d / "bentoml",
    }


def _service(files, mp, parts=None, **env):
    mp.setenv("BENTOML_HOME", str(files["home"]))
    mp.setenv("VISION_DETECTOR_CKPT", str(files["detection"]))
    mp.setenv("VISION_SEGMENTER_CKPT", str(files["segmentation"]))
    for k, v in env.items():
        if v is None:
            mp.delenv(k, raising=False)
        else:
            mp.setenv(k, v)
    from service.core import VisionCore

    return VisionCore(*(parts or (_Drain(), _Idle())))


@pytest.fixture(scope="module")
def svc(files):
    with pytest.MonkeyPatch.context() as mp:
        yield _service(files, mp, VISION_FAULTS="1", VISION_THREADS="1")


def _call(svc, method, path, **kw):
    resp = asyncio.run(getattr(svc, method)(image=path, **kw))
    return resp.status_code, json.loads(resp.body), resp.headers


def _count(endpoint: str, status: int) -> float:
    from service.core import REQUESTS

    return REQUESTS.labels(endpoint=endpoint, status=str(status))._value.get()


def test_detect_answer(svc, files):
    from vision.predictor import Predictor

    before = _count("detect", 200)
    status, body, _ = _call(svc, "detect", files["img"])
    assert status == 200 and _count("detect", 200) == before + 1
    assert (body["model"], body["version"], body["width"], body["height"]) == (
        "fcos_slim",
        "det.pt",
        IMG_W,
        IMG_H,
    )
    assert body["batch_size"] == 1
    t = body["timing_ms"]
    assert list(t) == ["decode", "preprocess", "queue", "inference", "postprocess", "total"]
    assert all(v >= 0 for v in t.values())
    assert t["total"] >= t["decode"] + t["preprocess"] + t["inference"]
    ref = Predictor.from_checkpoint(files["detection"])
    want = ref.render(ref([np.asarray(Image.open(files["img"]))], score_threshold=0.25)[0])
    assert body["detections"] == want["detections"]  # the default threshold: 0.25
    _, low, _ = _call(svc, "detect", files["img"], score_threshold="0.01", max_detections="3")
    assert 0 < len(low["detections"]) <= 3 and len(low["detections"]) >= len(body["detections"])
    _, many, _ = _call(svc, "detect", files["img"], score_threshold=0.01)
    wanted = ref.render(ref([np.asarray(Image.open(files["img"]))], score_threshold=0.01)[0])
    assert many["detections"] == wanted["detections"] and len(many["detections"]) <= 100
    _, agn, _ = _call(svc, "detect", files["img"], score_threshold=0.01, agnostic_nms="yes")
    agnostic = ref.render(
        ref([np.asarray(Image.open(files["img"]))], score_threshold=0.01, agnostic_nms=True)[0]
    )
    assert agn["detections"] == agnostic["detections"]


def test_detect_parameters_limits(svc, files):
    for kw, field in (
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": -0.1}, "score_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"max_detections": 1001}, "max_detections"),
        ({"max_detections": 2.5}, "max_detections"),
        ({"agnostic_nms": "maybe"}, "agnostic_nms"),
    ):
        before = _count("detect", 422)
        status, body, _ = _call(svc, "detect", files["img"], **kw)
        assert status == 422 and body["field"] == field and _count("detect", 422) == before + 1, kw
    assert _call(svc, "detect", files["img"], score_threshold=1, max_detections=1000)[0] == 200
    assert _call(svc, "detect", files["img"], score_threshold=0, max_detections=1)[0] == 200


def test_segment_answer_and_formats(svc, files):
    status, body, _ = _call(svc, "segment", files["img"])
    assert status == 200 and body["mask"]["format"] == "png" and body["model"] == "fcn8s_slim"
    assert (body["width"], body["height"], body["version"]) == (IMG_W, IMG_H, "seg.pt")
    assert sum(body["pixel_counts"].values()) == IMG_W * IMG_H
    status, rle, _ = _call(svc, "segment", files["img"], mask_format="rle")
    assert status == 200 and rle["mask"]["format"] == "rle"
    status, err, _ = _call(svc, "segment", files["img"], mask_format="svg")
    assert status == 422 and err["field"] == "mask_format"
    assert err["error"] == "'mask_format': expected one of ['png', 'rle'], got 'svg'"


def test_bad_image_and_missing_file(svc, files):
    status, body, _ = _call(svc, "detect", files["bad"])
    assert (
        status == 415 and body["field"] == "image" and body["error"].startswith("'image': expected")
    )
    status, body, _ = _call(svc, "detect", None)
    assert status == 400 and body["field"] == "image"


def test_no_model_for_the_task(svc, files):
    pred = svc.models.pop("segmentation")
    try:
        before = _count("segment", 503)
        status, body, headers = _call(svc, "segment", files["img"])
    finally:
        svc.models["segmentation"] = pred
    assert status == 503 and body == {"error": "no segmentation model is loaded on this server"}
    assert headers["retry-after"] == "1" and _count("segment", 503) == before + 1
    status, _, headers = _call(svc, "segment", files["bad"])
    assert status == 415 and "retry-after" not in headers


def test_a_failing_forward_pass_is_a_500_for_that_request(svc, files):
    svc._fault = "raise"
    status, body, _ = _call(svc, "detect", files["img"])
    assert status == 500
    assert body == {
        "error": "inference failed: RuntimeError: injected fault: the forward pass raised"
    }
    assert svc._fault is None and _call(svc, "detect", files["img"])[0] == 200
    svc._fault = "stall=0.2"
    status, body, _ = _call(svc, "detect", files["img"])
    assert status == 200 and body["timing_ms"]["inference"] >= 200
    assert svc._fault is None


def test_faults_come_from_a_header_only_when_enabled(svc, files):
    def ctx(fault):
        return SimpleNamespace(
            request=SimpleNamespace(headers={"x-vision-fault": fault}, is_disconnected=None),
            response=SimpleNamespace(status_code=None, metadata={}),
        )

    c = ctx("raise")
    resp = asyncio.run(svc.detect(image=files["img"], ctx=c))
    assert resp.status_code == 500 and c.response.status_code == 500
    svc.faults = False
    try:
        c = ctx("raise")
        assert asyncio.run(svc.detect(image=files["img"], ctx=c)).status_code == 200
        assert c.response.status_code == 200
    finally:
        svc.faults = True
    c = ctx("")
    asyncio.run(svc.detect(image=files["bad"], ctx=c))
    assert c.response.status_code == 415 and c.response.metadata == {}
    svc.models["x"] = None
    c = ctx("")
    pred = svc.models.pop("detection")
    try:
        asyncio.run(svc.detect(image=files["img"], ctx=c))
    finally:
        svc.models["detection"] = pred
        svc.models.pop("x")
    assert c.response.status_code == 503 and c.response.metadata == {"Retry-After": "1"}


def test_a_client_that_left_gets_499(svc, files):
    async def run():
        async def cancelled(*a, **k):
            raise asyncio.CancelledError

        batcher = svc.batchers["detection"]
        submit, batcher.submit = batcher.submit, cancelled
        try:
            return await svc.detect(image=files["img"])
        finally:
            batcher.submit = submit

    before = _count("detect", 499)
    resp = asyncio.run(run())
    assert resp.status_code == 499 and json.loads(resp.body) == {
        "error": "client closed the request"
    }
    assert _count("detect", 499) == before + 1


def test_settings_from_the_environment(files):
    with pytest.MonkeyPatch.context() as mp:
        s = _service(
            files,
            mp,
            VISION_MAX_BATCH="3",
            VISION_MAX_WAIT_MS="5",
            VISION_MAX_QUEUE="7",
            VISION_DEADLINE_S="9",
            VISION_STUCK_S="11",
            VISION_FAULTS=None,
            VISION_SEGMENTER_CKPT="",
            VISION_SEGMENTER_MODEL="vision-no-such-model",  # whatever store this process uses
            VISION_THREADS="2",
        )
    b = s.batchers["detection"]
    assert (b.max_batch, b.max_wait, b.max_queue, b.deadline_s) == (3, 0.005, 7, 9.0)
    assert s.stuck_s == 11.0 and s.faults is False and s._fault is None and s.threads == 2
    assert (s.drain.installed, s.idle.started) == (1, 1)  # once the models are warm
    assert set(s.models) == {"detection"} and s.ready and s.device == "cpu" and s.half is False
    assert s.model_info["detection"] == {"version": "det.pt", "variant": "eager"}
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        d = _service(
            files,
            mp,
            VISION_MAX_BATCH=None,
            VISION_MAX_WAIT_MS=None,
            VISION_MAX_QUEUE=None,
            VISION_DEADLINE_S=None,
            VISION_STUCK_S=None,
            VISION_FAULTS="yes",
            VISION_THREADS="",
        )
    b = d.batchers["segmentation"]
    assert (b.max_batch, b.max_wait, b.max_queue, b.deadline_s) == (8, 0.0, 64, 30.0)
    assert d.stuck_s == 60.0 and d.faults is False and d.threads == 1
    parts = (_Drain(), _Idle())
    nothing = (
        "no model to serve: expected vision-detector/vision-segmenter in the BentoML store (run "
        "`vision promote`) or a checkpoint in VISION_DETECTOR_CKPT / VISION_SEGMENTER_CKPT"
    )
    with pytest.MonkeyPatch.context() as mp, pytest.raises(RuntimeError) as raised:
        _service(
            files,
            mp,
            parts,
            VISION_DETECTOR_CKPT="",
            VISION_SEGMENTER_CKPT="",
            VISION_DETECTOR_MODEL="vision-no-such-model",
            VISION_SEGMENTER_MODEL="vision-no-such-model",
        )
    assert str(raised.value) == nothing
    assert (parts[0].installed, parts[1].started) == (0, 0)  # nothing to drain or trim


def test_info(svc):
    info = svc.info()
    assert (
        info["device"] == "cpu"
        and info["threads"] == svc.threads
        and info["half_precision"] is False
    )
    assert info["limits"] == json.loads(json.dumps(svc.limits.__dict__, default=str))
    det = info["models"]["detection"]
    assert (det["name"], det["version"], det["input_size"], det["classes"]) == (
        "fcos_slim",
        "det.pt",
        64,
        ["cat", "dog"],
    )
    assert det["metrics"] == {"coco": {"AP": 0.5, "per_class": {"cat": 0.4}}}  # curves left out
    assert det["report"] == dict.fromkeys(
        ["report_id", "primary_metric", "primary", "latency_ms_p50", "metrics"]
    )
    assert det["variant"] == {
        "name": "eager",
        "backend": "torch",
        "precision": "float32",
        "metric": None,
        "p50_ms": None,
        "rule": None,
    }
    seg = info["models"]["segmentation"]
    assert seg["mask_classes"] == ["background", "cat", "dog"] and "mask_classes" not in det
    svc.model_info["detection"].update(
        variant_metric="coco/AP", primary="x", variant_p50_ms=3.5, variant_rule="r", report_id="id1"
    )
    try:
        v = svc.info()["models"]["detection"]
    finally:
        for k in ("variant_metric", "primary", "variant_p50_ms", "variant_rule", "report_id"):
            svc.model_info["detection"].pop(k)
    assert (
        v["variant"]["metric"] == "coco/AP"
        and v["variant"]["p50_ms"] == 3.5
        and v["variant"]["rule"] == "r"
    )
    assert v["report"]["report_id"] == "id1" and v["report"]["primary"] == "x"
    svc.model_info["detection"]["primary"] = "coco/AP50"
    try:
        assert svc.info()["models"]["detection"]["variant"]["metric"] == "coco/AP50"
    finally:
        svc.model_info["detection"].pop("primary")
    svc.models["detection"].half = True
    try:
        assert svc.info()["models"]["detection"]["variant"]["precision"] == "float16"
    finally:
        svc.models["detection"].half = False


def test_health(svc):
    assert svc.is_alive() and svc.is_ready()
    svc.ready = False
    assert not svc.is_ready() and svc.is_alive()
    svc.ready = True
    b = svc.batchers["detection"]
    b.busy_since, stuck = 0.0, svc.stuck_s
    try:
        assert not svc.is_alive() and not svc.is_ready()
        svc.stuck_s = 1e12
        assert svc.is_alive()
    finally:
        b.busy_since, svc.stuck_s = None, stuck
    svc.drain.draining = True
    try:
        assert svc.is_alive() and not svc.is_ready()
    finally:
        svc.drain.draining = False
    svc.infer_pool._broken = True
    try:
        assert not svc.is_alive()
    finally:
        svc.infer_pool._broken = False
    assert svc.is_ready()


def test_batch_observer_counts(svc):
    from service.core import BATCH, INFER_MS, _observer

    def total(h):
        return sum(
            s.value
            for m in h.collect()
            for s in m.samples
            if s.name.endswith("_count") and s.labels["task"] == "t"
        )

    b0, i0 = total(BATCH), total(INFER_MS)
    _observer("t")(3, 12.5)
    assert total(BATCH) == b0 + 1 and total(INFER_MS) == i0 + 1
    sums = {
        s.name: s.value for m in BATCH.collect() for s in m.samples if s.labels.get("task") == "t"
    }
    assert sums["vision_batch_size_sum"] >= 3
