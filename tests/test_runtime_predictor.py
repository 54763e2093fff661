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


def test_nms_edges_as_torchvision_keeps_them():
    empty = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert empty.shape == (0,) and empty.dtype == np.int64
    # apart by a gap in x (overlapping in y), then in y: no overlap, both kept
    for b in ([[0, 0, 1, 10], [2, 0, 3, 10]], [[0, 0, 10, 1], [0, 2, 10, 3]]):
        assert list(nms(np.array(b, np.float32), np.array([0.9, 0.8], np.float32), 0.1)) == [0, 1]
    # IoU float32(0.6) = 0.6000000238 is above the threshold 0.6 (a double in torchvision)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 6]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.6).numpy()
    assert list(nms(boxes, scores, 0.6)) == list(want) == [0]
    # many ties: the first in array order goes first, as torchvision's stable sort
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 200)
    scores = rng.choice(np.array([0.5, 0.7], np.float32), 200)
    want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3).numpy()
    assert np.array_equal(nms(boxes, scores, 0.3), want)


def test_batched_nms_keeps_classes_apart_and_rounds_as_torchvision():
    # class 1's box moved by (max + 1) lands beyond class 0's, never on it
    boxes = np.array([[9, 9, 10, 10], [0, 0, 1, 1]], np.float32)
    got = batched_nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]), 0.5)
    assert list(got) == [0, 1]
    # pairs of one class at IoU ~0.6, fractional coordinates, offsets of up to 79 classes:
    # where an offset rounds a coordinate, the decision is torchvision's float32 one (500
    # pairs: torchvision offsets up to 1,000 boxes)
    for seed in range(5):
        pairs_at_the_threshold(np.random.default_rng(seed), 500, 0.6)


def pairs_at_the_threshold(rng, n: int, t: float) -> None:
    corner = (rng.uniform(0, 500, (n, 2)) + rng.random((n, 2))).astype(np.float32)
    wh = rng.uniform(5, 40, (n, 2)).astype(np.float32)
    first = np.concatenate([corner, corner + wh], 1)
    dx = (wh[:, 0] * (1 - t) / (1 + t) + rng.normal(0, 1e-3, n)).astype(np.float32)
    second = first + np.stack([dx, 0 * dx, dx, 0 * dx], 1)
    boxes = np.concatenate([first, second]).astype(np.float32)
    labels = np.tile(rng.integers(0, 80, n), 2)
    scores = (rng.permutation(2 * n) / (2 * n)).astype(np.float32)
    want = tv_batched_nms(*(torch.from_numpy(a) for a in (boxes, scores, labels)), t).numpy()
    got = batched_nms(boxes, scores, labels, t)
    assert np.array_equal(got, want)
    assert n < len(got) < 2 * n  # some pairs kept whole, some cut to one box


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


def test_fcos_candidates_above_the_threshold_and_ties_at_the_top_k(fcos):
    spec = DetectorDecoder(fcos, SIZE).numpy_spec()
    n, k = sum(spec["per_level"]), 3
    rng = np.random.default_rng(2)
    logits = rng.choice(np.array([-1, 0, 1], np.float32), (n, k))
    ctr = np.zeros((n, 1), np.float32)
    scores = np.sqrt(1 / (1 + np.exp(-logits)) * np.float32(0.5)).ravel()  # three values
    low = float(scores.min())
    decoder = FcosDecoder({**spec, "topk": 7, "score_thresh": low}, SIZE)
    got = decoder.image(logits, np.ones((n, 4), np.float32), ctr)
    want, start = [], 0
    for size in spec["per_level"]:  # above (not at) the threshold; ties: the first locations
        level = [i for i in range(start * k, (start + size) * k) if scores[i] > low]
        want += sorted(level, key=lambda i: (-scores[i], i))[:7] if len(level) > 7 else level
        start += size
    want = np.array(want)
    assert np.array_equal(got["labels"], want % k) and np.array_equal(got["scores"], scores[want])
    x1 = np.clip(decoder.ctr[0][want // k] - decoder.box_size[want // k, 0], 0, SIZE)
    assert np.array_equal(got["boxes"][:, 0], x1)
    # labels as the dataset counts them: less the model's offset
    shifted = FcosDecoder({**spec, "label_offset": 1}, SIZE).select(got)["labels"]
    assert np.array_equal(shifted, decoder.select(got)["labels"] - 1)


def test_retinanet_has_no_numpy_decoding():
    net = build_model("retinanet_resnet50_fpn", 2, input_size=64, weights_backbone=None)
    assert DetectorDecoder(net, 64).numpy_spec() is None


@pytest.mark.parametrize("agnostic", [None, 0.5])
@pytest.mark.parametrize("most", [12, None])
def test_the_mapping_to_original_pixels_equals_torchs(agnostic, most):
    rng = np.random.default_rng(3)
    out = {
        "boxes": random_boxes(rng, 50, span=80) - np.float32(10),  # some off the image
        "scores": rng.permutation(50).astype(np.float32) / 50,
        "labels": rng.integers(0, 3, 50),
    }
    info = {"orig_size": (150, 90), "scale": 0.6}
    tensors = {k: torch.from_numpy(v) for k, v in out.items()}
    want = torch_to_original(tensors, info, 0.3, most, agnostic)  # 0.3 = 15 / 50: one is at it
    got = detections_to_original(out, info, 0.3, most, agnostic)
    assert 0 < len(got["boxes"]) <= (most or 50)
    for k in ("boxes", "scores", "labels"):
        assert np.array_equal(got[k], want[k].numpy()), k
    assert got["boxes"][:, 0::2].max() <= 90 and got["boxes"][:, 1::2].max() <= 150
    assert got["boxes"].min() == 0  # clipped at the image's top-left too
    everything = detections_to_original(out, info)  # the defaults: every box
    assert np.array_equal(everything["scores"], torch_to_original(tensors, info)["scores"].numpy())


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
    options = [{}, {"score_threshold": 0.05, "max_detections": 20, "agnostic_nms": True},
               {"score_threshold": 0.05, "agnostic_nms": False}]  # fmt: skip
    counts = []
    for a, b, info in zip(got_raw, want_raw, infos, strict=True):
        for opts in options if task == "detection" else [{}]:
            got, want = runtime.finish(a, info, **opts), torch_pred.finish(b, info, **opts)
            if task == "detection":
                assert len(got["boxes"]) > 0
                assert np.array_equal(got["boxes"], want["boxes"].numpy())
                assert np.array_equal(got["labels"], want["labels"].numpy())
                np.testing.assert_array_max_ulp(got["scores"], want["scores"].numpy(), 2)
                counts.append(len(got["boxes"]))
            else:
                assert np.array_equal(got["mask"], want["mask"].numpy())
                assert runtime.render(got, "rle") == torch_pred.render(want, "rle")
                assert runtime.render(got) == torch_pred.render(want)  # png by default
    if task == "detection":  # the options made a difference: all, fewer, per-class
        assert len(set(counts)) > 1


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


def test_a_segmenter_s_labels_follow_its_spec(exported):
    ck, onnx_file = exported["segmentation"]
    spec = runtime_spec(ck, "onnx")
    colors = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    pred = RuntimePredictor({**spec, "background": False, "colors": colors}, onnx_file, "onnx", 1)
    names = spec["class_names"]
    assert pred.labels() == {"classes": names, "mask_classes": names, "colors": colors}
    assert RuntimePredictor(spec, onnx_file, "onnx", 1).labels()["mask_classes"][0] == "background"


def test_a_missing_openvino_is_named_with_its_package(monkeypatch):
    from vision.errors import Unsupported
    from vision.runtime_predictor import openvino_core

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import fails
    with pytest.raises(Unsupported) as e:
        openvino_core()
    assert str(e.value).startswith("OpenVINO variants need the openvino package, got ")
    assert str(e.value).endswith("ModuleNotFoundError: import of openvino halted; None in "
                                 "sys.modules; pip install 'openvino>=2023.1'")  # fmt: skip


def test_a_variant_without_numpy_decoding_or_a_torch_kind_loads_the_predictor(exported):
    ck, onnx_file = exported["detection"]
    assert runtime_spec(ck, "eager") is None and runtime_spec(ck, "fused") is None
    assert ModelSpec(str(ck), "eager").runtime() is None
    with pytest.raises(ValueError, match="expected one of"):
        RuntimePredictor(runtime_spec(ck, "onnx"), onnx_file, "bf16", 1)


def test_runtime_predictor_prepares_bytes_as_the_predictor(exported):
    import io

    from PIL import Image

    from vision.deploy import variant_predictor

    ck, onnx_file = exported["segmentation"]
    runtime = ModelSpec(str(ck), "onnx", str(onnx_file)).load("cpu")
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(buf, "PNG")
    got, info = runtime.prepare(buf.getvalue())
    want, want_info = variant_predictor(ck, "onnx", onnx_file).prepare(buf.getvalue())
    assert np.array_equal(got, want) and info == want_info and got.shape == (64, 64, 3)
    from vision.data.io import DecodeLimits, ImageError

    with pytest.raises(ImageError) as e:  # the caller's limits apply
        runtime.prepare(buf.getvalue(), DecodeLimits(max_pixels=1000))
    assert e.value.reason == "too_large"
