"""What a runtime backend (ONNX Runtime, OpenVINO) changes around the network: the NumPy input
tensor, torch kept on one thread around the runtime, FCOS decoding on all levels at once, and
NNCF's int8 quantization for OpenVINO with the output layers left in float32."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch

from vision.deploy import DetectorDecoder, DetectorNetwork, export_onnx, variant_predictor
from vision.deploy_openvino import output_layers, quantize_openvino_int8, single_images
from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.models.common import Unsupported
from vision.predictor import Predictor, quiet_torch

SIZE = 72


@pytest.fixture(scope="module")
def fcos():
    torch.manual_seed(0)
    return build_model("fcos_slim", 3, input_size=SIZE, score_thresh=0.0).eval()


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    seg = build_model("fcn8s_slim", 3, input_size=64).eval()
    path = tmp_path_factory.mktemp("ck") / "seg.pt"
    save_checkpoint({"model": seg.state_dict(), "meta": seg.meta.as_dict()}, path)
    return path


@pytest.mark.parametrize(("topk", "threshold"), [(1000, None), (9, None), (1, None), (1000, 1.0)])
def test_fcos_decoding_all_levels_at_once_equals_torchvision_bit_for_bit(fcos, topk, threshold):
    decode = DetectorDecoder(fcos, SIZE)
    torch.manual_seed(1)
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        head = list(DetectorNetwork(fcos).eval()(x))
    # high scores, and equal scores across and within levels (the order into NMS decides
    # which of them stays)
    head[0][:, ::3] = 1.0
    head[0][:, ::5] = -2.0
    head[2][:, ::7] = -1.0
    # a score that several locations share, taken from the scores as computed, as the
    # threshold: kept above it, not at it, as torchvision keeps
    scores = torch.cat(
        [
            torch.sqrt(torch.sigmoid(c) * torch.sigmoid(t)).flatten()
            for c, t in zip(
                head[0][0].split(decode.per_level), head[2][0].split(decode.per_level), strict=True
            )
        ]
    )
    values, counts = scores.unique(return_counts=True)
    tied = float(values[counts > 1].median())
    assert int((scores == tied).sum()) > 1 and bool((scores > tied).any())
    old = fcos.net.topk_candidates, fcos.net.score_thresh
    fcos.net.topk_candidates, fcos.net.score_thresh = topk, tied if threshold is None else threshold
    try:
        got = decode(head)
        with torch.inference_mode():
            sizes = [(SIZE, SIZE)] * 3
            want = decode._torchvision(dict(zip(decode.keys, head, strict=True)), 3, sizes)
    finally:
        fcos.net.topk_candidates, fcos.net.score_thresh = old
    assert len(got) == 3
    for a, b in zip(got, want, strict=True):
        if threshold == 1.0:  # no score above it: no detection, no error
            assert len(a["boxes"]) == 0 and a["boxes"].shape == (0, 4)
        else:
            assert 0 < len(a["boxes"]) <= fcos.net.detections_per_img
            assert float(a["scores"].min()) > tied
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(a[k], b[k]), k
    if topk == 1:  # one candidate per level at most
        assert all(len(d["boxes"]) <= len(decode.per_level) for d in got)


def test_runtime_backend_gets_the_same_float_input_from_numpy(seg_checkpoint):
    eager = variant_predictor(seg_checkpoint)
    seen = {}

    def backend(x):
        seen["x"], seen["threads"] = x, torch.get_num_threads()
        return torch.zeros(len(x), 4, 64, 64)

    runtime = Predictor(eager.model, "cpu", backend=backend)
    assert runtime.runtime_backend and not eager.runtime_backend
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 7 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    x_eager, _ = eager.preprocess(images)
    x_np, info = runtime.preprocess(images)
    assert x_np.dtype == torch.float32 and x_np.is_contiguous()
    assert torch.equal(x_np, x_eager)
    before = torch.get_num_threads()
    runtime.postprocess(runtime.infer(x_np), info)
    assert seen["threads"] == 1 and torch.get_num_threads() == before
    assert torch.equal(seen["x"], x_eager)


def test_quiet_torch_restores_the_thread_count_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), quiet_torch():
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_output_layers_are_the_weighted_layers_nearest_each_output(fcos, tmp_path):
    path = export_onnx(fcos, tmp_path / "det.onnx")
    names = output_layers(onnx.load(str(path)))
    levels = len(DetectorDecoder(fcos, SIZE).per_level)
    # the three prediction convolutions of the shared head, once per pyramid level
    assert len(names) == 3 * levels
    for head in ("cls_logits", "bbox_reg", "bbox_ctrness"):
        assert sum(f"/{head}" in n for n in names) == levels, (head, names)


def test_openvino_int8_is_quantized_by_nncf_with_float_output_layers(seg_checkpoint, tmp_path):
    eager = variant_predictor(seg_checkpoint)
    path = export_onnx(eager.model, tmp_path / "m.onnx")
    last = output_layers(onnx.load(str(path)))
    assert last == ["/up_final/conv/ConvTranspose"]
    rng = np.random.default_rng(0)
    calib = [rng.random((4, 3, 64, 64), dtype=np.float32) for _ in range(2)]
    out = quantize_openvino_int8(path, tmp_path / "m.openvino_int8.onnx", calib)
    graph = onnx.load(str(out)).graph
    producer = {o: n for n in graph.node for o in n.output}
    dequantized = {n.name for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.name: n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")}
    weight_of = {k: producer.get(n.input[1]) for k, n in convs.items()}
    float_layers = sorted(k for k, p in weight_of.items() if p is None or p.name not in dequantized)
    assert float_layers == last  # every other convolution runs on int8 weights
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = eager.infer(x)
    got = variant_predictor(seg_checkpoint, "openvino_int8", out).infer(x)
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) > 0.9


def test_calibration_batches_become_float32_single_images():
    rng = np.random.default_rng(0)
    batches = [rng.random((3, 3, 8, 8)), rng.random((1, 3, 8, 8))]  # float64 in
    images = single_images(batches)
    assert len(images) == 4 and all(x.shape == (1, 3, 8, 8) for x in images)
    assert all(x.dtype == np.float32 for x in images)
    np.testing.assert_array_equal(images[2][0], batches[0][2].astype(np.float32))
    np.testing.assert_array_equal(images[3][0], batches[1][0].astype(np.float32))


def test_quantizing_prints_nothing(seg_checkpoint, tmp_path, capfd):
    import logging

    path = export_onnx(variant_predictor(seg_checkpoint).model, tmp_path / "m.onnx")
    capfd.readouterr()
    calib = [np.random.default_rng(0).random((2, 3, 64, 64))]  # float64: converted
    quantize_openvino_int8(path, tmp_path / "q.onnx", calib)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert logging.getLogger("nncf").level == logging.WARNING


def test_openvino_cache_defaults_to_the_weights_folder(monkeypatch, tmp_path):
    from vision.runtime_predictor import cache_dir

    monkeypatch.delenv("VISION_OPENVINO_CACHE", raising=False)
    monkeypatch.setenv("VISION_WEIGHTS", str(tmp_path))
    assert cache_dir() == str(tmp_path / "openvino")
    monkeypatch.setenv("VISION_OPENVINO_CACHE", "")
    assert cache_dir() == ""


def test_openvino_detector_decodes_at_its_input_size(fcos, tmp_path):
    from vision.deploy_openvino import OvBackend

    path = export_onnx(fcos, tmp_path / "det.onnx")
    backend = OvBackend(path, fcos, threads=1)
    assert backend.decoder.size == SIZE
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        want = fcos(x)[0]
    got = backend(x)[0]
    assert len(got["boxes"]) == len(want["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-2, rtol=1e-3)


def test_nncf_missing_is_a_clear_unsupported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(Unsupported, match=r"quantized by NNCF.*pip install 'nncf>=2.14'"):
        quantize_openvino_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", [])


def test_runtime_backend_answers_with_the_caller_s_options(fcos):
    eager = Predictor(fcos)
    runtime = Predictor(fcos, backend=lambda x: fcos(x))  # a non-torch backend's path
    assert runtime.runtime_backend
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        raw = fcos(x)[0]
    info = {"orig_size": (SIZE, SIZE), "scale": 1.0}
    every = runtime.finish(raw, info)
    few = runtime.finish(raw, info, max_detections=3)
    agnostic = runtime.finish(raw, info, agnostic_nms=True)
    assert len(few["boxes"]) == 3 < len(every["boxes"])
    assert len(agnostic["boxes"]) < len(every["boxes"])  # overlaps across classes dropped
    for opts, got in (({"max_detections": 3}, few), ({"agnostic_nms": True}, agnostic)):
        want = eager.finish(raw, info, **opts)
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(got[k], want[k]), (opts, k)
