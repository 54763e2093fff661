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
from vision.deploy_openvino import output_layers, quantize_openvino_int8
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


@pytest.mark.parametrize("topk", [1000, 9, 1])
def test_fcos_decoding_all_levels_at_once_equals_torchvision_bit_for_bit(fcos, topk):
    decode = DetectorDecoder(fcos, SIZE)
    torch.manual_seed(1)
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        head = list(DetectorNetwork(fcos).eval()(x))
    # equal scores across and within levels: the order into NMS decides which box stays
    head[0][:, ::5] = 0.25
    head[2][:, ::7] = 0.5
    old = fcos.net.topk_candidates
    fcos.net.topk_candidates = topk
    try:
        got = decode(head)
        with torch.inference_mode():
            sizes = [(SIZE, SIZE)] * 3
            want = decode._torchvision(dict(zip(decode.keys, head, strict=True)), 3, sizes)
    finally:
        fcos.net.topk_candidates = old
    assert len(got) == 3
    for a, b in zip(got, want, strict=True):
        assert 0 < len(a["boxes"]) <= fcos.net.detections_per_img
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


def test_nncf_missing_is_a_clear_unsupported(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(Unsupported, match=r"quantized by NNCF.*pip install 'nncf>=2.14'"):
        quantize_openvino_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", [])
