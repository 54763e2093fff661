"""The segmenters and their parts, small and fast: bilinear upsampling kernels, cropping,
initializations, the Segmenter interface, the backbones' taps and dilation, and each
architecture pinned by its layer listing (``repr``: every kernel, stride, padding, dilation
and dropout) and by its output on a seeded input (a tolerance for float summation order)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision.models import backbones as B
from vision.models.common import (
    BilinearUpsample,
    ModelMeta,
    Segmenter,
    TransposedUpsample,
    bilinear_kernel,
    default_names,
    fit,
    he_init,
    make_upsample,
)
from vision.models.dilated import CONTEXT_DILATIONS, DilatedSegmenter
from vision.models.fcn import FCN
from vision.models.tv_segmentation import TV_SEGMENTERS, TorchvisionSegmenter

# ---- vision.models.common -------------------------------------------------------------------


def test_meta_and_names():
    m = ModelMeta("n", "segmentation", ["a"], 64)
    d = m.as_dict()
    assert d["mean"] == [0.485, 0.456, 0.406] and d["std"] == [0.229, 0.224, 0.225]
    assert d == {
        "name": "n",
        "task": "segmentation",
        "class_names": ["a"],
        "input_size": 64,
        "mean": d["mean"],
        "std": d["std"],
        "metrics": {},
        "recipe": {},
        "pruned": {},
        "background": True,
        "colors": [],
    }
    assert m.mean == (0.485, 0.456, 0.406)  # the object keeps its tuple
    assert default_names(3) == ["class0", "class1", "class2"] and default_names(0) == []


def test_he_init():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(64, 256, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1, bias=False)
    )
    for p in net.parameters():
        nn.init.constant_(p, 0.3)
    he_init(net)
    std = net[0].weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)  # fan_out, ReLU gain
    assert (net[0].bias == 0).all() and (net[1].weight == 1).all() and (net[1].bias == 0).all()
    assert (net[2].weight == 1).all() and (net[2].bias == 0).all() and net[3].bias is None


def test_bilinear_kernels():
    w = bilinear_kernel(2, 4)
    f = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert w.shape == (2, 2, 4, 4) and w.dtype == torch.float32
    assert torch.equal(w[0, 0], torch.outer(f, f)) and torch.equal(w[1, 1], w[0, 0])
    assert (w[0, 1] == 0).all() and (w[1, 0] == 0).all()
    odd = bilinear_kernel(1, 3)[0, 0]
    assert torch.equal(
        odd, torch.outer(torch.tensor([0.5, 1.0, 0.5]), torch.tensor([0.5, 1.0, 0.5]))
    )


@pytest.mark.parametrize("k", [5, 6, 10])
def test_bilinear_kernels_computed_in_float64(k):
    f = (k + 1) // 2
    c = f - 1 if k % 2 else f - 0.5
    one = 1 - (torch.arange(k, dtype=torch.float64) - c).abs() / f
    assert torch.equal(bilinear_kernel(1, k)[0, 0], torch.outer(one, one).float())


def test_transposed_upsample_is_bilinear_inside():
    up = TransposedUpsample(2, 4)
    assert (up.factor, up.conv.kernel_size, up.conv.stride, up.conv.padding) == (
        4,
        (8, 8),
        (4, 4),
        (2, 2),
    )
    assert up.conv.bias is None
    x = torch.arange(12.0).view(1, 1, 3, 4).repeat(1, 2, 1, 1)
    y = up(x)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    assert y.shape == (1, 2, 12, 16)
    assert torch.allclose(y[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5)
    for bad in (1, 3, 0):
        with pytest.raises(ValueError, match=f"expected an even factor >= 2, got {bad}"):
            TransposedUpsample(2, bad)
    TransposedUpsample(1, 2)


def test_bilinear_upsample_and_choice():
    x = torch.rand(1, 2, 3, 5)
    up = BilinearUpsample(2, 8)
    assert up.factor == 8 and torch.equal(
        up(x), F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    )
    assert isinstance(make_upsample("transposed", 2, 2), TransposedUpsample)
    b = make_upsample("bilinear", 2, 4)
    assert isinstance(b, BilinearUpsample) and b.factor == 4
    assert make_upsample("transposed", 3, 4).conv.in_channels == 3
    with pytest.raises(
        ValueError, match=r"upsample: expected one of \('transposed', 'bilinear'\), got 'x'"
    ):
        make_upsample("x", 2, 2)


def test_fit_crops_and_pads_top_left():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert torch.equal(fit(x, 2, 3), x[..., :2, :3])
    padded = fit(x, 4, 6)
    assert padded.shape == (1, 1, 4, 6) and torch.equal(padded[..., :3, :4], x)
    assert (padded[..., 3:, :] == 0).all() and (padded[..., :, 4:] == 0).all()
    assert torch.equal(fit(x, 3, 4), x)
    assert fit(x, 3, 5).shape == (1, 1, 3, 5) and fit(x, 4, 4).shape == (1, 1, 4, 4)
    three = torch.arange(12.0).view(1, 3, 4)  # any leading dimensions: the last two are H, W
    assert fit(three, 4, 6).shape == (1, 4, 6) and torch.equal(fit(three, 4, 6)[:, :3, :4], three)


class _Seg(Segmenter):
    def __init__(self, background=True):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 1)
        self.head = nn.Sequential(nn.Conv2d(4, 3, 1), nn.ConvTranspose2d(3, 3, 2, 2))
        self.meta = ModelMeta(
            "s",
            "segmentation",
            ["a", "b"],
            8,
            mean=(0.5, 0.25, 0.0),
            std=(0.5, 0.5, 1.0),
            background=background,
        )

    def forward(self, x):
        return F.interpolate(self.head(self.backbone(self.normalize(x))), size=x.shape[-2:])


def test_segmenter_interface():
    s = _Seg()
    assert s.prediction_layers() == [s.head[0], s.head[1]]
    assert _Seg(background=False).prediction_layers() == []  # 2 classes: no 3-channel layer
    assert s.export_module() is s and s.export_outputs() == ("logits",)
    assert s.export_decoder(8)(["x", "y"]) == "x"
    assert s.backbone_modules() == [s.backbone]
    s.head.backbone = nn.Identity()  # a second, nested one: the first is the feature extractor
    assert s.backbone_modules() == [s.backbone]
    del s.backbone
    assert s.backbone_modules() == [s.head.backbone]
    s.backbone = nn.Conv2d(3, 4, 1)
    assert s.normalization() == ((0.5, 0.25, 0.0), (0.5, 0.5, 1.0))
    x = torch.ones(1, 3, 2, 2)
    n = s.normalize(x)
    assert torch.allclose(n[0, :, 0, 0], torch.tensor([1.0, 1.5, 1.0]))
    x64 = torch.full((1, 3, 1, 1), 0.3, dtype=torch.float64)
    imagenet = _Seg()
    imagenet.meta.mean, imagenet.meta.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    mean = torch.tensor(imagenet.meta.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(imagenet.meta.std, dtype=torch.float64).view(1, 3, 1, 1)
    got = imagenet.normalize(x64)  # in the input's precision, not float32's
    assert got.dtype == torch.float64 and torch.equal(got, (x64 - mean) / std)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\), got shape \(3, 2, 2\)"):
        s.normalize(x[0])
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 2, 2\)"):
        s.normalize(x[:, :1])


def test_predict_masks_confidence_and_mode():
    s = _Seg()
    s.train()
    out = s.predict(torch.rand(2, 3, 4, 4))
    assert s.training and len(out) == 2
    logits = s.eval()(torch.rand(1, 3, 4, 4))
    s.train()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4)
    (one,) = s.predict(x)
    with torch.no_grad():
        probs = s.eval()(x).softmax(1)
    assert torch.equal(one["mask"], probs.argmax(1)[0]) and torch.allclose(
        one["confidence"], probs.max(1).values[0]
    )
    assert logits.shape == (1, 3, 4, 4)
    s.eval()
    s.predict(x)
    assert not s.training


# ---- the architectures ----------------------------------------------------------------------

CASES = {
    "fcn32s_slim": lambda: FCN(3, 32, "resnet_slim"),
    "fcn16s_slim": lambda: FCN(3, 16, "resnet_slim"),
    "fcn8s_slim": lambda: FCN(3, 8, "resnet_slim"),
    "fcn8s_r18_bilinear": lambda: FCN(2, 8, "resnet18", upsample="bilinear", background=False),
    "fcn8s_mbv3": lambda: FCN(2, 8, "mobilenet_v3"),
    "dilated_context_slim": lambda: DilatedSegmenter(3, "resnet_slim", width=16),
    "dilated_largefov_r18": lambda: DilatedSegmenter(3, "resnet18", "largefov", width=16),
    "dilated_r50": lambda: DilatedSegmenter(1, "resnet50", width=8),
    "dilated_lite0": lambda: DilatedSegmenter(1, "lite0", width=8),
    "lraspp": lambda: TorchvisionSegmenter("lraspp_mobilenet_v3_large", 2),
    "fcn8s_vgg16": lambda: FCN(2, 8, "vgg16", fc_dim=16),
}
# sha256 of repr (first 16 hex), output shape, mean and standard deviation, from seed 0
PINNED = {
    "fcn32s_slim": ("a6aa44c3c3d31c22", (1, 4, 64, 48), -0.00546088, 0.0415972),
    "fcn16s_slim": ("abe67de14f6108fd", (1, 4, 64, 48), -0.00475306, 0.0365973),
    "fcn8s_slim": ("24120e599d33cd96", (1, 4, 64, 48), -0.00449975, 0.03498),
    "fcn8s_vgg16": ("2445a2bc561be7ff", (1, 3, 64, 48), -0.0181403, 0.052038),
    "fcn8s_r18_bilinear": ("27c2bdecd4f0c329", (1, 2, 64, 48), 0.119969, 0.410732),
    "fcn8s_mbv3": ("7f715d4326557b03", (1, 3, 64, 48), 0.00843652, 0.0133607),
    "dilated_context_slim": ("e64349096e602887", (1, 4, 64, 48), 0.0041441, 0.0336827),
    "dilated_largefov_r18": ("1bd8eecdb70e23e2", (1, 4, 64, 48), 2.43938, 3.92592),
    "dilated_r50": ("bd8e7540aa3a2e15", (1, 2, 64, 48), -21.3308, 26.9828),
    "dilated_lite0": ("e59c1f07deaefd42", (1, 2, 64, 48), 3.65913e-09, 3.16123e-09),
    "lraspp": ("607b1873a3a8403d", (1, 3, 64, 48), 0.0223382, 0.107186),
}


@pytest.mark.parametrize("name", list(CASES))
def test_architecture_is_pinned(name):
    torch.manual_seed(0)
    m = CASES[name]().eval()
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = m(x).double()
    digest, shape, mean, std = PINNED[name]
    assert hashlib.sha256(repr(m).encode()).hexdigest()[:16] == digest
    assert tuple(y.shape) == shape
    assert y.mean().item() == pytest.approx(mean, rel=1e-4, abs=1e-12)
    assert y.std().item() == pytest.approx(std, rel=1e-4, abs=1e-12)


def test_fcn_meta_skips_and_errors():
    m = FCN(2, 8, "resnet_slim", class_names=["a", "b"], input_size=96, colors=[[1, 2, 3]] * 3)
    assert m.meta.as_dict() | {"mean": 0, "std": 0} == {
        "name": "fcn8s_resnet_slim",
        "task": "segmentation",
        "class_names": ["a", "b"],
        "input_size": 96,
        "mean": 0,
        "std": 0,
        "metrics": {},
        "recipe": {},
        "pruned": {},
        "background": True,
        "colors": [[1, 2, 3]] * 3,
    }
    assert (m.meta.mean, m.meta.std) == B.IMAGENET_NORM and m.variant == 8
    for layer in (m.score16, m.score8):
        assert (layer.weight == 0).all() and (layer.bias == 0).all()
    assert m.score32.out_channels == 3 and isinstance(m.head, nn.Dropout2d) and m.head.p == 0.1
    assert FCN(2, 8, "resnet_slim").meta.class_names == ["class0", "class1"]
    assert FCN(2, 32, "resnet_slim").score16 is None and FCN(2, 32, "resnet_slim").up2a is None
    f16 = FCN(2, 16, "resnet_slim")
    assert f16.score8 is None and f16.up2b is None and f16.score16 is not None
    assert FCN(2, 8, "lite0").meta.mean == (0.5, 0.5, 0.5)
    assert FCN(2, 8, "resnet_slim", background=False).score32.out_channels == 2
    with pytest.raises(ValueError, match="FCN variant: expected 8, 16 or 32, got 4"):
        FCN(2, 4)
    with torch.device("meta"):  # the paper's fc6/fc7 (4096 wide: 470 MB) built without memory
        vgg = FCN(2, 32, "vgg16")
    fc6, fc7 = vgg.head[0], vgg.head[3]
    assert (fc6.out_channels, fc7.in_channels, fc7.out_channels) == (4096, 4096, 4096)
    assert vgg.score32.in_channels == 4096 and fc6.kernel_size == (7, 7)


def test_dilated_meta_and_errors():
    m = DilatedSegmenter(
        2,
        "resnet_slim",
        "largefov",
        width=8,
        class_names=["a", "b"],
        input_size=80,
        background=False,
        colors=[[0, 0, 0]] * 2,
    )
    assert (m.meta.name, m.meta.class_names, m.meta.input_size) == (
        "dilated_largefov_resnet_slim",
        ["a", "b"],
        80,
    )
    assert (
        m.meta.background is False
        and m.meta.colors == [[0, 0, 0]] * 2
        and m.head[-1].out_channels == 2
    )
    assert (m.meta.mean, m.meta.std) == B.IMAGENET_NORM
    assert DilatedSegmenter(2, "resnet_slim", width=8).meta.class_names == ["class0", "class1"]
    assert CONTEXT_DILATIONS == (1, 1, 2, 4, 8, 16, 1)
    with pytest.raises(ValueError, match="head: expected 'context' or 'largefov', got 'x'"):
        DilatedSegmenter(2, "resnet_slim", "x")
    assert isinstance(
        DilatedSegmenter(2, "resnet_slim", width=8, upsample="bilinear").up, BilinearUpsample
    )


def test_torchvision_segmenter_meta_and_errors():
    m = TorchvisionSegmenter(
        "lraspp_mobilenet_v3_large",
        2,
        class_names=["a", "b"],
        input_size=96,
        background=False,
        colors=[[1, 1, 1]] * 2,
    )
    assert (m.meta.name, m.meta.task, m.meta.class_names, m.meta.input_size) == (
        "lraspp_mobilenet_v3_large",
        "segmentation",
        ["a", "b"],
        96,
    )
    assert m.meta.background is False and m.meta.colors == [[1, 1, 1]] * 2
    assert m.net.classifier.low_classifier.out_channels == 2
    assert TorchvisionSegmenter("lraspp_mobilenet_v3_large", 2).meta.class_names == [
        "class0",
        "class1",
    ]
    d = TorchvisionSegmenter("deeplabv3_mobilenet_v3_large", 1)
    assert d.net.aux_classifier is None and d.net.classifier[-1].out_channels == 2
    assert "fcn_resnet50" in TV_SEGMENTERS
    with pytest.raises(ValueError, match="expected one of .*got 'x'"):
        TorchvisionSegmenter("x", 2)


def test_defaults_of_the_builders():
    f = FCN(2)
    assert (f.meta.name, f.variant, f.meta.input_size, f.meta.task) == (
        "fcn8s_resnet18",
        8,
        256,
        "segmentation",
    )
    d = DilatedSegmenter(2)
    assert (d.meta.name, d.meta.input_size, d.head[0].out_channels) == (
        "dilated_context_resnet18",
        256,
        128,
    )
    assert d.meta.task == "segmentation" and d.meta.background and d.meta.colors == []
    t = TorchvisionSegmenter("lraspp_mobilenet_v3_large", 2)
    assert t.meta.input_size == 256 and t.meta.mean == (0.485, 0.456, 0.406)


def test_pretrained_backbones_are_loaded_from_the_package():
    from vision.models.efficientnet import weights_file

    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    stem = state["_conv_stem.weight"]
    f = FCN(2, backbone="lite0", weights_backbone="imagenet", background=False)
    d = DilatedSegmenter(2, backbone="lite0", weights_backbone="imagenet", width=8)
    for m in (f, d):
        assert torch.equal(m.backbone.layers[0][0].weight, stem)
        assert (m.meta.mean, m.meta.std) == ((0.5,) * 3, (0.5,) * 3)
    assert f.meta.background is False and d.meta.task == "segmentation"


def test_fcn_skips_are_added_after_cropping():
    torch.manual_seed(0)
    m = FCN(2, 8, "resnet_slim").eval()
    for layer in (m.score16, m.score8):
        nn.init.normal_(layer.weight, std=0.1)
        nn.init.constant_(layer.bias, 0.5)
    x = torch.rand(1, 3, 70, 50)
    with torch.no_grad():
        got = m(x)
        f = m.backbone(m.normalize(x))
        s = m.score32(m.head(f[32]))
        k16 = m.score16(f[16])
        s = fit(m.up2a(s), *k16.shape[-2:]) + k16
        k8 = m.score8(f[8])
        s = fit(m.up2b(s), *k8.shape[-2:]) + k8
        want = fit(m.up_final(s), 70, 50)
    assert got.shape == (1, 3, 70, 50) and torch.allclose(got, want, atol=1e-6)
