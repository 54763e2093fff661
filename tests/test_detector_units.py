"""The detectors' interface and the small FCOS builds, fast: label offsets both ways, the
parts the rest of the project asks for, torchvision's builders sized to the input, and each
small FCOS pinned by its layer listing and its raw head outputs on a seeded input
(EfficientNet-Lite0 itself: tests/test_efficientnet_units.py)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from vision.models import detection as D
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
    assert (lite.meta.mean, lite.meta.std) == ((0.5,) * 3, (0.5,) * 3)  # Lite0's own
    assert lite.normalization() == ((0.5,) * 3, (0.5,) * 3)
    # a regression head that gives one tensor (RetinaNet's) is one output, batch kept
    reg = torch.ones(2, 5, 4)
    head.regression_head.forward = lambda feats: reg
    try:
        outs = m.kd_outputs(torch.rand(2, 3, 64, 64), boxes=True)
    finally:
        del head.regression_head.forward
    assert len(outs) == 7 and outs[6] is reg
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
