"""The service without HTTP: every endpoint and error, in process."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from PIL import Image

from .test_uploads import _png


@pytest.fixture(scope="module")
def svc(tiny_checkpoints):
    with pytest.MonkeyPatch.context() as mp:  # servers started by later tests inherit os.environ
        mp.setenv("VISION_DETECTOR_CKPT", str(tiny_checkpoints["detection"]))
        mp.setenv("VISION_SEGMENTER_CKPT", str(tiny_checkpoints["segmentation"]))
        mp.setenv("VISION_MAX_PIXELS", "4000000")
        from service.service import VisionService

        yield VisionService()


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
    pred = svc.core.models["detection"]
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
    pred = svc.core.models.pop("segmentation")
    try:
        status, body = _call(svc, "segment", img)
    finally:
        svc.core.models["segmentation"] = pred
    assert status == 503 and "no segmentation model" in body["error"]
