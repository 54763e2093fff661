"""The service core's wiring, in process: which thread decodes and which runs the model, the
arguments models are loaded with (an ONNX segmenter served alone), the memory threshold that
follows where torch runs, the batches observed per task, a client gone before its batch, the
parameters' defaults on a model that answers, the answer's timings and the 500's log line."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from .test_service_units import _call, _count, _service, files, svc  # noqa: F401 - fixtures


def _ctx(gone: bool = False):
    async def is_disconnected():
        return gone

    return SimpleNamespace(
        request=SimpleNamespace(headers={}, is_disconnected=is_disconnected),
        response=SimpleNamespace(status_code=None, metadata={}),
    )


def test_one_decode_thread_and_the_model_on_the_inference_thread(svc, files):  # noqa: F811
    pred = svc.models["detection"]
    seen = {"prepare": set(), "forward": set()}

    def prepare(data, limits):
        seen["prepare"].add(threading.current_thread().name)
        time.sleep(0.05)  # the requests overlap here: more decode threads would take them
        return type(pred).prepare(pred, data, limits)

    def forward(arrays):
        seen["forward"].add(threading.get_ident())
        return type(pred).forward(pred, arrays)

    pred.prepare, pred.forward = prepare, forward

    async def four():
        return await asyncio.gather(*(svc.detect(image=files["img"]) for _ in range(4)))

    try:
        answers = asyncio.run(four())
    finally:
        del pred.prepare, pred.forward
    assert [a.status_code for a in answers] == [200] * 4
    # the thread that loaded the models, not another one of the same name
    infer = svc.infer_pool.submit(threading.get_ident).result()
    assert len(seen["prepare"]) == 1 and next(iter(seen["prepare"])).startswith("vision-decode")
    assert seen["forward"] == {infer}


def test_batches_are_observed_under_their_task(svc, files):  # noqa: F811
    from service.core import BATCH

    def count(task):
        return sum(
            s.value
            for m in BATCH.collect()
            for s in m.samples
            if s.name.endswith("_count") and s.labels["task"] == task
        )

    before = count("segmentation")
    assert _call(svc, "segment", files["img"])[0] == 200
    assert count("segmentation") == before + 1


def test_a_client_gone_before_its_batch_gets_499_and_is_not_inferred(svc, files):  # noqa: F811
    batcher = svc.batchers["segmentation"]
    dropped, before = batcher.dropped["client_gone"], _count("segment", 499)
    c = _ctx(gone=True)
    resp = asyncio.run(svc.segment(image=files["img"], ctx=c))
    assert resp.status_code == 499 and c.response.status_code == 499
    assert batcher.dropped["client_gone"] == dropped + 1 and _count("segment", 499) == before + 1
    c = _ctx()
    assert asyncio.run(svc.segment(image=files["img"], ctx=c)).status_code == 200
    assert c.response.status_code == 200  # segment hands its context on


def test_defaults_on_a_detector_that_finds_things(svc, files):  # noqa: F811
    pred = svc.models["detection"]
    # 150 boxes apart from one another inside the 64-pixel input: 120 score 0.3, 30 score 0.2
    grid = [(4.0 * (i % 15), 4.0 * (i // 15)) for i in range(150)]
    boxes = torch.tensor([[x, y, x + 3, y + 3] for x, y in grid])
    scores = torch.tensor([0.3] * 120 + [0.2] * 30)
    fixed = {"boxes": boxes, "scores": scores, "labels": torch.zeros(150, dtype=torch.int64)}
    backend, pred.backend = pred.backend, lambda x: [fixed] * len(x)
    try:
        status, body, _ = _call(svc, "detect", files["img"])
        _, low, _ = _call(svc, "detect", files["img"], score_threshold=0.1, max_detections=1000)
    finally:
        pred.backend = backend
    assert status == 200 and len(body["detections"]) == 100  # score ≥ 0.25, at most 100
    assert all(d["score"] == pytest.approx(0.3) for d in body["detections"])
    assert len(low["detections"]) == 150


def test_timings_and_the_log_line_of_a_failed_pass(svc, files, caplog):  # noqa: F811
    from service.core import _timings

    t = _timings((10.0, 10.5, 10.75, 12.0), 3.0, 4.0, 5.0)
    assert t == {
        "decode": 500.0,
        "preprocess": 250.0,
        "queue": 3.0,
        "inference": 4.0,
        "postprocess": 5.0,
        "total": 2000.0,
    }
    before = _count("detect", 500)
    svc._fault = "raise"
    with caplog.at_level(logging.ERROR, logger="vision.service"):
        assert _call(svc, "detect", files["img"])[0] == 500
    assert _count("detect", 500) == before + 1
    (record,) = [r for r in caplog.records if r.name == "vision.service"]
    assert record.getMessage() == "inference failed" and record.exc_info[0] is RuntimeError


def test_info_of_a_model_without_a_variant_and_with_odd_values(svc):  # noqa: F811
    kept = dict(svc.model_info["detection"])
    svc.model_info["detection"] = {"version": "v", "report_id": Path("r/1")}  # an old store model
    try:
        det = svc.info()["models"]["detection"]
    finally:
        svc.model_info["detection"] = kept
    assert det["variant"]["name"] == "eager" and det["variant"]["backend"] == "torch"
    assert det["report"]["report_id"] == "r/1"  # anything JSON cannot hold: as text
    svc.model_info["detection"] = {"version": "v", "variant": "int8"}
    try:
        variant = svc.info()["models"]["detection"]["variant"]
    finally:
        svc.model_info["detection"] = kept
    assert (variant["name"], variant["backend"], variant["precision"]) == (
        "int8",
        "onnxruntime",
        "int8",
    )


@pytest.fixture(scope="module")
def onnx_segmenter(files, tmp_path_factory):  # noqa: F811
    from vision.deploy import export_onnx
    from vision.predictor import Predictor

    path = tmp_path_factory.mktemp("onnx") / "seg.onnx"
    return export_onnx(Predictor.from_checkpoint(files["segmentation"]).model, path)


def test_loading_arguments_and_the_memory_threshold(files, onnx_segmenter, monkeypatch):  # noqa: F811
    import service.core as core
    from service.memory import mmap_threshold_kib

    loads, pinned = [], []
    real = core.variant_predictor

    def variant_predictor(*args, **kw):
        loads.append((Path(args[0]).name, *args[1:], kw))
        return real(*args, **kw)

    monkeypatch.setattr(core, "variant_predictor", variant_predictor)
    monkeypatch.setattr(core, "pin_mmap_threshold", pinned.append)
    with pytest.MonkeyPatch.context() as mp:
        eager = _service(files, mp, VISION_HALF="1", VISION_DETECTOR_VARIANT="eager:x.onnx")
    # torch runs a model on the CPU: glibc's own threshold (0); float16 is for CUDA only
    assert pinned == [mmap_threshold_kib({}, True)] == [0] and eager.half is False
    assert loads == [
        ("det.pt", "eager", "x.onnx", {"device": "cpu", "half": False}),
        ("seg.pt", "eager", None, {"device": "cpu", "half": False}),
    ]
    loads.clear()
    with pytest.MonkeyPatch.context() as mp:
        alone = _service(
            files,
            mp,
            VISION_DETECTOR_CKPT="",
            VISION_DETECTOR_MODEL="vision-no-such-model",
            VISION_SEGMENTER_VARIANT=f"onnx:{onnx_segmenter}",
        )
    # the detector missing, the segmenter still loaded; ONNX Runtime keeps its own buffers
    assert set(alone.models) == {"segmentation"} and alone.models["segmentation"].runtime_backend
    assert loads == [("seg.pt", "onnx", str(onnx_segmenter), {"device": "cpu", "half": False})]
    assert pinned[-1] == 128 and alone.model_info["segmentation"]["variant"] == "onnx"
    status, body, _ = _call(alone, "segment", files["img"])
    assert status == 200 and json.dumps(body)
