"""The backbones' taps and strides, dilation per block, the slim ResNet, and their errors,
in process."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vision.models import backbones as B

# ---- vision.models.backbones ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, channels",
    [
        ("resnet_slim", {8: 64, 16: 128, 32: 256}),
        ("resnet18", {8: 128, 16: 256, 32: 512}),
        ("mobilenet_v3", {8: 40, 16: 112, 32: 960}),
        ("lite0", {8: 40, 16: 112, 32: 320}),
    ],
)
def test_stage_features_taps(name, channels):
    torch.manual_seed(0)
    f = B.stage_features(name)
    assert f.channels == channels
    out = f(torch.rand(1, 3, 64, 96))
    assert {s: tuple(v.shape) for s, v in out.items()} == {
        s: (1, c, 64 // s, 96 // s) for s, c in channels.items()
    }
    norm = ((0.5,) * 3, (0.5,) * 3) if name == "lite0" else B.IMAGENET_NORM
    assert (f.mean, f.std) == norm


def test_stage_features_stop_at_the_last_tap():
    calls = []

    class L(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            calls.append(self.k)
            return x

    f = B.StageFeatures([L(0), L(1), L(2), L(3)], {8: 0, 16: 2}, {8: 1, 16: 1})
    assert set(f(torch.zeros(1))) == {8, 16} and calls == [0, 1, 2] and f.last == 2
    assert f.taps == {0: 8, 2: 16} and (f.mean, f.std) == B.IMAGENET_NORM


def test_vgg_taps_are_the_pooling_outputs():
    layers = [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.MaxPool2d(2),
        nn.MaxPool2d(2),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.MaxPool2d(2),
        nn.MaxPool2d(2),
    ]
    assert B._probe(layers, first=True) == ({8: 3, 16: 5, 32: 6}, {8: 4, 16: 6, 32: 6})
    assert B._probe(layers) == ({8: 4, 16: 5, 32: 6}, {8: 6, 16: 6, 32: 6})
    bn = nn.BatchNorm2d(3)
    bn.train()
    B._probe([bn, nn.AvgPool2d(8)])
    assert bn.training and bn.num_batches_tracked == 0  # probed in eval mode, mode restored


@pytest.mark.parametrize("name", ["resnet_slim", "resnet18", "resnet50"])
def test_dilated_resnets_stay_at_stride_8(name):
    f = B.stage_features(name, dilate=(False, True, True))
    out = f(torch.rand(1, 3, 64, 64))
    assert list(out) == [8] and out[8].shape[-2:] == (8, 8) and list(f.channels) == [8]
    assert (
        f.channels[8]
        == out[8].shape[1]
        == {"resnet_slim": 256, "resnet18": 512, "resnet50": 2048}[name]
    )


def test_dilation_per_block():
    m = B.resnet("resnet18", dilate=(False, True, True))
    d = [
        (c.stride, c.dilation, c.padding)
        for c in m.layer3.modules()
        if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)
    ]
    assert d == [((1, 1), (1, 1), (1, 1))] + [((1, 1), (2, 2), (2, 2))] * 3
    d4 = [
        c.dilation
        for c in m.layer4.modules()
        if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)
    ]
    assert d4 == [(2, 2)] + [(4, 4)] * 3
    assert m.layer3[0].downsample[0].stride == (1, 1) and m.layer2[0].downsample[0].stride == (2, 2)
    only4 = B.resnet("resnet18", dilate=(False, False, True))
    assert [
        c.dilation
        for c in only4.layer4.modules()
        if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)
    ] == [(1, 1)] + [(2, 2)] * 3
    r50 = B.resnet("resnet50", dilate=(False, True, True))
    assert r50.layer4[1].conv2.dilation == (4, 4)
    # the same network as torchvision's own dilation of ResNet-50 (Bottleneck)
    import torchvision

    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    assert repr(r50) == repr(ref)
    ref.load_state_dict(r50.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(r50.eval()(x), ref.eval()(x))


def test_torchvision_weights_are_passed_by_name(monkeypatch):
    import torchvision

    asked = []
    for name in ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v3_large"):
        build = getattr(torchvision.models, name)

        def record(build=build, name=name, **kw):
            asked.append((name, kw.pop("weights")))  # no download: built untrained
            return build(weights=None, **kw)

        monkeypatch.setattr(torchvision.models, name, record)
    B.resnet("resnet50", "W1", dilate=(False, True, True))
    B.stage_features("resnet18", weights="W2")
    B.stage_features("vgg16", weights="W3")
    B.stage_features("mobilenet_v3", weights="W4")
    assert asked == [
        ("resnet50", "W1"),
        ("resnet18", "W2"),
        ("vgg16_bn", "W3"),
        ("mobilenet_v3_large", "W4"),
    ]


def test_slim_resnet():
    torch.manual_seed(0)
    m = B.SlimResNet()
    assert [m.layer1[0].conv1.in_channels, m.layer4[1].conv2.out_channels] == [32, 256]
    assert m.layer1[0].downsample is None and m.layer2[0].downsample[0].stride == (2, 2)
    assert len(m.layer3) == 2 and m(torch.zeros(1, 3, 64, 64)).shape == (1, 256, 2, 2)
    assert all((b.bn2.weight == 0).all() for layer in (m.layer1, m.layer4) for b in layer)
    w = m.stem[3].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.1)
    small = B.SlimResNet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 3))
    assert len(small.layer4) == 3 and small.layer2[0].downsample is not None


def test_backbone_errors():
    with pytest.raises(ValueError, match=r"backbone: expected one of \('vgg16', 'resnet18'"):
        B.stage_features("nope")
    with pytest.raises(
        ValueError, match="dilation: expected a ResNet or Lite0 backbone, got 'mobilenet_v3'"
    ):
        B.stage_features("mobilenet_v3", dilate=(False, True, True))
