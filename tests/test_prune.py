"""Structured pruning: channels really go (parameters and FLOPs drop by the asked share), the
outputs keep their shape, training still runs, and a pruned checkpoint reloads through the
registry from what it records."""

from __future__ import annotations

import pytest
import torch

from vision.engine.checkpoint import save_checkpoint
from vision.models import build_model
from vision.predictor import Predictor
from vision.prune import prune_flops

# fcos_r18: as fcos_slim; the Lite0 models (the defaults) have depthwise and "SAME" convolutions
SUPPORTED = ["fcn8s_slim", "fcn32s", "dilated_slim", "fcos_slim", "fcn8s_lite0", "fcos_lite0",
             "dilated_lite0"]  # fmt: skip
SIZE = 96


@pytest.mark.parametrize("name", SUPPORTED)
def test_pruned_models_shrink_run_and_reload(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 4, input_size=SIZE)
    x = torch.rand(2, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        before = model(x)
    params = sum(p.numel() for p in model.parameters())
    report = prune_flops(model, 0.4)
    assert report["flops_cut"] == pytest.approx(0.4, abs=0.01)
    assert 1 <= report["trials"] <= 2  # the first guess, else one fit of the FLOPs curve
    assert sum(p.numel() for p in model.parameters()) == report["params_after"] < params * 0.75
    model.eval()
    with torch.no_grad():
        after = model(x)
    if model.meta.task == "segmentation":
        assert after.shape == before.shape  # (B, classes + 1, H, W)
        model.train()
        model(x).mean().backward()
    else:
        assert all(set(a) == {"boxes", "scores", "labels"} for a in after)
        model.train()
        tg = [{"boxes": torch.tensor([[5.0, 5, 40, 40]]), "labels": torch.tensor([1])}] * 2
        sum(model(x, tg).values()).backward()
        from vision.engine.distill import Distiller  # the unpruned model can teach it

        assert Distiller(model, build_model(name, 4, input_size=SIZE)).adapter is not None
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    path = tmp_path / "pruned.pt"
    save_checkpoint({"model": model.state_dict(), "meta": model.meta.as_dict(), "args": {}}, path)
    again = Predictor.from_checkpoint(path)  # rebuilt from the registry + recorded shapes
    assert again.model.meta.pruned["flops_cut"] == report["flops_cut"]
    model.eval()
    with torch.no_grad():
        a, b = model(x), again.model(x)
    if torch.is_tensor(a):
        assert torch.allclose(a, b, atol=1e-5)
    else:
        assert all(torch.allclose(p["scores"], q["scores"]) for p, q in zip(a, b, strict=True))


def test_inner_scope_keeps_the_widths_residual_sums_tie():
    from vision.models.efficientnet import MBConv

    torch.manual_seed(0)
    model = build_model("fcn8s_lite0", 4, input_size=SIZE)
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    outs = [b._project_conv.out_channels for b in blocks]
    mids = [b._depthwise_conv.out_channels for b in blocks]
    report = prune_flops(model, 0.3, scope="inner")
    assert report["scope"] == "inner" and report["flops_cut"] == pytest.approx(0.3, abs=0.01)
    assert report["trials"] <= 2
    # the widths residual sums tie stay whole (a stage of one block has no sum: it may narrow)
    tied = [i for i, b in enumerate(blocks) if b.residual]
    assert tied and all(blocks[i]._project_conv.out_channels == outs[i] for i in tied)
    assert all(blocks[i - 1]._project_conv.out_channels == outs[i - 1] for i in tied)
    # the expanded channels inside the blocks go, depthwise and its BatchNorm with them
    new = [b._depthwise_conv.out_channels for b in blocks]
    assert sum(new) < 0.8 * sum(mids) and all(0 < n <= m for n, m in zip(new, mids, strict=True))
    for b, n in zip(blocks, new, strict=True):
        assert b._bn1.num_features == b._depthwise_conv.groups == n
    with pytest.raises(ValueError, match=r"scope: expected one of \('all', 'inner'\), got 'x'"):
        prune_flops(model, 0.3, scope="x")


def test_inner_scope_on_a_resnet_prunes_only_each_blocks_first_convolution():
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 4, input_size=SIZE)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    outs = [b.conv2.out_channels for b in blocks]
    prune_flops(model, 0.3, scope="inner")
    assert [b.conv2.out_channels for b in blocks] == outs
    assert all(b.conv1.out_channels < b.conv2.out_channels for b in blocks)


def test_recalibrated_statistics_are_the_average_over_the_batches():
    from vision.prune import recalibrate_bn

    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 4, input_size=SIZE).eval()
    bn = model.backbone.layers[0][1]  # the stem's first BatchNorm, after its first conv
    conv = model.backbone.layers[0][0]
    bn.momentum = 0.05
    batches = [torch.rand(2, 3, SIZE, SIZE) for _ in range(3)]
    assert recalibrate_bn(model, iter(batches)) == 6
    with torch.no_grad():
        y = torch.cat([conv(model.normalize(x)) for x in batches])
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), atol=1e-5)
    var = torch.stack([conv(model.normalize(x)).var((0, 2, 3)) for x in batches]).mean(0)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)  # unbiased per batch, averaged
    assert bn.momentum == 0.05 and not model.training and bn.num_batches_tracked == 3


def test_rounded_widths_are_multiples_of_round_to():
    from torch import nn

    torch.manual_seed(0)
    model = build_model("fcos_lite0", 4, input_size=SIZE)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    report = prune_flops(model, 0.4, round_to=8, tolerance=0.03)
    assert report["round_to"] == 8 and report["flops_cut"] == pytest.approx(0.4, abs=0.03)
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    cut = {n: c for n, c in after.items() if c != before[n]}
    assert len(cut) > 20 and all(c % 8 == 0 for c in cut.values())


def test_recalibration_of_a_detector_runs_its_backbone_and_fpn():
    from torch import nn

    from vision.prune import recalibrate_bn

    torch.manual_seed(0)
    model = build_model("fcos_lite0", 4, input_size=SIZE).eval()
    norms = [m for m in model.net.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = norms[0].running_mean.clone()
    assert recalibrate_bn(model, [torch.rand(2, 3, SIZE, SIZE)] * 2) == 4
    assert all(m.num_batches_tracked == 2 for m in norms) and not model.training
    assert not torch.allclose(norms[0].running_mean, before)


@pytest.mark.parametrize("name", ["fcos_lite0", "fcos_slim"])
def test_detector_head_towers_lose_whole_groupnorm_groups(name):
    from torch import nn

    torch.manual_seed(0)
    model = build_model(name, 4, input_size=SIZE)
    head = model.net.head
    norms = {n: m for n, m in head.named_modules() if isinstance(m, nn.GroupNorm)}
    ends = ("_logits", "_reg", "_ctrness")
    finals = {n: m.out_channels for n, m in head.named_modules() if n.endswith(ends)}
    with torch.no_grad():  # tag every channel with its index, to see which ones stay
        for gn in norms.values():
            gn.weight.copy_(torch.arange(gn.num_channels, dtype=torch.float32))
    report = prune_flops(model, 0.4)
    assert report["flops_cut"] == pytest.approx(0.4, abs=0.01)
    for n, gn in norms.items():
        assert gn.num_channels < 64 and gn.num_channels == 2 * gn.num_groups, n  # 2 per group
        kept = gn.weight.detach().long().tolist()
        assert kept == sorted(kept) and all(  # whole groups (2j, 2j + 1): nothing regrouped
            kept[i] % 2 == 0 and kept[i + 1] == kept[i] + 1 for i in range(0, len(kept), 2)
        ), (n, kept)
    assert {n: m.out_channels for n, m in head.named_modules() if n in finals} == finals


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_global_ranking_cuts_layers_unevenly_to_the_asked_flops(importance):
    from torch import nn

    from vision.engine.losses import segmentation_loss

    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 4, input_size=SIZE)
    calls = []

    def losses():  # Taylor: two training batches, read once whatever the number of trials
        calls.append(1)
        for _ in range(2):
            x, y = torch.rand(2, 3, SIZE, SIZE), torch.randint(0, 5, (2, SIZE, SIZE))
            yield segmentation_loss(model(x), y, "ce")

    def convs() -> dict[str, int]:
        return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}

    before = convs()
    taylor = importance == "taylor"
    report = prune_flops(model, 0.45, importance, losses if taylor else None, ranking="global")
    assert report["ranking"] == "global" and report["flops_cut"] == pytest.approx(0.45, abs=0.01)
    assert len(calls) == int(taylor) and report["trials"] <= 3
    cuts = [1 - c / before[n] for n, c in convs().items() if before[n] > 4]
    assert min(cuts) < 0.1 and max(cuts) > 0.4  # uneven (a uniform cut here is ~0.26 each)
    assert max(cuts) <= 0.8  # MAX_LAYER_CUT
    assert all(p.grad is None for p in model.parameters())  # the Taylor gradients are gone
    model.eval()
    assert model(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 5, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"ranking: expected one of \('layer', 'global'\)"):
        prune_flops(model, 0.3, ranking="all")


@pytest.mark.parametrize("name", ["fcos_slim", "fcn8s_slim", "dilated_slim"])
def test_the_layers_kept_whole_are_exactly_the_class_box_and_score_outputs(name):
    """What ``traced_network`` keeps: a detector's final class, box and centerness layers (in
    every head), a segmenter's layers whose outputs are the class scores (background + 4)."""
    from torch import nn

    from vision.prune import traced_network

    model = build_model(name, 4, input_size=SIZE)
    net, keep = traced_network(model)
    names = {m: n for n, m in model.named_modules()}
    if model.meta.task == "detection":
        assert not net.training and net is not model  # the traced wrapper, in eval mode
        assert sorted(names[m] for m in keep) == [
            "net.head.classification_head.cls_logits",
            "net.head.regression_head.bbox_ctrness",
            "net.head.regression_head.bbox_reg",
        ]
        return
    assert net is model
    outs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert keep and all(m.out_channels == 5 for m in keep)
    assert {m for m in outs if m.out_channels == 5} == set(keep)


def test_a_tight_tolerance_is_met_with_secant_steps():
    """Channel counts are whole, so the FLOPs cut moves in steps: 0.002 takes more than the
    first guess and the fitted one, and the secant steps after them get there."""
    torch.manual_seed(0)
    model = build_model("dilated_slim", 4, input_size=64)
    report = prune_flops(model, 0.4, tolerance=0.002)
    assert abs(report["flops_cut"] - 0.4) <= 0.002 and 3 <= report["trials"] <= 5


def test_an_unreachable_tolerance_stops_after_eight_trials_at_the_closest():
    """fcn8s_slim's FLOPs move in steps wider than 0.002 around 0.4: the search gives up
    after eight pruned copies and keeps the closest of them."""
    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 4, input_size=64)
    report = prune_flops(model, 0.4, tolerance=0.002)
    assert report["trials"] == 8 and abs(report["flops_cut"] - 0.4) < 0.01
