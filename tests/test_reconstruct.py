"""Least-squares reconstruction after pruning: the fit is exact where a linear map exists, and
a pruned network refitted on a few images is much closer to the unpruned one on other images."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vision.models import build_model
from vision.models.common import ModelMeta, Segmenter
from vision.prune import _prune_ratio, prune_flops
from vision.reconstruct import _fit, _order, _sampled, reconstruct

SIZE = 64


@pytest.mark.parametrize("bias", [True, False])
def test_fit_recovers_a_linear_map(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, bias=bias)
    w, b = torch.randn(5, 27), torch.randn(5) if bias else torch.zeros(5)
    x = torch.randn(400, 27)
    conv.weight.data.zero_()  # the ridge pulls towards the present weights: start elsewhere
    _fit(conv, x, x @ w.T + b, ridge=1e-9)
    assert torch.allclose(conv.weight.reshape(5, 27), w, atol=1e-4)
    if bias:
        assert torch.allclose(conv.bias, b, atol=1e-4)


def test_fit_ridge_is_scale_free_and_pulls_towards_the_present_weights():
    torch.manual_seed(0)
    x, w = torch.randn(60, 12), torch.randn(4, 12)
    y = x @ w.T + 0.3 * torch.randn(60, 4)  # noisy: the ridge's pull shows
    start = torch.randn(4, 3, 2, 2)

    def fitted(scale: float, ridge: float) -> torch.Tensor:
        conv = nn.Conv2d(3, 4, 2, bias=False)
        conv.weight.data.copy_(start)
        _fit(conv, scale * x, scale * y, ridge)
        return conv.weight.detach().reshape(4, 12)

    # relative to the inputs' scale: the same fit whatever units x and y come in
    assert torch.allclose(fitted(1.0, 0.5), fitted(30.0, 0.5), atol=1e-5)
    # a huge ridge keeps the present weights, a tiny one gives plain least squares
    assert torch.allclose(fitted(1.0, 1e6), start.reshape(4, 12), atol=1e-4)
    lstsq = torch.linalg.lstsq(x.double(), y.double()).solution.T.float()
    assert torch.allclose(fitted(1.0, 1e-9), lstsq, atol=1e-4)
    between = fitted(1.0, 0.5)  # strictly between the two answers
    assert 0 < (between - lstsq).norm() < (start.reshape(4, 12) - lstsq).norm()


def test_sampled_rows_take_the_same_positions_of_every_image_for_a_seed():
    t = torch.arange(2 * 3 * 10).reshape(2, 3, 10)  # (B, C, L): each entry names itself
    rows = _sampled(t, 4, seed=7)
    assert rows.shape == (8, 3)
    pos = [int(r[0]) % 10 for r in rows]  # the position each row was read at
    assert len(set(pos[:4])) == 4 and pos[:4] == pos[4:]  # 4 distinct, the same in both images
    for b, r in enumerate(rows.reshape(2, 4, 3)):
        assert torch.equal(r, t[b, :, pos[b * 4 : b * 4 + 4]].T)
    assert torch.equal(_sampled(t, 4, seed=7), rows)
    assert not torch.equal(_sampled(t, 4, seed=8), rows)
    every = _sampled(t, 25, seed=7)  # more asked than there are: every position once
    assert every.shape == (20, 3) and sorted(int(r[0]) for r in every[:10]) == list(range(10))


def _outputs(model, x):
    """Class scores (segmenter); class, box and centerness maps of every level (detector)."""
    from vision.deploy import DetectorNetwork

    with torch.no_grad():
        if model.meta.task == "segmentation":
            return model.eval()(x)
        return torch.cat([y.flatten(1) for y in DetectorNetwork(model).eval()(x)], 1)


@pytest.mark.parametrize("name", ["fcn8s_lite0", "fcos_lite0"])
def test_reconstruction_brings_the_pruned_network_back_towards_the_original(name):
    torch.manual_seed(0)
    original = build_model(name, 3, input_size=SIZE).eval()
    pruned = copy.deepcopy(original)
    kept = prune_flops(pruned, 0.4)["kept"]
    assert kept and all(v == sorted(set(v)) for v in kept.values())
    fit_on = [torch.rand(4, 3, SIZE, SIZE) for _ in range(3)]
    held_out = torch.rand(4, 3, SIZE, SIZE)
    ref = _outputs(original, held_out)
    before = (_outputs(pruned, held_out) - ref).pow(2).mean()
    plain = sum(type(m) is nn.Conv2d and m.groups == 1 for m in pruned.modules())
    assert reconstruct(original, pruned, fit_on, kept) == plain
    after = (_outputs(pruned, held_out) - ref).pow(2).mean()
    # an untrained detector's head outputs are mostly noise, and its deep layers see a few
    # positions at this size: a smaller gain there (trained, 160 px: AP 0.27 -> 0.44 unrefined)
    assert after < (0.8 if name.startswith("fcos") else 0.15) * before, (
        float(before),
        float(after),
    )


def test_kept_channels_name_the_originals_and_an_unchanged_input_refits_exactly():
    torch.manual_seed(0)
    original = build_model("fcn8s_slim", 3, input_size=SIZE).eval()
    pruned = copy.deepcopy(original)
    kept = prune_flops(pruned, 0.4)["kept"]
    # the stem sees the image in both networks: its kept rows are the original's, and the
    # refit (same inputs, targets from the original rows) must give them back
    stem = next(n for n, m in pruned.named_modules() if type(m) is nn.Conv2d and m.in_channels == 3)
    rows = original.get_submodule(stem).weight[kept[stem]]
    assert len(kept[stem]) < original.get_submodule(stem).out_channels
    assert torch.equal(pruned.get_submodule(stem).weight, rows)
    with torch.no_grad():
        pruned.get_submodule(stem).weight.mul_(0.5)  # start the fit away from the answer
    reconstruct(original, pruned, [torch.rand(4, 3, SIZE, SIZE) for _ in range(2)], kept)
    # the ridge pulls a little towards the start: within 5 % of the way back
    miss = (pruned.get_submodule(stem).weight - rows).norm() / (0.5 * rows).norm()
    assert miss < 0.05, float(miss)


class _Small(Segmenter):
    """stem 3→16 (stride 2), depthwise 3x3, then 1x1 16→16 and 1x1 scores 16→2 shared by two
    scales (as a detector's head is by its FPN levels), declared out of forward order.
    Every odd channel is half the even one before it (weights and biases halved, ReLU keeps
    the ratio) and weighs half as much where it is read: magnitude pruning removes the odd
    ones, and a refit of the kept weights can give every output back."""

    def __init__(self):
        super().__init__()
        self.score = nn.Conv2d(16, 2, 1)
        self.mid = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.meta = ModelMeta("small", "segmentation", ["a"], 16)
        half = torch.tensor([1.0, 0.5]).repeat(8)
        with torch.no_grad():
            for conv in (self.stem, self.mid):  # rows: an odd output is half the even one
                conv.weight.copy_(
                    conv.weight[0::2].repeat_interleave(2, 0) * half[:, None, None, None]
                )
                conv.bias.copy_(conv.bias[0::2].repeat_interleave(2) * half)
            for conv in (self.mid, self.score):  # columns: odd inputs weigh half
                conv.weight.copy_(
                    conv.weight[:, 0::2].repeat_interleave(2, 1) * half[:, None, None]
                )
            self.dw.weight.copy_(self.dw.weight[0::2].repeat_interleave(2, 0))
            self.dw.bias.copy_(self.dw.bias[0::2].repeat_interleave(2) * half)

    def forward(self, x):
        x = torch.relu(self.dw(torch.relu(self.stem(x))))
        coarse = self.score(torch.relu(self.mid(nn.functional.avg_pool2d(x, 2))))
        fine = self.score(torch.relu(self.mid(x)))
        return nn.functional.interpolate(
            fine + nn.functional.interpolate(coarse, scale_factor=2), scale_factor=2
        )


def test_small_network_refits_in_forward_order_and_comes_back_towards_the_original():
    torch.manual_seed(0)
    original = _Small().eval()
    pruned = copy.deepcopy(original)
    _, kept = _prune_ratio(pruned, 0.5, "magnitude", "all", None, "layer")
    assert kept == dict.fromkeys(["stem", "dw", "mid"], list(range(0, 16, 2)))
    x = torch.rand(1, 3, 16, 16)
    # once each, though mid and score run twice; the depthwise layer only rescales
    assert _order(pruned, x) == ["stem", "mid", "score"]
    held_out = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        ref = original(held_out)
        before = (pruned(held_out) - ref).pow(2).mean()
    fit_on = [torch.rand(4, 3, 16, 16) for _ in range(3)]
    exact = copy.deepcopy(pruned)
    assert reconstruct(original, pruned, fit_on, kept, positions=64) == 3
    reconstruct(original, exact, fit_on, kept, positions=64, ridge=1e-8)
    with torch.no_grad():
        after = (pruned(held_out) - ref).pow(2).mean()
        least = (exact(held_out) - ref).pow(2).mean()
    # the outputs can come back whole: all but the default ridge's pull to the sliced weights
    assert after < 0.05 * before and least < 1e-6 * before, (
        float(before),
        float(after),
        float(least),
    )
    # the stem reads the image in both networks: its refit gives the original's kept rows
    torch.testing.assert_close(
        pruned.stem.weight, original.stem.weight[kept["stem"]], atol=2e-3, rtol=0
    )
    torch.testing.assert_close(
        pruned.stem.bias, original.stem.bias[kept["stem"]], atol=2e-3, rtol=0
    )
