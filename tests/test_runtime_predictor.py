"""Exported variants without torch: NumPy NMS and FCOS decoding against torchvision's, the
``RuntimePredictor`` against the ``Predictor`` of the same variant, and a process that runs it
with torch never imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms

from vision.batch import ModelSpec
from vision.deploy import DetectorDecoder, DetectorNetwork, export_onnx, runtime_spec
from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.postprocess import detections_to_original as torch_to_original
from vision.runtime_decode import FcosDecoder, batched_nms, detections_to_original, nms
from vision.runtime_predictor import RuntimePredictor

SIZE = 72


def random_boxes(rng, n: int, span: float = 60.0) -> np.ndarray:
    xy = rng.uniform(0, span, (n, 2)).astype(np.float32)
    wh = rng.uniform(2, 30, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], 1)


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.6, 0.9])
def test_nms_keeps_what_torchvision_keeps_in_its_order(iou):
    rng = np.random.default_rng(int(iou * 10))
    for n in (0, 1, 2, 40, 300):
        boxes = random_boxes(rng, n)
        scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct
        labels = rng.integers(0, 4, n)
        want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        assert np.array_equal(nms(boxes, scores, iou), want)
        want = tv_batched_nms(
            torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou
        ).numpy()
        got = batched_nms(boxes, scores, labels, iou)
        assert np.array_equal(got, want) and got.dtype == np.int64
        assert np.array_equal(batched_nms(boxes, scores, labels, iou, limit=5), want[:5])


def test_nms_overlap_exactly_at_the_threshold_is_kept():
    # the half box: intersection 2 over union 4, IoU 0.5 exactly (not above it); the equal
    # box: IoU 1
    boxes = np.array([[0, 0, 2, 2], [0, 0, 2, 1], [0, 0, 2, 2]], np.float32)
    scores = np.array([0.9, 0.8, 0.8], np.float32)
    want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert np.array_equal(nms(boxes, scores, 0.5), want)
    assert list(nms(boxes, scores, 0.5)) == [0, 1]  # the equal box goes, the half box stays


@pytest.fixture(scope="module")
def fcos():
    torch.manual_seed(0)
    return build_model("fcos_slim", 3, input_size=SIZE, score_thresh=0.01).eval()


def head_outputs(fcos, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    with torch.no_grad():
        head = list(DetectorNetwork(fcos).eval()(torch.rand(3, 3, SIZE, SIZE)))
    head[0], head[2] = head[0] * 3 + 14, head[2] + 1  # many candidates: work for NMS, top-k
    return head


@pytest.mark.parametrize("topk", [1000, 7])
def test_fcos_decoding_in_numpy_equals_the_torch_decoder(fcos, topk):
    old = fcos.net.topk_candidates
    fcos.net.topk_candidates = topk
    try:
        torch_decoder = DetectorDecoder(fcos, SIZE)
        numpy_decoder = FcosDecoder(json.loads(json.dumps(torch_decoder.numpy_spec())), SIZE)
        for seed in range(3):
            head = head_outputs(fcos, seed)
            want = torch_decoder(head)
            candidates = numpy_decoder([h.numpy() for h in head])
            for c, w in zip(candidates, want, strict=True):
                # a threshold between two scores of the answer (away from the last bit)
                s = w["scores"].numpy()
                middle = float(s[len(s) // 2] + s[len(s) // 2 + 1]) / 2
                for threshold in (0.0, middle):
                    got = numpy_decoder.select(c, threshold)
                    above = (w["scores"] >= threshold).numpy()
                    assert len(got["boxes"]) == int(above.sum()) > 0
                    assert np.array_equal(got["boxes"], w["boxes"].numpy()[above])
                    assert np.array_equal(got["labels"], w["labels"].numpy()[above])
                    # NumPy's exp is not torch's vectorized one: the last two bits may differ
                    np.testing.assert_array_max_ulp(got["scores"], w["scores"].numpy()[above], 2)
                # a score of its own answer as the threshold: kept at it
                everything = numpy_decoder.select(c)["scores"]
                at = float(everything[len(everything) // 2])
                assert numpy_decoder.select(c, at)["scores"][-1] == np.float32(at)
    finally:
        fcos.net.topk_candidates = old


def test_retinanet_has_no_numpy_decoding():
    net = build_model("retinanet_resnet50_fpn", 2, input_size=64, weights_backbone=None)
    assert DetectorDecoder(net, 64).numpy_spec() is None


@pytest.mark.parametrize("agnostic", [None, 0.5])
def test_the_mapping_to_original_pixels_equals_torchs(agnostic):
    rng = np.random.default_rng(3)
    out = {
        "boxes": random_boxes(rng, 50, span=80),
        "scores": rng.permutation(50).astype(np.float32) / 50,
        "labels": rng.integers(0, 3, 50),
    }
    info = {"orig_size": (150, 90), "scale": 0.6}
    want = torch_to_original({k: torch.from_numpy(v) for k, v in out.items()}, info, 0.3, 12,
                             agnostic)  # fmt: skip
    got = detections_to_original(out, info, 0.3, 12, agnostic)
    assert 0 < len(got["boxes"]) <= 12
    for k in ("boxes", "scores", "labels"):
        assert np.array_equal(got[k], want[k].numpy()), k
    assert got["boxes"][:, 0::2].max() <= 90 and got["boxes"][:, 1::2].max() <= 150


@pytest.fixture(scope="module")
def exported(fcos, tmp_path_factory):
    """An FCOS detector and a segmenter: checkpoint and float32 ONNX file each."""
    out = {}
    folder = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    seg = build_model("fcn8s_slim", 3, input_size=64).eval()
    for task, model in (("detection", fcos), ("segmentation", seg)):
        ck = folder / f"{task}.pt"
        args = {"model_kwargs": {"score_thresh": 0.01}} if task == "detection" else {}
        save_checkpoint({"model": model.state_dict(), "meta": model.meta.as_dict(), "args": args},
                        ck)  # fmt: skip
        out[task] = (ck, export_onnx(model, folder / f"{task}.onnx"))
    return out


@pytest.mark.parametrize("task", ["detection", "segmentation"])
@pytest.mark.parametrize("variant", ["onnx", "openvino"])
def test_runtime_predictor_answers_as_the_predictor_of_the_variant(exported, task, variant):
    ck, onnx_file = exported[task]
    spec = ModelSpec(str(ck), variant, str(onnx_file))
    runtime = spec.load("cpu")
    assert isinstance(runtime, RuntimePredictor)
    from vision.deploy import variant_predictor

    torch_pred = variant_predictor(ck, variant, onnx_file)
    assert runtime.labels() == torch_pred.labels()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50 + 9 * i, 70, 3), dtype=np.uint8) for i in range(3)]
    arrays, infos = zip(*[runtime.letterbox.one(im) for im in images], strict=True)
    got_raw, want_raw = runtime.forward(list(arrays)), torch_pred.forward(list(arrays))
    for a, b, info in zip(got_raw, want_raw, infos, strict=True):
        opts = {"score_threshold": 0.05, "max_detections": 20, "agnostic_nms": True}
        got = runtime.finish(a, info, **(opts if task == "detection" else {}))
        want = torch_pred.finish(b, info, **(opts if task == "detection" else {}))
        if task == "detection":
            assert len(got["boxes"]) > 0
            assert np.array_equal(got["boxes"], want["boxes"].numpy())
            assert np.array_equal(got["labels"], want["labels"].numpy())
            np.testing.assert_array_max_ulp(got["scores"], want["scores"].numpy(), 2)
        else:
            assert np.array_equal(got["mask"], want["mask"].numpy())
            assert runtime.render(got, "rle") == torch_pred.render(want, "rle")


def test_a_process_running_the_exported_detector_never_imports_torch(exported, tmp_path):
    ck, onnx_file = exported["detection"]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(runtime_spec(ck, "openvino")))
    code = f"""
import json, sys
import numpy as np
from vision.runtime_predictor import RuntimePredictor
pred = RuntimePredictor(json.load(open({str(spec_file)!r})), {str(onnx_file)!r}, "openvino", 1)
array, info = pred.letterbox.one(np.full((60, 80, 3), 120, np.uint8))
(raw,) = pred.forward([array])
answer = pred.render(pred.finish(raw, info))
print(json.dumps({{"torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules,
                  "detections": len(answer["detections"])}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"torch": False, "torchvision": False, "detections": seen["detections"]}
    assert seen["detections"] > 0  # the untrained head at a 0.05 threshold finds something


def test_a_variant_without_numpy_decoding_or_a_torch_kind_loads_the_predictor(exported):
    ck, onnx_file = exported["detection"]
    assert runtime_spec(ck, "eager") is None and runtime_spec(ck, "fused") is None
    assert ModelSpec(str(ck), "eager").runtime() is None
    with pytest.raises(ValueError, match="expected one of"):
        RuntimePredictor(runtime_spec(ck, "onnx"), onnx_file, "bf16")
