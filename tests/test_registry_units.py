"""The registry, the shape fitting of pruned checkpoints, the shipped-weights names and
provenance, one behaviour at a time and in process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vision.data.sample import Sample
from vision.models import registry
from vision.models.common import ModelMeta
from vision.models.reshape import fit_to_state_dict
from vision.models.zoo import PRETRAINED, is_pretrained, pretrained_checkpoint

# ---- vision.models.reshape ------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, c: int, g: int):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, stride=2, padding=1, dilation=1, bias=False)
        self.bn = nn.BatchNorm2d(c, eps=1e-3, momentum=0.03, affine=True)
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 5, padding=4, dilation=2, groups=c, padding_mode="reflect"),
            nn.GroupNorm(c // g, c, eps=1e-4),
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, output_padding=0, bias=True),
            nn.Conv2d(c // 2, 6, 1, groups=2),
        )
        self.fc = nn.Linear(c, 4)


def test_fit_to_state_dict_takes_the_pruned_shapes():
    small = _Net(8, 2).state_dict()
    big = _Net(16, 2)
    big.extra = nn.Conv2d(3, 3, 1)  # in the model, not in the state: left as it is
    assert fit_to_state_dict(big, small) == 6  # five layers in the model, one linear not
    big.fc = nn.Linear(8, 4)  # a linear is not swappable: the caller's to fit
    big.load_state_dict(small | {f"extra.{k}": v for k, v in big.extra.state_dict().items()})
    conv, bn = big.conv, big.bn
    assert (conv.in_channels, conv.out_channels, conv.stride, conv.padding) == (
        3,
        8,
        (2, 2),
        (1, 1),
    )
    assert conv.bias is None and (bn.eps, bn.momentum, bn.affine) == (1e-3, 0.03, True)
    assert bn.track_running_stats and bn.num_features == 8
    dw, gn, up, last = big.body
    assert (dw.groups, dw.in_channels, dw.kernel_size, dw.dilation) == (8, 8, (5, 5), (2, 2))
    assert dw.padding == (4, 4) and dw.padding_mode == "reflect" and dw.bias is not None
    assert (gn.num_groups, gn.num_channels, gn.eps, gn.affine) == (4, 8, 1e-4, True)
    assert type(gn.num_groups) is int
    assert (up.in_channels, up.out_channels, up.stride, up.padding) == (8, 4, (2, 2), (1, 1))
    assert up.kernel_size == (4, 4) and up.output_padding == (0, 0) and up.bias is not None
    assert (last.in_channels, last.out_channels, last.groups) == (4, 6, 2)
    assert fit_to_state_dict(big, small) == 0  # already fitting: nothing changes


def test_fit_to_state_dict_keeps_layer_classes_and_transposed_groups():
    class Same(nn.Conv2d):
        pass

    m = nn.Sequential(Same(4, 8, 3), nn.ConvTranspose2d(8, 4, 3, groups=2, dilation=2))
    state = nn.Sequential(Same(4, 6, 3), nn.ConvTranspose2d(6, 4, 3, groups=2)).state_dict()
    assert fit_to_state_dict(m, state) == 2
    assert type(m[0]) is Same and m[0].out_channels == 6
    assert (m[1].in_channels, m[1].out_channels, m[1].groups, m[1].dilation) == (6, 4, 2, (2, 2))
    m.load_state_dict(state)
    one = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(2, 2, 3, groups=2), nn.Embedding(5, 4))
    small = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(1, 1, 3), nn.Embedding(3, 4)).state_dict()
    assert fit_to_state_dict(one, small) == 2  # an embedding is left to the caller
    assert (one[0].in_channels, one[0].out_channels, one[0].groups) == (1, 4, 1)
    assert (one[1].in_channels, one[1].out_channels, one[1].groups) == (1, 1, 1)  # depthwise
    norm = nn.Sequential(nn.BatchNorm2d(8, affine=False, track_running_stats=False))
    assert fit_to_state_dict(norm, {"0.weight": torch.zeros(4)}) == 0  # no weight of its own
    bn = nn.Sequential(nn.BatchNorm2d(8, track_running_stats=False))
    assert fit_to_state_dict(bn, {"0.weight": torch.zeros(4)}) == 1
    assert bn[0].num_features == 4 and bn[0].track_running_stats is False


# ---- vision.models.registry -----------------------------------------------------------------


class _Tiny(nn.Module):
    def __init__(self, num_classes: int, **kw):
        super().__init__()
        self.kw = kw
        self.head = nn.Linear(2, num_classes)
        self.meta = ModelMeta("?", "detection", [str(k) for k in range(num_classes)], 32)


@pytest.fixture
def tiny_model():
    registry.register_model("tiny_unit", "detection", _Tiny)
    yield "tiny_unit"
    if "tiny_unit" in registry.list_models():
        registry.unregister_model("tiny_unit")


def test_register_list_and_unregister(tiny_model):
    assert tiny_model in registry.list_models() and tiny_model in registry.list_models("detection")
    assert tiny_model not in registry.list_models("segmentation")
    assert registry.model_task(tiny_model) == "detection"
    assert "fcn8s" in registry.list_models("segmentation")
    assert registry.list_models() == sorted(registry.list_models())
    with pytest.raises(KeyError, match="model 'tiny_unit': a name not yet registered"):
        registry.register_model(tiny_model, "detection", _Tiny)
    with pytest.raises(ValueError, match="task: expected 'detection' or 'segmentation', got 'x'"):
        registry.register_model("other", "x", _Tiny)
    with pytest.raises(KeyError, match="expected a model added by register_model, got a shipped"):
        registry.unregister_model("fcn8s")
    registry.unregister_model(tiny_model)
    assert tiny_model not in registry.list_models()
    with pytest.raises(KeyError, match=r"unknown model 'tiny_unit': expected one of \["):
        registry.model_task(tiny_model)
    with pytest.raises(KeyError, match="unknown model"):
        registry.unregister_model(tiny_model)
    registry.register_model("seg_unit", "segmentation", _Tiny)
    assert registry.model_task("seg_unit") == "segmentation"
    registry.unregister_model("seg_unit")


def test_build_model_names_it_and_loads_local_weights(tiny_model, tmp_path):
    m = registry.build_model(tiny_model, 3, extra=1)
    assert m.meta.name == tiny_model and m.head.out_features == 3 and m.kw == {"extra": 1}
    named = registry.build_model(tiny_model, 3, weights="DEFAULT")
    assert named.kw == {"weights": "DEFAULT"}
    state = {k: torch.full_like(v, 0.5) for k, v in m.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, tmp_path / "c.pt")
    torch.save(state, tmp_path / "bare.pth")
    for name in ("c.pt", "bare.pth"):
        got = registry.build_model(tiny_model, 3, weights=str(tmp_path / name))
        assert got.kw == {} and (got.head.weight == 0.5).all()
    assert registry.load_weights(tmp_path / "c.pt").keys() == state.keys()
    with pytest.raises(KeyError, match="unknown model"):
        registry.build_model("no_such_model", 3)


# ---- vision.models.zoo ----------------------------------------------------------------------


def test_pretrained_checkpoint_is_built_from_the_package():
    ck = pretrained_checkpoint("nanodet_coco")
    assert sorted(ck) == ["args", "meta", "model", "pretrained"]
    assert ck["args"] == {"model": "nanodet_coco", "img_size": 416, "model_kwargs": {}}
    assert ck["meta"]["name"] == "nanodet_coco" and len(ck["meta"]["class_names"]) == 80
    assert ck["pretrained"] == PRETRAINED["nanodet_coco"] and len(ck["model"]) == 68
    assert ck["model"]["net.head.2.out.bias"].shape == (80 + 4 * 11,)  # 80 classes, 4 sides


def test_pretrained_names():
    assert is_pretrained("nanodet_coco") and "COCO 80 classes" in PRETRAINED["nanodet_coco"]
    assert not is_pretrained("model.pt") and not is_pretrained(Path("nanodet_coco"))
    with pytest.raises(KeyError, match=r"pretrained model 'x': expected one of \['nanodet_coco'\]"):
        pretrained_checkpoint("x")


# ---- eval.provenance ------------------------------------------------------------------------


class _Reader:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)


def test_dataset_hash_follows_names_boxes_labels_and_masks(tmp_path):
    from eval.provenance import dataset_hash

    (tmp_path / "m.png").write_bytes(b"mask")

    def reader(name="a.jpg", box=1.0, label=0, mask="m.png"):
        path = tmp_path / mask if mask else None
        s = Sample(1, tmp_path / name, 4, 4, boxes=np.full((1, 4), box, np.float32),
                   labels=np.array([label]), mask_path=path)  # fmt: skip
        return _Reader([s])

    h = dataset_hash(reader())
    assert len(h) == 16 and int(h, 16) >= 0 and h == dataset_hash(reader())
    others = [reader("b.jpg"), reader(box=2.0), reader(label=1), reader(mask=None)]
    assert len({h, *(dataset_hash(r) for r in others)}) == 5
    assert dataset_hash(reader(mask="gone.png")) == dataset_hash(reader(mask=None))
    (tmp_path / "m.png").write_bytes(b"other")
    assert dataset_hash(reader()) != h


def test_git_commit_and_provenance_table(tmp_path):
    from eval import provenance as prov

    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
        cwd=Path(prov.__file__).parent,
    ).stdout.strip()  # fmt: skip
    assert prov.git_commit() == (head or "unknown")

    class P:
        meta = ModelMeta("fcn8s", "segmentation", ["a"], 64)
        size, device, half = 64, torch.device("cpu"), False

    r = _Reader([Sample(1, tmp_path / "a.jpg", 4, 4)])
    table = prov.provenance(r, "shapes val", "ck.pt", P())
    assert {k: table[k] for k in ("dataset", "images", "checkpoint", "model", "input_size")} == {
        "dataset": "shapes val", "images": 1, "checkpoint": "ck.pt", "model": "fcn8s",
        "input_size": 64,
    }  # fmt: skip
    assert (
        table["dataset_hash"] == prov.dataset_hash(r) and table["git_commit"] == prov.git_commit()
    )
    assert table["device_type"] == "cpu" and table["dtype"] == "float32"
    P.half = True  # the predictor's own settings, not a default's
    assert prov.provenance(r, "d", "c", P())["dtype"] == "float16"


@pytest.mark.parametrize("script", [None, "#!/bin/sh\n", "#!/bin/sh\nexit 3\n"])
def test_git_commit_unknown_without_git_or_an_answer(tmp_path, monkeypatch, script):
    from eval.provenance import git_commit

    if script:  # a git that prints nothing
        (tmp_path / "git").write_text(script)
        (tmp_path / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # None: no git at all
    assert git_commit() == "unknown"
