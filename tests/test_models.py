"""Every registered model: forward/backward on tiny inputs, predict(), and the upsampling layer."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from vision.models import build_model, list_models, load_weights, model_task
from vision.models.common import TransposedUpsample

torch.set_num_threads(2)


@pytest.mark.parametrize("name", list_models("segmentation"))
def test_segmenter_forward_backward_predict(name):
    torch.manual_seed(0)
    model = build_model(name, 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 4, 64, 64)  # background + 3 classes, at the input size
    assert torch.isfinite(logits).all()
    loss = F.cross_entropy(logits, torch.randint(0, 4, (2, 64, 64)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    out = model.predict(torch.rand(1, 3, 50, 70))  # not a multiple of 32: cropped to fit
    assert out[0]["mask"].shape == (50, 70) and out[0]["mask"].max() < 4
    assert model.meta.task == "segmentation" == model_task(name)


@pytest.mark.parametrize("name", list_models("detection"))
def test_detector_forward_backward_predict(name):
    torch.manual_seed(0)
    model = build_model(name, 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
        {
            "boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 8.0, 8.0]]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    model.train()
    losses = model(x, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    out = model.predict(x)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["scores"]) == len(o["labels"])
        assert (o["labels"] >= 0).all() and (o["labels"] < 3).all()
    assert model.meta.task == "detection"
    assert 0.0 < model.nms_iou <= 1.0  # what class-agnostic NMS reuses


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_transposed_upsample_is_bilinear_in_interior(factor):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 7)
    up = TransposedUpsample(3, factor)
    got = up(x)
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == want.shape == (1, 3, 6 * factor, 7 * factor)
    m = factor  # the border (one input pixel wide) differs: zero padding vs edge clamping
    torch.testing.assert_close(got[..., m:-m, m:-m], want[..., m:-m, m:-m], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, want)  # and it is a real layer, not interpolate itself


@pytest.mark.parametrize("upsample", ["transposed", "bilinear"])
def test_upsample_kind_is_a_constructor_argument(upsample):
    for name in ("fcn32s", "fcn8s", "dilated_context"):
        m = build_model(name, 2, upsample=upsample)
        has_tconv = any(isinstance(x, torch.nn.ConvTranspose2d) for x in m.modules())
        assert has_tconv == (upsample == "transposed")


def test_dilated_backbone_keeps_stride_8():
    m = build_model("dilated_context", 2)
    feats = m.backbone(torch.rand(1, 3, 64, 64))
    assert feats[8].shape[-1] == 8


def test_unknown_model_lists_known():
    with pytest.raises(KeyError, match="fcn8s"):
        build_model("yolo", 3)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoint_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        load_weights(p)
    good = tmp_path / "good.pt"
    m = build_model("fcn32s", 2)
    torch.save({"model": m.state_dict()}, good)
    m2 = build_model("fcn32s", 2, weights=str(good))
    assert all(
        torch.equal(a, b)
        for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True)
    )


def test_command_line_defaults_are_the_registry_defaults():
    from vision.models import DEFAULT_DETECTOR, DEFAULT_SEGMENTER
    from vision_cli.train import TRAIN_DEFAULTS

    assert [d for _, _, d in TRAIN_DEFAULTS] == [DEFAULT_DETECTOR, DEFAULT_SEGMENTER]


def test_resolve_device():
    from vision.predictor import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["fcos_lite0", "fcos_r18"])
def test_fcos_boxes_start_with_a_size_on_real_coco_photos(name, real, tmp_path, monkeypatch):
    """At initialization, on COCO128 photos (80 classes), the box sides are alive and the GIoU
    loss has a gradient. From torchvision's zero bias every box started as a point (loss
    1.000, half the sides below zero): in training on COCO128 the sides of fcos_lite0 all
    went below zero within 15 warm-up steps and never learned (ReLU: no gradient)."""
    from vision.config import load_config
    from vision.data.build import build_dataset
    from vision.data.transforms import DetectionTransform, TransformedDataset, collate_detection

    (tmp_path / "coco128").symlink_to(real / "coco" / "coco128")
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    cfg = load_config("coco128")
    ds = TransformedDataset(
        build_dataset(cfg, "detection", "train"), DetectionTransform(192, train=False), seed=0
    )
    torch.manual_seed(0)
    model = build_model(name, 80, class_names=cfg.names, input_size=192).train()
    raw = {}
    head = model.net.head.regression_head
    head.bbox_reg.register_forward_hook(lambda m, i, o: raw.__setitem__("x", o.detach()))
    images, targets = collate_detection([ds[i] for i in range(4)])[:2]
    loss = model(images, targets)
    loss["bbox_regression"].backward()
    assert float(loss["bbox_regression"]) < 0.95  # points score GIoU 0: a loss of 1
    assert (raw["x"] > 0).float().mean() > 0.99
    assert head.bbox_reg.weight.grad.norm() > 0.3  # 0.15 at the zero bias, then 0.02
