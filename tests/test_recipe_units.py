"""Recipes one rule at a time: what each kind of option accepts (its words in errors), the
boundaries of ranges, nulls, numbers from text, unknown keys, shipped recipes by name, recipes
in files and checkpoints, --set, the precedence of sources and the YAML written back."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from vision import recipe as R
from vision.errors import DataError

BASE = {"task": "detection", "data": "d.yaml", "model": "fcos_r18", "out": "o"}


def test_options_carry_their_help():
    m = R.FIELDS["epochs"].metadata
    assert m["help"] == "training epochs" and m["low"] == 1 and m["choices"] is None
    assert R.FIELDS["amp"].metadata["flag"] == "--no-amp" and R.FIELDS["lr"].metadata["open_low"]
    assert R.FIELDS["model_kwargs"].default_factory() == {}


def test_expected_words():
    assert R.expected("epochs") == "an integer ≥ 1"
    assert R.expected("lr") == "a number > 0"
    assert R.expected("momentum") == "a number ≥ 0 and ≤ 1"
    assert R.expected("optimizer") == "one of adamw, sgd"
    assert R.expected("amp") == "true or false"
    assert R.expected("data") == "a string"
    assert R.expected("model_kwargs") == "a mapping"
    assert R.expected("patience") == "an integer ≥ 1 (or null)"
    assert R.expected("seed") == "an integer" and R.expected("weights") == "a string (or null)"
    assert R.field_kind("patience") == (int, True) and R.field_kind("lr") == (float, False)


def _err(name, value, where="w"):
    with pytest.raises(DataError) as e:
        R.check_value(name, value, where)
    return str(e.value)


def test_nulls():
    assert R.check_value("patience", None, "w") is None  # optional
    assert R.check_value("data", None, "w") is None  # required: reported once, by validate
    assert _err("epochs", None) == "w: key 'epochs': expected an integer ≥ 1, got null"


def test_numbers_from_text_and_ints_as_floats():
    assert R.check_value("lr", "3e-3", "w") == 0.003  # YAML 1.1 reads 3e-3 as text
    assert R.check_value("epochs", "7", "w") == 7
    got = R.check_value("lr", 2, "w")
    assert got == 2.0 and type(got) is float
    assert _err("lr", "fast") == "w: key 'lr': expected a number > 0, got 'fast'"
    assert _err("epochs", "2.5") == "w: key 'epochs': expected an integer ≥ 1, got '2.5'"
    assert _err("lr", True) == "w: key 'lr': expected a number > 0, got True"  # not a number
    assert _err("epochs", False) == "w: key 'epochs': expected an integer ≥ 1, got False"
    assert R.check_value("amp", False, "w") is False
    assert _err("amp", 1) == "w: key 'amp': expected true or false, got 1"
    assert _err("lr", math.inf) == "w: key 'lr': expected a number > 0, got inf"
    assert "got nan" in _err("clip", math.nan)


def test_ranges_at_their_edges():
    assert R.check_value("epochs", 1, "w") == 1
    assert _err("epochs", 0) == "w: key 'epochs': expected an integer ≥ 1, got 0"
    assert R.check_value("weight_decay", 0.0, "w") == 0.0  # closed at 0
    assert _err("lr", 0.0) == "w: key 'lr': expected a number > 0, got 0.0"  # open at 0
    assert R.check_value("lr", 1e-12, "w") == 1e-12
    assert R.check_value("momentum", 1.0, "w") == 1.0
    assert (
        _err("momentum", 1.0000001)
        == "w: key 'momentum': expected a number ≥ 0 and ≤ 1, got 1.0000001"
    )
    assert R.check_value("seed", -5, "w") == -5  # no range
    assert _err("optimizer", "adam") == "w: key 'optimizer': expected one of adamw, sgd, got 'adam'"
    assert R.check_value("model_kwargs", {"a": 1}, "w") == {"a": 1}


def test_unknown_keys_name_the_closest():
    with pytest.raises(DataError) as e:
        R.check_keys({"epochs": 1, "lrr": 0.1}, "f.yaml")
    assert (
        str(e.value)
        == "f.yaml: key 'lrr': expected a training option, got an unknown key (did you mean 'lr'?)"
    )
    with pytest.raises(DataError) as e:
        R.check_keys({"zzzzzzzz": 1}, "f.yaml")
    assert str(e.value).endswith("got an unknown key (see `vision train detect -h`)")
    with pytest.raises(DataError, match="did you mean 'lr'"):
        R.check_keys({"lrate": 1}, "w")  # similar enough at difflib's 0.5, not at its default 0.6
    with pytest.raises(DataError, match="did you mean 'kd_mode'"):
        R.check_keys({"kd_mod": 1}, "w")  # the single closest, though several are close
    with pytest.raises(DataError, match="did you mean 'b'"):
        R.check_keys({"bb": 1}, "w", allowed=["a", "b"])
    R.check_keys({"a": 1}, "w", allowed=["a"])
    R.check_keys({}, "w")


def test_validate_reports_every_missing_value():
    with pytest.raises(DataError) as e:
        R.validate({"task": "detection", "epochs": 2})
    assert str(e.value) == "recipe: expected values for data, model, out, got none"
    with pytest.raises(DataError, match="^mine: expected values for out"):
        R.validate({"task": "detection", "data": "d", "model": "m"}, "mine")
    with pytest.raises(DataError, match="^mine: key 'lrr'"):
        R.validate({**BASE, "lrr": 1}, "mine")
    cfg = R.validate({**BASE, "lr": "2e-3"})
    assert cfg.lr == 0.002 and cfg.epochs == 10 and isinstance(cfg, R.TrainConfig)


def test_find_recipe(tmp_path, monkeypatch):
    mine = tmp_path / "mine.yaml"
    mine.write_text("epochs: 3\n")
    assert R.find_recipe(mine) == mine and R.find_recipe(str(mine)) == mine
    names = sorted(p.stem for p in R.RECIPES.glob("*.yaml"))
    first = names[0]
    assert R.find_recipe(first) == R.RECIPES / f"{first}.yaml"
    assert R.find_recipe(f"{first}.yaml") == R.RECIPES / f"{first}.yaml"
    assert R.find_recipe(f"{first}.yml") == R.RECIPES / f"{first}.yaml"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        R.find_recipe(f"sub/{first}")  # a path with folders is a path, not a shipped name
    assert str(e.value) == (
        f"sub/{first}: expected a recipe YAML, a checkpoint, or a shipped recipe "
        f"({', '.join(names)}), got no such file or recipe"
    )
    (tmp_path / f"{first}.yaml").write_text("epochs: 4\n")
    assert R.find_recipe(f"{first}.yaml").resolve() == tmp_path / f"{first}.yaml"  # a file wins


def test_read_recipe_from_yaml_and_checkpoints(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 3\nlr: 3e-3\n")
    assert R.read_recipe(tmp_path / "a.yaml") == {"epochs": 3, "lr": "3e-3"}
    (tmp_path / "empty.yaml").write_text("")
    assert R.read_recipe(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("[1, 2]\n")
    with pytest.raises(DataError) as e:
        R.read_recipe(tmp_path / "list.yaml")
    assert (
        str(e.value)
        == f"{tmp_path / 'list.yaml'}: expected a mapping of training options, got list"
    )
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    with pytest.raises(
        DataError, match=rf"^{tmp_path / 'bad.yaml'}: key 'epoch'.*did you mean 'epochs'"
    ):
        R.read_recipe(tmp_path / "bad.yaml")
    torch.save({"model": {}, "args": {"epochs": 5, "model": "fcn8s"}}, tmp_path / "c.pt")
    assert R.read_recipe(tmp_path / "c.pt") == {"epochs": 5, "model": "fcn8s"}
    torch.save({"model": {}}, tmp_path / "bare.pth")
    assert R.read_recipe(tmp_path / "bare.pth") == {}
    torch.save({"model": {}, "args": {"nope": 1}}, tmp_path / "odd.pt")
    with pytest.raises(DataError, match="key 'nope'"):
        R.read_recipe(tmp_path / "odd.pt")


def test_parse_sets():
    got = R.parse_sets(["lr=2e-3", "bf16=true", "kd-mode=channel", " epochs =4"])
    # lr stays text here (YAML 1.1): check_value makes it a number
    assert got == {"lr": "2e-3", "bf16": True, "kd_mode": "channel", "epochs": 4}
    assert R.parse_sets(["model_kwargs={upsample: bilinear}"]) == {
        "model_kwargs": {"upsample": "bilinear"}
    }
    assert R.parse_sets(["out=a=b"]) == {"out": "a=b"}
    for bad in ("lr", "=3"):
        with pytest.raises(DataError) as e:
            R.parse_sets([bad])
        assert str(e.value) == f"--set: expected key=value, got {bad!r}"
    with pytest.raises(DataError, match=r"^--set: key 'lrr'"):
        R.parse_sets(["lrr=1"])
    assert R.parse_sets([]) == {}


def test_resolve_precedence(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "epochs: 3\nlr: 0.01\nbatch: 4\ndata: file.yaml\nmodel: fcn8s\n"
    )
    cfg = R.resolve(
        "segmentation",
        tmp_path / "r.yaml",
        {"lr": 0.02, "batch": 6},
        ["batch=8"],
        {"epochs": 1, "lr": 0.5, "seed": 3},
    )
    assert (cfg.task, cfg.epochs, cfg.lr, cfg.batch, cfg.seed) == ("segmentation", 3, 0.02, 8, 3)
    assert cfg.out == "runs/fcn8s" and cfg.data == "file.yaml"
    kept = R.resolve("detection", None, {**BASE, "out": "mine"})
    assert kept.out == "mine" and kept.task == "detection"
    with pytest.raises(DataError, match=rf"^{tmp_path / 'r.yaml'}: key 'lr'"):
        R.resolve("detection", tmp_path / "r.yaml", {"lr": -1})
    with pytest.raises(DataError, match="^recipe: key 'lr'"):
        R.resolve("detection", None, {**BASE, "lr": -1})
    with pytest.raises(DataError, match="^recipe: expected values for data, model, out"):
        R.resolve("detection")
    assert R.resolve("detection", None, {**BASE}, (), {"task": "segmentation"}).task == "detection"


def test_to_yaml_round_trip():
    cfg = R.validate({**BASE, "lr": 0.004, "model_kwargs": {"upsample": "bilinear"}})
    text = R.to_yaml(cfg)
    assert text.startswith("task: detection\ndata: d.yaml\nmodel: fcos_r18\nout: o\nepochs: 10\n")
    assert R.validate(yaml.safe_load(text)) == cfg
