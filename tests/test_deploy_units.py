"""The deployable forms' parts one by one, on small untrained models and without a full
export sweep: the detector's exported network and torch-side decoding against the eager model,
the ONNX file's inputs and outputs, what int8 quantization writes, the calibration batches,
BatchNorm folding's pairing rules and the variant builder's answers."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from vision.deploy import (
    VARIANT_KINDS,
    DetectorDecoder,
    DetectorNetwork,
    OrtBackend,
    Unsupported,
    calibration_batches,
    export_onnx,
    fold_batchnorm,
    folded_copy,
    padded,
    quantize_int8,
    variant_predictor,
)
from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.models.detection import Detector
from vision.predictor import Predictor

SIZE = 72  # not a multiple of the detectors' 32: the exported network pads


def _detector(offset: int = 0) -> Detector:
    torch.manual_seed(0)
    m = build_model("fcos_slim", 3, input_size=SIZE, score_thresh=0.0).eval()
    return Detector(m.net, offset, m.meta) if offset else m


def _segmenter() -> nn.Module:
    torch.manual_seed(0)
    return build_model("fcn8s_slim", 3, input_size=64).eval()


def test_padded_rounds_up_to_a_multiple():
    assert [padded(s, 32) for s in (1, 32, 33, 64, 72)] == [32, 32, 64, 64, 96]


def test_detector_network_normalizes_pads_and_returns_the_heads_outputs():
    det = _detector()
    x = torch.rand(2, 3, SIZE, SIZE)
    net = DetectorNetwork(det).eval()
    assert net.keys == ("cls_logits", "bbox_regression", "bbox_ctrness")
    with torch.no_grad():
        images, _ = det.net.transform(list(x))  # the eager model's own preprocessing
        assert images.tensors.shape[-1] == padded(SIZE, 32)
        head = det.net.head(list(det.net.backbone(images.tensors).values()))
        got = net(x)
    assert len(got) == 3
    for k, y in zip(net.keys, got, strict=True):
        torch.testing.assert_close(y, head[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("h, w", [(40, 100), (64, 72)])  # both sides short; the width only
def test_detector_network_pads_each_side_to_the_multiple_on_its_own(h, w):
    det = _detector()
    x = torch.rand(1, 3, h, w)
    t = det.net.transform
    mean, std = torch.tensor(t.image_mean)[:, None, None], torch.tensor(t.image_std)[:, None, None]
    canvas = torch.zeros(1, 3, padded(h, 32), padded(w, 32))
    canvas[..., :h, :w] = (x - mean) / std
    with torch.no_grad():
        head = det.net.head(list(det.net.backbone(canvas).values()))
        got = DetectorNetwork(det).eval()(x)
    for k, y in zip(("cls_logits", "bbox_regression", "bbox_ctrness"), got, strict=True):
        torch.testing.assert_close(y, head[k], atol=1e-5, rtol=1e-5)


def test_retinanet_has_no_centerness_and_two_stage_detectors_are_refused():
    tv = build_model("retinanet_resnet50_fpn", 2, input_size=SIZE)
    assert DetectorNetwork(tv).keys == ("cls_logits", "bbox_regression")
    why = r"\(two-stage RoI heads and SSD's NMS have data-dependent shapes\)$"
    with pytest.raises(Unsupported, match="^FasterRCNN: only one-stage detectors .*" + why):
        DetectorNetwork(build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 2, input_size=SIZE))


@pytest.mark.parametrize("offset", [0, 1])
def test_decoder_answers_as_the_eager_detector_with_its_label_offset(offset):
    det = _detector(offset)
    x = torch.rand(2, 3, SIZE, SIZE)
    decode = DetectorDecoder(det, SIZE)
    with torch.no_grad():
        want = det(x)
        got = decode(DetectorNetwork(det).eval()(x))
        again = decode(DetectorNetwork(det).eval()(x[1:]))  # anchors reused at batch 1
    assert len(got) == 2
    for a, b in zip(want, got, strict=True):
        assert len(a["boxes"]) > 0
        torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(b["scores"], a["scores"], atol=1e-5, rtol=1e-5)
        assert torch.equal(b["labels"], a["labels"])
    assert torch.equal(again[0]["labels"], got[1]["labels"])
    torch.testing.assert_close(again[0]["boxes"], got[1]["boxes"], atol=1e-4, rtol=1e-5)
    low = min(int(d["labels"].min()) for d in got)  # the network's class 0 shifted down
    assert low == -offset


def _session_io(path) -> tuple[list, list]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [(i.name, i.shape) for i in s.get_inputs()], [
        (o.name, o.shape[0]) for o in s.get_outputs()
    ]


def test_export_names_the_outputs_with_a_dynamic_batch_at_the_asked_size(tmp_path):
    seg = _segmenter()
    path = export_onnx(seg, tmp_path / "two" / "deep" / "seg.onnx", size=96)
    inputs, outputs = _session_io(path)
    assert inputs == [("images", ["batch", 3, 96, 96])] and outputs == [("logits", "batch")]
    assert [(o.domain, o.version) for o in onnx.load(str(path)).opset_import] == [("", 17)]
    backend = OrtBackend(path, seg, threads=1)
    x = torch.rand(3, 3, 96, 96, dtype=torch.float64)  # cast to float32 on the way in
    with torch.no_grad():
        torch.testing.assert_close(backend(x), seg(x.float()), atol=1e-4, rtol=1e-4)
    outs = [torch.zeros(1), torch.ones(1)]
    assert backend.decoder(outs) is outs[0] and backend.path == path  # the logits as they are
    assert backend.session.session.get_session_options().intra_op_num_threads == 1
    default = OrtBackend(path, seg).session.session.get_session_options()
    assert default.intra_op_num_threads == torch.get_num_threads()
    assert default.inter_op_num_threads == 1
    for pool in ("intra", "inter"):  # no spinning against torch's threads in the same process
        assert default.get_session_config_entry(f"session.{pool}_op.allow_spinning") == "0"
    det = _detector()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        det_path = export_onnx(det, tmp_path / "det.onnx")  # padded: a constant Pad
    assert not seen, [str(w.message)[:80] for w in seen]  # the known notes are silenced
    inputs, outputs = _session_io(det_path)
    assert inputs == [("images", ["batch", 3, SIZE, SIZE])]
    assert outputs == [(k, "batch") for k in ("cls_logits", "bbox_regression", "bbox_ctrness")]
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = det(x)
    got = OrtBackend(det_path, det)(x)  # decoded with the eager model's own code
    for a, b in zip(want, got, strict=True):
        assert len(a["boxes"]) > 0 and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-3, rtol=1e-4)


def test_int8_is_qdq_with_uint8_activations_and_per_channel_int8_weights(tmp_path):
    seg = _segmenter()
    path = export_onnx(seg, tmp_path / "seg.onnx")
    root = logging.getLogger()
    before, calibration = root.level, [np.random.default_rng(0).random((2, 3, 64, 64))]
    root.setLevel(logging.WARNING)
    try:
        q = quantize_int8(path, tmp_path / "seg.int8.onnx", calibration)
        assert root.level == logging.WARNING  # the quantizer's notes silenced for its run only
    finally:
        root.setLevel(before)
    assert not (tmp_path / "seg.int8.pre.onnx").exists()
    graph = onnx.load(str(q)).graph
    inits = {t.name: t for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "QLinearConv" not in ops
    zero_type = {
        n.input[0]: inits[n.input[2]].data_type for n in graph.node if n.op_type == "QuantizeLinear"
    }
    assert zero_type and set(zero_type.values()) == {onnx.TensorProto.UINT8}

    def is_weight(name: str) -> bool:  # a convolution's int8 kernel
        t = inits.get(name)
        return t is not None and t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4

    conv_w = [n for n in graph.node if n.op_type == "DequantizeLinear" and is_weight(n.input[0])]
    assert conv_w  # the weights: int8 with one scale per output channel
    for n in conv_w:
        assert list(inits[n.input[1]].dims) == [inits[n.input[0]].dims[0]]


def test_calibration_batches_letterbox_the_first_images_in_batches():
    pred = Predictor(_segmenter())
    rng = np.random.default_rng(0)
    reader = [SimpleNamespace(image=rng.integers(0, 256, (40, 50, 3), np.uint8)) for _ in range(9)]
    assert [len(b) for b in calibration_batches(pred, reader, 9)] == [8, 1]  # batches of 8
    reader = reader[:7]
    sizes = [len(b) for b in calibration_batches(pred, reader, 20, batch=3)]
    assert sizes == [3, 3, 1]
    got = calibration_batches(pred, reader, 5, batch=4)
    assert [len(b) for b in got] == [4, 1] and got[0].dtype == np.float32
    np.testing.assert_array_equal(got[1], pred.preprocess([reader[4].image])[0].numpy())


class _Block(nn.Module):  # a ResNet block's naming: convN/bnN applied in pairs
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def _trained_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16) * 3 + 1)  # running statistics away from 0 and 1
    return model.eval()


def _relu_between() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5)
    )


@pytest.mark.parametrize(
    "make, folds",
    [
        (_relu_between, 2),
        (_Block, 2),
        (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)), 0),  # BatchNorm first
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)), 0),  # apart
    ],
    ids=["sequential", "resnet_block", "bn_first", "not_adjacent"],
)
def test_fold_batchnorm_folds_adjacent_pairs_and_keeps_outputs(make, folds):
    model = _trained_bn(make())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
        assert fold_batchnorm(model) == folds
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms - folds
    assert sum(isinstance(m, nn.Identity) for m in model.modules()) == folds


class _Unordered(nn.Module):  # declared conv then bn, but not applied as a pair
    def __init__(self, conv: str, bn: str, width: int = 4):
        super().__init__()
        setattr(self, conv, nn.Conv2d(3, 4, 3))
        setattr(self, bn, nn.BatchNorm2d(width))


@pytest.mark.parametrize(
    "conv, bn, width", [("conv1", "bn2", 4), ("proj", "norm", 4), ("conv1", "bn1", 5)]
)
def test_fold_batchnorm_leaves_pairs_it_cannot_prove_or_that_do_not_fit(conv, bn, width):
    model = _Unordered(conv, bn, width).eval()
    assert fold_batchnorm(model) == 0
    assert isinstance(getattr(model, bn), nn.BatchNorm2d)


def test_folded_copy_leaves_the_model_and_refuses_one_without_batchnorm():
    model = _trained_bn(_Block())
    folded = folded_copy(model)
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(folded.bn1, nn.Identity)
    with pytest.raises(Unsupported, match="^no Conv2d→BatchNorm2d pair to fold$"):
        folded_copy(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    seg = _segmenter()
    path = tmp_path_factory.mktemp("ck") / "seg.pt"
    save_checkpoint({"model": seg.state_dict(), "meta": seg.meta.as_dict()}, path)
    return path


def test_variant_predictor_builds_each_variant_or_says_what_it_needs(checkpoint, tmp_path):
    x = torch.rand(1, 3, 64, 64)
    eager = variant_predictor(checkpoint, channels_last=True)
    assert eager.channels_last and eager.backend is eager.model
    with torch.no_grad():
        want = eager.infer(x)
    fused = variant_predictor(checkpoint, "fused")
    assert fused.channels_last and fused.model is not eager.model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused.infer(x), want, atol=1e-4, rtol=1e-4)
    onnx_file = export_onnx(eager.model, tmp_path / "m.onnx")
    ort = variant_predictor(checkpoint, "onnx", onnx_file)
    assert isinstance(ort.backend, OrtBackend) and ort.backend.path == onnx_file
    torch.testing.assert_close(ort.infer(x), want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"variant 'int8': expected its ONNX file, got none"):
        variant_predictor(checkpoint, "int8")
    with pytest.raises(ValueError, match=r"variant: expected one of \['eager', 'fused'"):
        variant_predictor(checkpoint, "tensorrt")
    if torch.cpu._is_avx512_bf16_supported():
        bf16 = variant_predictor(checkpoint, "bf16")
        assert bf16.autocast == getattr(torch, VARIANT_KINDS["bf16"][1])
    else:
        with pytest.raises(Unsupported, match=r"^this CPU has no native bfloat16 \(AVX512-BF16\)$"):
            variant_predictor(checkpoint, "bf16")


def test_openvino_variants_compile_the_onnx_files_and_answer_as_onnx_runtime(checkpoint, tmp_path):
    from vision.deploy_openvino import OvBackend

    x = torch.rand(2, 3, 64, 64)
    eager = variant_predictor(checkpoint)
    with torch.no_grad():
        want = eager.infer(x)
    onnx_file = export_onnx(eager.model, tmp_path / "m.onnx")
    ov = variant_predictor(checkpoint, "openvino", onnx_file)
    assert isinstance(ov.backend, OvBackend) and ov.backend.path == onnx_file
    assert VARIANT_KINDS["openvino"] == ("openvino", "float32")
    torch.testing.assert_close(ov.infer(x), want, atol=1e-4, rtol=1e-4)  # float32, not bf16
    calib = [torch.rand(4, 3, 64, 64).numpy() for _ in range(2)]
    int8_file = quantize_int8(onnx_file, tmp_path / "m.int8.onnx", calib)
    ort8 = variant_predictor(checkpoint, "int8", int8_file).infer(x)
    ov8 = variant_predictor(checkpoint, "openvino_int8", int8_file).infer(x)
    assert VARIANT_KINDS["openvino_int8"] == ("openvino", "int8")
    # the same QDQ graph on two int8 engines (their rounding differs): OpenVINO's is the
    # quantized model no less than ONNX Runtime's is, and far from an unrelated answer
    err_ov, err_ort = (ov8 - want).abs(), (ort8 - want).abs()
    assert float(err_ov.mean()) <= 1.5 * float(err_ort.mean())
    assert float(err_ov.max()) <= 2 * float(err_ort.max())
    assert float(err_ov.mean()) < 0.1 * float(want.abs().mean() + want.std())
    assert float((ov8.argmax(1) == want.argmax(1)).float().mean()) > 0.9
    with pytest.raises(ValueError, match=r"variant 'openvino_int8': expected its ONNX file"):
        variant_predictor(checkpoint, "openvino_int8")


def test_openvino_missing_is_a_clear_unsupported(monkeypatch, checkpoint, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    onnx_file = export_onnx(variant_predictor(checkpoint).model, tmp_path / "m.onnx")
    with pytest.raises(Unsupported, match=r"openvino package.*pip install 'openvino>=2023.1'"):
        variant_predictor(checkpoint, "openvino", onnx_file)


def test_openvino_cache_reuses_a_compiled_model_and_never_a_stale_one(
    checkpoint, tmp_path, monkeypatch
):
    """The compiled-model cache holds one blob per model; a file rewritten in place (same
    path, same mtime) with other weights answers with the new weights, not the cached blob."""
    import os

    monkeypatch.setenv("VISION_OPENVINO_CACHE", str(tmp_path / "cache"))
    x = torch.rand(1, 3, 64, 64)
    eager = variant_predictor(checkpoint)
    onnx_file = export_onnx(eager.model, tmp_path / "m.onnx")
    first = variant_predictor(checkpoint, "openvino", onnx_file).infer(x)
    again = variant_predictor(checkpoint, "openvino", onnx_file).infer(x)
    torch.testing.assert_close(again, first)
    assert len(os.listdir(tmp_path / "cache")) == 1
    stamp = onnx_file.stat().st_mtime_ns
    with torch.no_grad():
        for p in eager.model.parameters():
            p.mul_(0.5)
        want = eager.infer(x)
    export_onnx(eager.model, onnx_file)
    os.utime(onnx_file, ns=(stamp, stamp))
    changed = variant_predictor(checkpoint, "openvino", onnx_file)
    torch.testing.assert_close(changed.backend(x), want, atol=1e-4, rtol=1e-4)
    assert float((changed.backend(x) - first).abs().max()) > 1e-3
    assert len(os.listdir(tmp_path / "cache")) == 2
    monkeypatch.setenv("VISION_OPENVINO_CACHE", "")  # off
    variant_predictor(checkpoint, "openvino", onnx_file)
    assert len(os.listdir(tmp_path / "cache")) == 2
