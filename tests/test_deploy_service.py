"""The service serves the deployable variant promotion chose: a real `bentoml serve` started on
promoted int8 (detector) and ONNX float32 (segmenter) variants answers like in-process
inference of the same variants, and says which variant it runs."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from vision.deploy import export_onnx, quantize_int8, variant_predictor
from vision.predictor import Predictor

from .conftest import serving

STORE = """
import json, sys
from service.promote import store
for task, ckpt, variant, file in json.loads(sys.argv[1]):
    row = {"variant": variant, "status": "ok", "metric": 0.5, "p50_ms": 1.0, "file": file,
           "chosen": True}
    table = {"rows": [row], "rule": "test"}
    record = {"model": "m", "dataset": "shapes", "primary_metric": "x", "primary": 0.5,
              "latency_ms_p50": 1.0, "metrics": {}, "report_id": "test", "rule": "test"}
    print(store(task, ckpt, record, table, log=lambda *a: None))
"""


@pytest.fixture(scope="module")
def promoted(tiny_checkpoints, shapes_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_variants")
    work = tmp_path_factory.mktemp("variants")
    det, seg = tiny_checkpoints["detection"], tiny_checkpoints["segmentation"]
    calib = [
        Predictor.from_checkpoint(det)
        .preprocess([np.asarray(Image.open(p).convert("RGB"))])[0]
        .numpy()
        for p in sorted((shapes_dir / "VOC/JPEGImages").glob("*.jpg"))[:4]
    ]
    det_onnx = export_onnx(Predictor.from_checkpoint(det).model, work / "det.onnx")
    det_int8 = quantize_int8(det_onnx, work / "det.int8.onnx", calib)
    seg_onnx = export_onnx(Predictor.from_checkpoint(seg).model, work / "seg.onnx")
    plan = [
        ["detection", str(det), "int8", str(det_int8)],
        ["segmentation", str(seg), "openvino", str(seg_onnx)],  # OpenVINO inside BentoML
    ]
    env = {"BENTOML_HOME": str(home), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", STORE, json.dumps(plan)], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    refs = {
        "detection": variant_predictor(det, "int8", det_int8),
        "segmentation": variant_predictor(seg, "openvino", seg_onnx),
    }
    with serving(home, {"VISION_THREADS": "1", "VISION_ACCESS_LOG": "0"}) as (url, _):
        yield url, refs


def test_served_variants_match_in_process_inference(promoted, shapes_dir):
    url, refs = promoted
    info = httpx.post(url + "/info").json()["models"]
    assert info["detection"]["variant"]["name"] == "int8"
    assert info["detection"]["variant"]["backend"] == "onnxruntime"
    assert info["detection"]["variant"]["precision"] == "int8"
    assert info["segmentation"]["variant"]["name"] == "openvino"
    assert info["segmentation"]["variant"]["backend"] == "openvino"
    for p in sorted((shapes_dir / "VOC/JPEGImages").glob("*.jpg"))[-3:]:
        img = np.asarray(Image.open(p).convert("RGB"))
        r = httpx.post(url + "/detect", files={"image": (p.name, p.read_bytes())},
                       data={"score_threshold": "0.05"})  # fmt: skip
        assert r.status_code == 200, r.text
        ref = refs["detection"]([img], score_threshold=0.05)[0]
        served = r.json()["detections"]
        assert len(served) == len(ref["boxes"]) > 0
        np.testing.assert_allclose([d["box"] for d in served], ref["boxes"], atol=2e-3)
        assert [d["class_id"] for d in served] == ref["labels"].tolist()
        r = httpx.post(url + "/segment", files={"image": (p.name, p.read_bytes())})
        assert r.status_code == 200, r.text
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["mask"]["data"]))))
        assert (mask == refs["segmentation"]([img])[0]["mask"].numpy()).mean() > 0.9999
