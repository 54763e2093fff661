"""The Predictor API's stages, one by one, on small untrained models: letterboxing, the tensor
it feeds, the raw outputs split per image, answers in original pixels, what a checkpoint
rebuilds, the labels and the JSON answer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vision.data.io import ImageError
from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.predictor import Predictor, _label_kwargs, resolve_device

SIZE = 64


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def segmenter() -> Predictor:
    torch.manual_seed(0)
    return Predictor(build_model("fcn8s_slim", 2, class_names=["cat", "dog"], input_size=SIZE))


@pytest.fixture(scope="module")
def detector() -> Predictor:
    torch.manual_seed(0)
    return Predictor(build_model("fcos_slim", 3, class_names=list("abc"), input_size=SIZE))


def test_resize_letterboxes_the_longer_side_and_pads_bottom_right(segmenter):
    img = _image(30, 60)  # h, w: the width becomes 64, the height 32
    (out,), (info,) = segmenter.resize([img])
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert info == {"orig_size": (30, 60), "scale": SIZE / 60}
    assert out[32:].max() == 0 and out[:32].max() > 0  # the padding rows are black
    assert np.array_equal(segmenter.resize([_image(64, 64)])[0][0], _image(64, 64))


def test_an_image_too_thin_to_keep_a_pixel_is_refused_with_its_size(segmenter):
    assert segmenter.resize([_image(1, 120)])[1][0]["orig_size"] == (1, 120)  # rounds to 1 row
    with pytest.raises(
        ImageError, match=r"^image: expected an image .*longer side to 64, got 1000x7$"
    ) as e:
        segmenter.resize([_image(7, 1000)])  # 7 * 0.064 = 0.45 rows
    assert e.value.reason == "unusable" and e.value.where == "image"  # HTTP 422 in the service


def test_decode_reads_paths_and_passes_the_upload_limits_on(segmenter, tmp_path):
    from vision.data.io import DecodeLimits

    img = _image(20, 30)
    (tmp_path / "a.png").write_bytes(_png(img))
    assert np.array_equal(Predictor.decode(tmp_path / "a.png"), img)
    assert np.array_equal(Predictor.decode(str(tmp_path / "a.png")), img)
    small = DecodeLimits(max_pixels=100)
    with pytest.raises(ImageError, match="600") as e:
        Predictor.decode(_png(img), small)
    assert e.value.reason == "too_large"
    with pytest.raises(ImageError, match="600"):
        segmenter.prepare(_png(img), small)


def test_to_tensor_stacks_scales_to_unit_range_and_keeps_channels_last(segmenter):
    a, b = _image(SIZE, SIZE, 1), _image(SIZE, SIZE, 2)
    x = segmenter.to_tensor([a, b])
    assert x.shape == (2, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.equal(x[1], torch.from_numpy(b).permute(2, 0, 1).float() / 255)
    assert x.is_contiguous()
    p = Predictor(segmenter.model, channels_last=True)
    y = p.to_tensor([a])
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert torch.equal(y, x[:1])
    assert segmenter.model.backbone.layers[0][0].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    segmenter.model.to(memory_format=torch.contiguous_format)


def test_half_is_for_cuda_only_and_autocast_runs_in_the_asked_dtype(segmenter):
    assert Predictor(segmenter.model, half=True).half is False  # the CPU keeps float32
    x = segmenter.to_tensor([_image(SIZE, SIZE)])
    assert segmenter.infer(x).dtype == torch.float32
    bf16 = Predictor(segmenter.model, autocast=torch.bfloat16)
    assert bf16.infer(x).dtype == torch.bfloat16


def test_segmenter_answers_one_class_map_per_image_at_its_own_size(segmenter):
    images = [_image(30, 60), _image(50, 20, 1)]
    results = segmenter(images)
    assert [r["mask"].shape for r in results] == [(30, 60), (50, 20)]
    assert all(r["mask"].dtype == torch.uint8 and int(r["mask"].max()) <= 2 for r in results)
    x, info = segmenter.preprocess(images)
    raw = segmenter.infer(x)
    assert raw.shape == (2, 3, SIZE, SIZE) and len(segmenter.split(raw)) == 2
    again = segmenter.postprocess(raw, info)
    assert all(torch.equal(a["mask"], b["mask"]) for a, b in zip(results, again, strict=True))


def test_serving_stages_answer_as_the_batch_call(segmenter):
    img = _image(40, 24, 3)
    array, info = segmenter.prepare(_png(img))
    assert info == {"orig_size": (40, 24), "scale": SIZE / 40}
    assert np.array_equal(array, segmenter.resize([img])[0][0])
    (raw,) = segmenter.forward([array])
    assert raw.shape == (3, SIZE, SIZE)
    assert torch.equal(segmenter.finish(raw, info)["mask"], segmenter([img])[0]["mask"])
    assert np.array_equal(Predictor.decode(_png(img)), img)
    assert np.array_equal(Predictor.decode(bytearray(_png(img))), img)


def test_detector_finish_thresholds_limits_and_suppresses_across_classes(detector):
    raw = {
        "boxes": torch.tensor([[8.0, 8, 40, 40], [9, 8, 40, 41], [50, 50, 60, 60]]),
        "scores": torch.tensor([0.9, 0.8, 0.4]),
        "labels": torch.tensor([0, 2, 1]),
    }
    info = {"orig_size": (128, 256), "scale": 0.25}
    out = detector.finish(raw, info)
    assert out["labels"].tolist() == [0, 2, 1] and out["boxes"][0].tolist() == [32, 32, 160, 128]
    assert detector.finish(raw, info, score_threshold=0.5)["labels"].tolist() == [0, 2]
    assert detector.finish(raw, info, max_detections=2)["labels"].tolist() == [0, 2]
    assert detector.model.nms_iou == 0.6  # FCOS's own NMS IoU, which agnostic NMS reuses
    assert detector.finish(raw, info, agnostic_nms=True)["labels"].tolist() == [0, 1]
    raw["boxes"][1] = torch.tensor([20.0, 8, 52, 40])  # IoU 0.33 with the first: both stay
    assert detector.finish(raw, info, agnostic_nms=True)["labels"].tolist() == [0, 2, 1]


def test_detector_batch_call_gives_detections_per_image_in_original_pixels(detector):
    images = [_image(32, 64), _image(64, 32, 1)]
    x, info = detector.preprocess(images)
    raw = detector.infer(x)
    assert isinstance(raw, list) and detector.split(raw) == list(raw)
    results = detector(images, score_threshold=0.0, max_detections=5)
    for res, (h, w) in zip(results, [(32, 64), (64, 32)], strict=True):
        assert set(res) == {"boxes", "scores", "labels"} and len(res["boxes"]) <= 5
        assert (res["boxes"][:, 0::2] <= w).all() and (res["boxes"][:, 1::2] <= h).all()


def test_labels_and_rendered_answers_follow_the_task_and_mask_layout(detector, segmenter):
    assert detector.labels() == {"classes": ["a", "b", "c"]}
    res = {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "scores": torch.tensor([0.5])}
    res["labels"] = torch.tensor([2])
    assert detector.render(res)["detections"][0]["label"] == "c"
    labels = segmenter.labels()
    assert labels["classes"] == ["cat", "dog"]
    assert labels["mask_classes"] == ["background", "cat", "dog"]
    assert labels["colors"] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]  # the VOC colour map
    mask = {"mask": torch.tensor([[0, 2], [2, 1]], dtype=torch.uint8)}
    png = segmenter.render(mask)
    assert png["pixel_counts"] == {"background": 1, "cat": 1, "dog": 2}
    assert png["mask"]["format"] == "png"
    assert set(segmenter.render(mask, "rle")["mask"]["per_class"]) == {"background", "cat", "dog"}
    colors = [[1, 1, 1], [2, 2, 2]]
    plain = build_model("fcn8s_slim", 2, class_names=["road", "sky"], input_size=SIZE,
                        background=False, colors=colors)  # fmt: skip
    p = Predictor(plain)
    assert p.labels() == {"classes": ["road", "sky"], "mask_classes": ["road", "sky"],
                          "colors": colors}  # fmt: skip
    two = p.render({"mask": torch.tensor([[0, 1], [1, 1]], dtype=torch.uint8)})
    assert two["colors"] == {"road": [1, 1, 1], "sky": [2, 2, 2]}
    assert two["pixel_counts"] == {"road": 1, "sky": 3}


def test_from_checkpoint_rebuilds_the_model_its_kwargs_and_mask_layout(tmp_path):
    torch.manual_seed(0)
    model = build_model("fcos_slim", 2, class_names=["x", "y"], input_size=SIZE,
                        detections_per_img=7)  # fmt: skip
    model.meta.metrics = {"bbox": {"AP": 0.5}}
    ck = {"model": model.state_dict(), "meta": model.meta.as_dict()}
    save_checkpoint({**ck, "args": {"model_kwargs": {"detections_per_img": 7}}}, tmp_path / "d.pt")
    p = Predictor.from_checkpoint(tmp_path / "d.pt")
    assert p.model.net.detections_per_img == 7 and p.meta.class_names == ["x", "y"]
    assert p.meta.metrics == {"bbox": {"AP": 0.5}} and p.size == SIZE and p.task == "detection"
    assert not p.model.training and p.device.type == "cpu"
    x = p.to_tensor([_image(SIZE, SIZE)])
    model.eval()
    a, b = model(x)[0], p.infer(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])

    seg = build_model("fcn8s_slim", 2, input_size=SIZE, background=False, colors=[[9, 9, 9]] * 2)
    meta = seg.meta.as_dict()
    del meta["metrics"]  # an older checkpoint's record
    save_checkpoint({"model": seg.state_dict(), "meta": meta}, tmp_path / "s.pt")
    q = Predictor.from_checkpoint(tmp_path / "s.pt", channels_last=True)
    assert q.meta.background is False and q.meta.colors == [[9, 9, 9]] * 2
    assert q.meta.metrics == {} and q.meta.pruned == {} and q.channels_last


def test_from_checkpoint_rebuilds_a_pruned_model_from_its_shapes(tmp_path):
    from vision.prune import prune_flops

    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 2, input_size=SIZE)
    report = prune_flops(model, 0.3)
    ck = {"model": model.state_dict(), "meta": model.meta.as_dict()}
    save_checkpoint(ck, tmp_path / "p.pt")
    p = Predictor.from_checkpoint(tmp_path / "p.pt")
    assert p.meta.pruned["flops_cut"] == report["flops_cut"]
    x = p.to_tensor([_image(SIZE, SIZE)])
    assert torch.equal(model.eval()(x), p.infer(x))


def test_label_kwargs_read_a_segmenters_layout_and_default_older_checkpoints():
    assert _label_kwargs({"task": "detection", "background": False}) == {}
    assert _label_kwargs({"task": "segmentation"}) == {"background": True, "colors": []}
    meta = {"task": "segmentation", "background": False, "colors": None}
    assert _label_kwargs(meta) == {"background": False, "colors": []}


def test_resolve_device_takes_names_and_devices():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto") == auto  # "auto" is the default
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"expected 'auto' or 'cpu' here.*got 'cuda:1'"):
            resolve_device("cuda:1")
