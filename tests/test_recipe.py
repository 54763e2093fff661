"""Recipes as files: one definition of every training option, the shipped recipes, the
precedence of recipe / options / --set, refusals that say what was expected (and the closest
valid key), and a run repeated from the recipe its checkpoint stored."""

from __future__ import annotations

import json

import pytest
import yaml

from vision.errors import DataError
from vision.recipe import FIELDS, RECIPES, resolve, validate

from .conftest import run_cli


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_is_valid(name):
    from vision.models import list_models

    cfg = resolve("detection", name, defaults={"data": "shapes"})
    assert cfg.model in list_models() and cfg.out == f"runs/{cfg.model}"


def test_precedence_defaults_recipe_typed_options_then_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: fcos_r18\nepochs: 3\nlr: 0.005\nbatch: 4\n")
    cfg = resolve("detection", recipe, {"epochs": 5, "lr": 0.002}, ["lr=1e-4"],
                  {"data": "shapes", "model": "fcos_lite0", "batch": 2})  # fmt: skip
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch) == ("fcos_r18", 5, 1e-4, 4)
    assert cfg.img_size == FIELDS["img_size"].default and cfg.out == "runs/fcos_r18"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lrr: 0.1",
            r"key 'lrr': expected a training option, got an unknown key \(did you mean 'lr'\?\)",
        ),
        ("epochs: ten", r"key 'epochs': expected an integer ≥ 1, got 'ten'"),
        ("epochs: 2.5", r"key 'epochs': expected an integer ≥ 1, got 2.5"),
        ("lr: -0.1", r"key 'lr': expected a number > 0, got -0.1"),
        ("momentum: 1.5", r"key 'momentum': expected a number ≥ 0 and ≤ 1, got 1.5"),
        ("optimizer: adam", r"key 'optimizer': expected one of adamw, sgd, got 'adam'"),
        ("bf16: 1", r"key 'bf16': expected true or false, got 1"),
        ("[1, 2]", r"expected a mapping of training options, got list"),
    ],
)
def test_bad_recipes_are_refused_with_what_was_expected(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text + "\n")
    r = run_cli(["train", "detect", "--config", recipe, "--print-config"])
    assert r.returncode == 2 and r.stdout == ""
    assert f"error: {recipe}" in r.stderr and __import__("re").search(message, r.stderr), r.stderr


def test_set_and_options_are_checked_too():
    r = run_cli(["train", "segment", "--set", "kd_moed=channel", "--print-config"])
    assert r.returncode == 2 and "did you mean 'kd_mode'?" in r.stderr
    r = run_cli(["train", "segment", "--set", "batch", "--print-config"])
    assert r.returncode == 2 and "--set: expected key=value, got 'batch'" in r.stderr
    with pytest.raises(DataError, match="values for data"):
        validate({"task": "detection", "model": "fcos_r18", "out": "x"})


def test_train_and_prune_options_come_from_the_recipe_fields(capsys):
    from vision_cli.cli import build_parser

    for argv in (["train", "detect", "-h"], ["compress", "prune", "-h"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "--kd-weight" in text and FIELDS["kd_weight"].metadata["help"] in text


def test_a_run_repeats_from_the_recipe_its_checkpoint_stored(shapes_yaml, tmp_path):
    """Train one epoch; print the recipe the checkpoint holds; train again from that file
    into another folder: the same losses and metrics."""
    first = tmp_path / "first"
    args = ["train", "segment", "--data", shapes_yaml, "--model", "fcn32s", "--epochs", "1",
            "--img-size", "64", "--batch", "4", "--workers", "0", "--threads", "1",
            "--limit-train", "8", "--limit-val", "4", "--warmup-iters", "0",
            "--out", first]  # fmt: skip
    assert run_cli(args).returncode == 0
    printed = run_cli(["train", "segment", "--config", first / "best.pt", "--print-config"])
    assert printed.returncode == 0, printed.stderr
    recipe = yaml.safe_load(printed.stdout)
    assert (
        recipe["model"] == "fcn32s" and recipe["limit_train"] == 8 and recipe["out"] == str(first)
    )
    (tmp_path / "again.yaml").write_text(printed.stdout)
    again = tmp_path / "again"
    r = run_cli(["train", "segment", "--config", tmp_path / "again.yaml", "--set", f"out={again}"])
    assert r.returncode == 0, r.stderr
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (first, again)]  # fmt: skip
    keep = ("train_loss", "lr", "seg/mIoU", "seg/pixel_acc")
    assert [{k: r[k] for k in keep} for r in rows[0]] == [{k: r[k] for k in keep} for r in rows[1]]
