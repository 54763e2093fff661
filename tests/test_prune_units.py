"""Pruning's pieces on hand-made layers: GroupNorm groups ranked and removed whole, the
argument checks, MAC counting, copies with gradients, and rebuilding layers to a pruned state
dict's shapes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vision.models.common import ModelMeta, Segmenter
from vision.models.reshape import _resized, fit_to_state_dict
from vision.prune import (
    _copy,
    _group_norm_pruner,
    _group_size,
    _GroupAverage,
    _prune_ratio,
    hooked_forward,
    macs,
    prune_flops,
)


def _group(*modules: nn.Module) -> list:
    """A stand-in for a Torch-Pruning group: (dependency, indices) pairs naming their layer."""
    return [(SimpleNamespace(target=SimpleNamespace(module=m)), []) for m in modules]


def test_group_average_scores_whole_groups_and_ranks_ties_by_position():
    imp = torch.tensor([1.0, 3, 10, 0, 2, 2])  # three groups of two: means 2, 5, 2
    group = _group(nn.Conv2d(3, 6, 1), nn.GroupNorm(3, 6))
    means = _GroupAverage(lambda g: imp, ranks=False)(group)
    assert means.tolist() == [2, 2, 5, 5, 2, 2]  # a global ranking compares these
    ranks = _GroupAverage(lambda g: imp)(group)
    assert ranks.tolist() == [0, 0, 2, 2, 1, 1]  # the tie (groups 0 and 2): the first first
    ties = _GroupAverage(lambda g: torch.ones(64))(_group(nn.GroupNorm(32, 64)))
    assert ties.tolist() == torch.arange(32.0).repeat_interleave(2).tolist()  # a stable sort


def test_group_average_under_a_cap_keeps_each_layers_best_out_of_reach():
    inf = float("inf")
    imp = torch.tensor([5.0, 1, 3, 2, 4])
    conv = _group(nn.Conv2d(3, 5, 1))
    assert _GroupAverage(lambda g: imp, False, 0.8)(conv).tolist() == [inf, 1, 3, 2, 4]
    assert _GroupAverage(lambda g: imp, False, 0.5)(conv).tolist() == [inf, 1, inf, 2, inf]
    assert imp.tolist() == [5, 1, 3, 2, 4]  # the base's scores are left as they were
    gn = _group(nn.GroupNorm(3, 6))  # group means 2, 5, 2: the best group stays whole
    got = _GroupAverage(lambda g: torch.tensor([1.0, 3, 10, 0, 2, 2]), False, 0.8)(gn)
    assert got.tolist() == [2, 2, inf, inf, 2, 2]


def test_group_average_passes_other_groups_through_and_checks_the_count():
    imp = torch.tensor([3.0, 1, 2])
    assert _GroupAverage(lambda g: imp)(_group(nn.Conv2d(3, 3, 1))) is imp  # no GroupNorm
    assert _GroupAverage(lambda g: None)(_group(nn.GroupNorm(1, 2))) is None  # unprunable
    with pytest.raises(ValueError, match="^GroupNorm pruning: expected 4 channel scores, got 3$"):
        _GroupAverage(lambda g: imp)(_group(nn.GroupNorm(2, 4)))


def test_group_norm_pruner_removes_whole_groups_and_lowers_their_count():
    pruner = _group_norm_pruner()
    gn = nn.GroupNorm(3, 6)
    with torch.no_grad():
        gn.weight.copy_(torch.arange(6.0))
    assert pruner.prune_out_channels(gn, [2, 3]) is gn
    assert (gn.num_groups, gn.num_channels) == (2, 4) and gn.weight.tolist() == [0, 1, 4, 5]
    with pytest.raises(
        ValueError,
        match=r"^GroupNorm pruning: expected whole groups of 2 channels, got channels \[0, 3\]$",
    ):
        pruner.prune_in_channels(gn, [3, 0])
    # channels are ranked one by one: Torch-Pruning must not split them into channel groups
    assert pruner.get_out_channel_groups(gn) == pruner.get_in_channel_groups(gn) == 1


def test_group_size_is_the_channels_per_group_of_every_groupnorm():
    assert _group_size(nn.Sequential(nn.Conv2d(3, 4, 1))) == 1
    assert _group_size(nn.Sequential(nn.GroupNorm(4, 8), nn.GroupNorm(2, 4))) == 2
    with pytest.raises(
        ValueError, match=r"^GroupNorm: expected one channel count per group, got \[2, 4\]$"
    ):
        _group_size(nn.Sequential(nn.GroupNorm(4, 8), nn.GroupNorm(2, 8)))


IMPORTANCE_ERROR = r"^importance: expected one of \('magnitude', 'bn', 'taylor'\), got 'l1'$"
TAYLOR_ERROR = r"^Taylor importance needs training batches \(loss_batches\)$"
TAYLOR_NO_GRADIENTS = r"^Taylor importance: expected gradients of training losses, found none$"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flops_ratio": 0.3, "importance": "l1"}, IMPORTANCE_ERROR),
        ({"flops_ratio": 0.0}, r"^FLOPs ratio: expected a fraction in \(0, 1\), got 0.0$"),
        ({"flops_ratio": 1.0}, r"^FLOPs ratio: expected a fraction in \(0, 1\), got 1.0$"),
        ({"flops_ratio": 1.5}, r"^FLOPs ratio: expected a fraction in \(0, 1\), got 1.5$"),
        ({"flops_ratio": 0.3, "scope": "x"}, r"^pruning scope: expected one of \('all', 'inner'\)"),
        ({"flops_ratio": 0.3, "importance": "taylor"}, TAYLOR_ERROR),
    ],
)
def test_prune_flops_refuses_bad_arguments_before_any_work(kwargs, message):
    model = nn.Conv2d(3, 4, 1)  # never reached: the checks come first
    with pytest.raises(ValueError, match=message):
        prune_flops(model, **kwargs)


def test_macs_count_every_convolution_transposed_convolution_and_linear_layer():
    net = nn.Sequential(
        nn.Conv2d(3, 8, (3, 2), padding=(1, 0)),  # 8x7 out: 56 px * 8 * 3 * (3 * 2)
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 56 * 8 * 1 * 9
        nn.ConvTranspose2d(8, 4, (2, 3), stride=(2, 1), padding=(0, 1)),  # per input: 4 * 6
        nn.Flatten(),
        nn.Linear(4 * 16 * 7, 10),  # the transposed conv's 16x7 output
    )
    x = torch.rand(1, 3, 8, 8)
    expected = 56 * 8 * 3 * 6 + 56 * 8 * 9 + (8 * 56) * 4 * 6 + 10 * 448
    assert macs(net, x) == expected
    assert macs(net, torch.rand(2, 3, 8, 8)) == 2 * expected  # per batch element
    assert not any(m._forward_hooks for m in net.modules())  # hooks gone afterwards


def test_hooked_forward_removes_its_hooks_when_the_forward_fails():
    conv = nn.Conv2d(3, 4, 1)
    seen = []
    hooked_forward(conv, torch.rand(1, 3, 2, 2), [(conv, lambda m, i, o: seen.append(o))])
    assert len(seen) == 1 and not seen[0].requires_grad  # without gradients
    with pytest.raises(RuntimeError):
        hooked_forward(conv, torch.rand(1, 5, 2, 2), [(conv, lambda m, i, o: None)])
    assert not conv._forward_hooks


def test_copies_keep_the_gradients_deepcopy_leaves_out():
    model = nn.Linear(2, 3)
    model(torch.ones(1, 2)).sum().backward()
    twin = _copy(model)
    assert torch.equal(twin.weight.grad, model.weight.grad)
    assert twin.weight.grad is not model.weight.grad and twin.weight is not model.weight
    model.bias.grad = None
    assert _copy(model).bias.grad is None


def test_layers_are_rebuilt_to_the_pruned_shapes_keeping_their_settings():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, dilation=1, bias=False)
    new = _resized(conv, torch.zeros(10, 6, 3, 3))
    assert (new.in_channels, new.out_channels, new.stride, new.padding) == (6, 10, (2, 2), (1, 1))
    assert new.bias is None and type(new) is nn.Conv2d
    dw = _resized(nn.Conv2d(8, 8, 3, groups=8), torch.zeros(5, 1, 3, 3))  # depthwise stays so
    assert (dw.in_channels, dw.out_channels, dw.groups) == (5, 5, 5)
    grouped = _resized(nn.Conv2d(8, 8, 3, groups=2), torch.zeros(6, 2, 3, 3))
    assert (grouped.in_channels, grouped.out_channels, grouped.groups) == (4, 6, 2)
    up = _resized(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), torch.zeros(6, 3, 4, 4))
    assert (up.in_channels, up.out_channels, up.stride, up.padding) == (6, 3, (2, 2), (1, 1))
    bn = _resized(nn.BatchNorm2d(8, eps=1e-3, momentum=0.2), torch.zeros(5))
    assert (bn.num_features, bn.eps, bn.momentum) == (5, 1e-3, 0.2)
    gn = _resized(nn.GroupNorm(4, 8, eps=1e-4), torch.zeros(6))  # 2 channels a group stay
    assert (gn.num_groups, gn.num_channels, gn.eps) == (3, 6, 1e-4)
    assert _resized(nn.Linear(3, 4), torch.zeros(2, 3)) is None


def test_fit_to_state_dict_reshapes_only_the_layers_that_differ():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    pruned = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Conv2d(5, 4, 1))
    keep = model[0].weight.shape
    assert fit_to_state_dict(model, pruned.state_dict()) == 3
    model.load_state_dict(pruned.state_dict())
    assert model[0].weight.shape != keep and model[1].num_features == 5
    assert fit_to_state_dict(model, pruned.state_dict()) == 0  # already fits


class _SeqSegmenter(nn.Sequential, Segmenter):
    """Layers in a row that answer what pruning asks of a segmenter (its score layers...)."""


class _Tiny(Segmenter):
    """conv 3→8, BatchNorm, ReLU, 1x1 score conv 8→2 (background + one class): only the first
    convolution's 8 channels can go."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.score = nn.Conv2d(8, 2, 1)
        self.meta = ModelMeta("tiny", "segmentation", ["a"], 8)
        with torch.no_grad():  # every channel alike but for the first conv's weights ...
            self.conv.weight.fill_(1.0)
            self.score.weight.fill_(0.1)
            self.conv.weight[0] = 0.3  # 27 weights of 0.3: L2 1.56, but sum |w|^3 0.73
            self.conv.weight[1] = 0.0
            self.conv.weight[1, 0, 0, 0] = 1.2  # one weight: L2 1.2, sum |w|^3 1.73
            self.bn.weight[5] = 0.01  # ... and the BatchNorm scales

    def forward(self, x):
        return self.score(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize("importance, gone", [("magnitude", 1), ("bn", 5)])
def test_one_pruning_step_removes_the_least_important_channel(importance, gone):
    """L2 magnitude: channel 1 (one weight of 1.2) goes before channel 0 (27 of 0.3; an L3
    norm would rank them the other way); BatchNorm scale (network slimming): channel 5."""
    model = _Tiny()
    report, kept = _prune_ratio(model, 1 / 8, importance, "all", None, "layer")
    assert kept == {"conv": [c for c in range(8) if c != gone]}
    assert model.conv.out_channels == model.bn.num_features == model.score.in_channels == 7
    assert model.score.out_channels == 2 and model.meta.pruned is report
    size = 8 * 8  # output pixels of one 8x8 image
    before, after = size * 8 * 27 + size * 2 * 8, size * 7 * 27 + size * 2 * 7
    assert (report["macs_before"], report["macs_after"]) == (before, after)
    assert report["flops_cut"] == pytest.approx(1 - after / before)
    # conv weights and biases, BatchNorm scales and shifts, score weights and biases
    assert report["params_before"] == 8 * 27 + 8 + 2 * 8 + 8 * 2 + 2
    assert report["params_after"] == 7 * 27 + 7 + 2 * 7 + 7 * 2 + 2
    assert {k: report[k] for k in ("channel_ratio", "importance", "scope", "ranking")} == {
        "channel_ratio": 1 / 8,
        "importance": importance,
        "scope": "all",
        "ranking": "layer",
    }
    assert report["round_to"] is None and not model.training


class _Two(Segmenter):
    """Two prunable convolutions (a, b) of 8 channels: seven of a's are dead (zero weights in
    every layer they touch), b's differ (channel i weighs 0.5 + 0.05 i)."""

    def __init__(self, group_norm: bool = False):
        super().__init__()
        norm = (lambda c: nn.GroupNorm(4, c)) if group_norm else nn.BatchNorm2d
        self.a, self.na = nn.Conv2d(3, 8, 3, padding=1), norm(8)
        self.b, self.nb = nn.Conv2d(8, 8, 3, padding=1), norm(8)
        self.score = nn.Conv2d(8, 2, 1)
        self.meta = ModelMeta("two", "segmentation", ["x"], 8)
        with torch.no_grad():
            self.score.weight.fill_(0.5)
            self.a.weight.zero_()
            self.a.weight[7] = 1.0
            self.na.weight[:7] = 0.0
            for i in range(8):
                self.b.weight[i] = 0.5 + 0.05 * i
            self.b.weight[:, :7] = 0.0

    def forward(self, x):
        return self.score(torch.relu(self.nb(self.b(torch.relu(self.na(self.a(x)))))))


def test_global_ranking_caps_each_layer_and_takes_the_rest_elsewhere():
    """Half of the 16 channels go: a's seven dead ones are the lowest, but a may lose only
    floor(0.8 x 8) = 6 (Torch-Pruning's own cap let all seven go in one step), so b's two
    weakest go too."""
    _, kept = _prune_ratio(_Two(), 0.5, "magnitude", "all", None, "global")
    assert len(kept["a"]) == 2 and 7 in kept["a"] and kept["b"] == [2, 3, 4, 5, 6, 7]


def test_global_ranking_compares_groupnorm_group_averages_across_layers():
    """With GroupNorm (groups of two) the global ranking compares group averages: a's three
    dead groups go, then b's weakest (ranks within each layer would cut both alike)."""
    model = _Two(group_norm=True)
    _, kept = _prune_ratio(model, 0.5, "magnitude", "all", None, "global")
    assert kept == {"a": [6, 7], "b": [2, 3, 4, 5, 6, 7]}
    assert (model.na.num_groups, model.nb.num_groups) == (1, 3)


def test_taylor_importance_without_gradients_is_refused():
    with pytest.raises(ValueError, match=TAYLOR_NO_GRADIENTS):
        prune_flops(_Tiny(), 0.3, "taylor", lambda: [])  # no loss: nothing to differentiate


def test_a_cut_beyond_what_can_be_pruned_stops_at_the_closest_reachable():
    """Every MAC of the tiny model scales with its 8 channels (cut = channels gone / 8), and
    at least one channel stays: 0.95 is out of reach; the search stays real-valued (the fit
    would ask for more than all of the prunable share) and keeps its closest try."""
    model = _Tiny()
    report = prune_flops(model, 0.95)
    assert model.conv.out_channels == 1 and report["flops_cut"] == pytest.approx(7 / 8)
    (kept,) = report["kept"]["conv"]  # one of the five strong channels (they tie)
    assert report["flops_ratio_asked"] == 0.95 and kept in (2, 3, 4, 6, 7)
    assert model.meta.pruned["flops_ratio_asked"] == 0.95 and "kept" not in model.meta.pruned


@pytest.mark.parametrize("ranking, lo, hi", [("layer", 0.8, 0.95), ("global", 0.3, 0.7 + 1e-9)])
def test_a_global_share_of_channels_stays_under_the_layer_cap(ranking, lo, hi):
    """A large ask: per layer the share of channels may go up to 0.95; globally it stays
    0.1 under MAX_LAYER_CUT, so every layer's capped channels can still meet it."""
    from vision.models import build_model

    torch.manual_seed(0)
    model = build_model("fcn8s_slim", 4, input_size=32)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    report = prune_flops(model, 0.97, ranking=ranking)
    assert lo <= report["channel_ratio"] <= hi
    cuts = [1 - m.out_channels / before[n] for n, m in model.named_modules() if n in before]
    assert (max(cuts) > 0.8) == (ranking == "layer")  # the cap binds the global ranking only
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5, 32, 32)


def test_widths_stay_whole_groupnorm_groups_of_any_size():
    """Three channels a group: a quarter of 12 channels goes as one whole group (9 stay), not
    rounded to the next even width."""
    model = _SeqSegmenter(nn.Conv2d(3, 12, 3, padding=1), nn.GroupNorm(4, 12), nn.Conv2d(12, 2, 1))
    model.meta = ModelMeta("g", "segmentation", ["x"], 8)
    report, kept = _prune_ratio(model, 0.25, "magnitude", "all", None, "layer")
    assert len(kept["0"]) == 9 and report["round_to"] == 3 and model[1].num_groups == 3


def test_rebuilt_layers_keep_every_construction_setting():
    up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, dilation=2)
    new = _resized(up, torch.zeros(6, 3, 3, 3))
    assert (new.output_padding, new.dilation, new.groups) == ((1, 1), (2, 2), 1)
    assert new.bias is not None and new.bias.shape == (3,)
    assert _resized(nn.ConvTranspose2d(8, 4, 2, bias=False), torch.zeros(6, 4, 2, 2)).bias is None
    conv = _resized(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), torch.zeros(4, 8, 3, 3))
    assert conv.padding_mode == "reflect" and conv.bias is not None
    one = _resized(nn.Conv2d(1, 4, 3), torch.zeros(6, 1, 3, 3))  # one input: not depthwise
    assert (one.in_channels, one.out_channels, one.groups) == (1, 6, 1)
    two = _resized(nn.Conv2d(2, 2, 3, groups=2), torch.zeros(1, 1, 3, 3))  # depthwise of two
    assert (two.in_channels, two.out_channels, two.groups) == (1, 1, 1)
    bn = _resized(nn.BatchNorm2d(8, affine=False, track_running_stats=False), torch.zeros(5))
    assert (bn.affine, bn.track_running_stats) == (False, False)
    gn = _resized(nn.GroupNorm(4, 8, affine=False), torch.zeros(6))
    assert gn.affine is False


def test_fit_to_state_dict_skips_what_it_cannot_rebuild_and_goes_on():
    model = nn.Sequential(nn.ReLU(), nn.Linear(2, 3), nn.Conv2d(3, 8, 1))
    state = {"0.weight": torch.zeros(1), "1.weight": torch.zeros(4, 2)}
    state["2.weight"] = torch.zeros(5, 3, 1, 1)
    assert fit_to_state_dict(model, state) == 1  # the ReLU has no weight, a Linear stays
    assert model[2].out_channels == 5 and model[1].out_features == 3
