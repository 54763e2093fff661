"""``vision compress prune``: prune, fine-tune on a share of the recipe's own iterations
(optionally from a teacher), and a result that reloads through the registry."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from vision.engine.checkpoint import load_checkpoint
from vision.predictor import Predictor
from vision_cli.compress import budget_schedule


@pytest.mark.parametrize(
    ("recipe", "images", "share", "expected"),
    [
        ({"epochs": 4, "batch": 8}, 2000, 0.3, {"epochs": 2, "max_iters": 150, "of_iters": 1000}),
        ({"epochs": 2, "batch": 8}, 2000, 0.3, {"epochs": 1, "max_iters": 150, "of_iters": 500}),
        ({"epochs": 3, "batch": 4}, 16, 0.5, {"epochs": 2, "max_iters": 3, "of_iters": 12}),
        ({"epochs": 5, "batch": 8, "max_iters": 10}, 2000, 1.0,
         {"epochs": 5, "max_iters": 10, "of_iters": 50}),
        ({"epochs": 1, "batch": 8}, 3, 0.1, {"epochs": 1, "max_iters": 1, "of_iters": 1}),
    ],
)  # fmt: skip
def test_budget_is_a_share_of_the_recipes_iterations(recipe, images, share, expected):
    assert budget_schedule(recipe, images, share) == expected


@pytest.mark.parametrize("share", [0, -0.1, 1.5])
def test_budget_outside_zero_one_is_refused(share):
    with pytest.raises(ValueError, match=rf"expected a share in \(0, 1\], got {share}"):
        budget_schedule({"epochs": 1}, 10, share)


@pytest.mark.parametrize("cache", [False, True])
def test_prune_finetune_with_teacher_reloads(tiny_checkpoints, shapes_yaml, tmp_path, cache):
    ck = tiny_checkpoints["segmentation"]  # fcn8s_slim: 3 epochs of 4 batches
    args = ["compress", "prune", "--checkpoint", ck, "--data", shapes_yaml, "--ratio", "0.4",
            "--finetune-budget", "0.5", "--teacher", ck, "--round-to", "1",
            "--out", tmp_path] + (["--kd-cache", "--kd-stride", "2", "--kd-decay", "linear"]
                                  if cache else ["--kd-teacher-runtime", "onnx"])  # fmt: skip
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    assert "fine-tuning 2 × 3 iterations per step, 1 step(s) (50% of the recipe's 12)" in r.stdout
    assert f"distilling from {ck}" in r.stdout
    # the teacher's outputs of the 16 training images cached before fine-tuning, or not at all
    assert ("--kd-cache: teacher outputs of 16 training images" in r.stdout) is cache
    (row,) = json.loads((tmp_path / "prune.json").read_text())
    assert row["budget"] == {"epochs": 2, "max_iters": 3, "of_iters": 12}
    assert row["teacher"] == str(ck) and row["flops_cut"] == pytest.approx(0.4, abs=0.01)
    assert row["recalibrated_on"] == 16  # the recipe's 16 training images (limit_train)
    args = json.loads((tmp_path / "pruned_40/finetune/args.json").read_text())
    assert (args["epochs"], args["max_iters"], args["teacher"]) == (2, 3, str(ck))
    assert args["kd_cache"] is cache and args["kd_stride"] == (2 if cache else 1)
    assert args["kd_decay"] == ("linear" if cache else "none")
    assert args["kd_teacher_runtime"] == ("torch" if cache else "onnx")
    assert (tmp_path / "pruned_40/finetune/teacher/teacher.onnx").is_file() is not cache
    recipe = load_checkpoint(ck)["args"]  # rates not given: the recipe's
    assert (args["lr"], args["backbone_lr_mult"]) == (recipe["lr"], recipe["backbone_lr_mult"])
    model = Predictor.from_checkpoint(row["finetuned"]).model
    assert model.meta.pruned["flops_cut"] == row["flops_cut"]
    assert sum(p.numel() for p in model.parameters()) == row["params_after"]


def test_detector_finetune_takes_the_detection_kd_options(tiny_checkpoints, shapes_yaml,
                                                          tmp_path):  # fmt: skip
    ck = tiny_checkpoints["detection"]
    r = run_cli(["compress", "prune", "--checkpoint", ck, "--data", shapes_yaml, "--ratio", "0.3",
                 "--finetune-budget", "0.25", "--teacher", ck, "--kd-cache", "--kd-logit-loss",
                 "focal", "--kd-box-weight", "0.1", "--out", tmp_path])  # fmt: skip
    assert r.returncode == 0, r.stderr
    args = json.loads((tmp_path / "pruned_30/finetune/args.json").read_text())
    assert (args["teacher"], args["kd_cache"]) == (str(ck), True)
    assert (args["kd_logit_loss"], args["kd_box_weight"]) == ("focal", 0.1)


def test_finetune_config_keeps_the_recipe_and_turns_distillation_off():
    from vision.engine.train import finetune_config

    recipe = {"task": "detection", "data": "shapes", "model": "fcos_r18", "out": "old",
              "lr": 0.004, "warmup_iters": 100, "resume": "old/last.pt", "stop_after": 2,
              "teacher": "t.pt", "kd_weight": 3.0, "kd_cache": True, "kd_logit_loss": "focal",
              "kd_box_weight": 0.1, "kd_temperature": 1.0, "unknown_option": 1}  # fmt: skip
    cfg = finetune_config(recipe, out="new", epochs=2)
    assert (cfg.model, cfg.lr, cfg.out, cfg.epochs) == ("fcos_r18", 0.004, "new", 2)
    assert cfg.warmup_iters == 20 and cfg.resume is None and cfg.stop_after is None
    assert (cfg.teacher, cfg.kd_weight, cfg.kd_cache, cfg.kd_temperature) == (None, 1.0, False, 2.0)
    assert (cfg.kd_logit_loss, cfg.kd_box_weight) == ("binary", 0.0)
    # given back by the caller, distillation is on again
    assert (
        finetune_config(recipe, out="new", teacher="t.pt", kd_box_weight=0.2).kd_box_weight == 0.2
    )


def test_iterative_pruning_reaches_the_asked_share_of_the_original(tiny_checkpoints, shapes_yaml,
                                                                   tmp_path):  # fmt: skip
    from vision.prune import macs

    ck = tiny_checkpoints["segmentation"]
    base = Predictor.from_checkpoint(ck).model.eval()
    import torch

    before = macs(base, torch.rand(1, 3, base.meta.input_size, base.meta.input_size))
    args = ["compress", "prune", "--checkpoint", ck, "--data", shapes_yaml, "--ratio", "0.4",
            "--finetune-budget", "0.5", "--steps", "2", "--recalibrate", "0",
            "--round-to", "1", "--lr", "0.003", "--backbone-lr-mult", "4",
            "--out", tmp_path]  # fmt: skip
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    for step in (1, 2):  # the rates given reach every step's fine-tuning
        ft = json.loads((tmp_path / f"pruned_40/step{step}/finetune/args.json").read_text())
        assert (ft["lr"], ft["backbone_lr_mult"]) == (0.003, 4.0)
    assert "fine-tuning 1 × 3 iterations per step, 2 step(s) (50% of the recipe's 12)" in r.stdout
    assert "step 1/2" in r.stdout and "step 2/2" in r.stdout
    (row,) = json.loads((tmp_path / "prune.json").read_text())
    assert row["steps"] == 2 and row["macs_before"] == before
    assert row["flops_cut"] == pytest.approx(0.4, abs=0.02)
    assert row["flops_cut"] == pytest.approx(1 - row["macs_after"] / before)
    assert row["finetuned"] == str(tmp_path / "pruned_40/step2/finetune/best.pt")
    assert "recalibrated_on" not in row
    step1 = Predictor.from_checkpoint(tmp_path / "pruned_40/step1/pruned.pt").model
    assert step1.meta.pruned["flops_cut"] == pytest.approx(0.2, abs=0.02)  # half the way
    final = Predictor.from_checkpoint(row["finetuned"]).model
    assert sum(p.numel() for p in final.parameters()) == row["params_after"]


def test_reconstruction_replaces_recalibration_and_ranks_globally(tiny_checkpoints, shapes_yaml,
                                                                  tmp_path):  # fmt: skip
    from torch import nn

    ck = tiny_checkpoints["segmentation"]
    args = ["compress", "prune", "--checkpoint", ck, "--data", shapes_yaml, "--ratio", "0.4",
            "--finetune-budget", "0.5", "--importance", "taylor", "--ranking", "global",
            "--reconstruct", "2", "--round-to", "1", "--out", tmp_path]  # fmt: skip
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads((tmp_path / "prune.json").read_text())
    pruned = Predictor.from_checkpoint(tmp_path / "pruned_40/pruned.pt").model
    plain = [m for m in pruned.modules() if type(m) is nn.Conv2d and m.groups == 1]
    assert row["reconstructed"] == len(plain) and "recalibrated_on" not in row
    assert row["ranking"] == pruned.meta.pruned["ranking"] == "global"
    assert row["flops_cut"] == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize(
    ("flag", "value", "least"),
    [
        ("--steps", 0, 1),
        ("--recalibrate", -1, 0),
        ("--taylor-batches", 0, 1),
        ("--reconstruct", -1, 0),
        ("--finetune-epochs", -1, 0),
    ],  # fmt: skip
)
def test_counts_below_their_least_are_refused(flag, value, least, tmp_path):
    r = run_cli(["compress", "prune", "--checkpoint", tmp_path / "none.pt", flag, value,
                 "--out", tmp_path])  # fmt: skip
    assert r.returncode != 0
    assert f"{flag}: expected an integer ≥ {least}, got {value}" in r.stderr


def test_kd_cache_without_a_teacher_is_refused_before_pruning(tmp_path):
    r = run_cli(["compress", "prune", "--checkpoint", tmp_path / "none.pt", "--kd-cache",
                 "--out", tmp_path])  # fmt: skip
    assert r.returncode != 0
    assert "--kd-cache: expected --teacher CKPT too (the outputs it caches), got none" in r.stderr


def test_prune_only_writes_pruned_weights_and_skips_finetuning(tiny_checkpoints, shapes_yaml,
                                                               tmp_path):  # fmt: skip
    ck = tiny_checkpoints["detection"]
    r = run_cli(["compress", "prune", "--checkpoint", ck, "--data", shapes_yaml, "--ratio", "0.3",
                 "--finetune-epochs", "0", "--steps", "2", "--recalibrate", "0",
                 "--out", tmp_path])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "step 2/2" in r.stdout and "[train]" not in r.stdout
    (row,) = json.loads((tmp_path / "prune.json").read_text())
    assert (row["finetuned"], row["budget"], row["finetune_summary"]) == (None, None, None)
    assert row["pruned"] == str(tmp_path / "pruned_30/step2/pruned.pt")
    assert not list(tmp_path.rglob("finetune"))
    step1, step2 = (Predictor.from_checkpoint(tmp_path / f"pruned_30/step{i}/pruned.pt").model
                    for i in (1, 2))  # fmt: skip
    # step 2 pruned step 1's weights: fewer parameters again, the whole cut recorded
    n1, n2 = (sum(p.numel() for p in m.parameters()) for m in (step1, step2))
    assert n2 == row["params_after"] < n1 < row["params_before"]
    assert step2.meta.pruned["flops_cut"] == pytest.approx(0.3, abs=0.03)


def test_teacher_without_finetuning_is_refused_before_pruning(tmp_path):
    r = run_cli(["compress", "prune", "--checkpoint", tmp_path / "none.pt", "--teacher", "t.pt",
                 "--finetune-epochs", "0", "--out", tmp_path])  # fmt: skip
    assert r.returncode != 0
    assert "--teacher: expected a fine-tuning to distil in" in r.stderr
    assert "got --finetune-epochs 0 (prune only)" in r.stderr


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_taylor_batches_are_the_same_for_the_same_seed(tiny_checkpoints, shapes_yaml, task):
    """The batches Taylor importance reads are augmented at random: seeded, two calls (and two
    runs) prune by the same scores; another seed draws other batches."""
    import torch

    from vision_cli.compress import _batches, _train_reader

    model = Predictor.from_checkpoint(tiny_checkpoints[task]).model
    recipe = {"img_size": 64, "batch": 4, "data": str(shapes_yaml)}
    reader = _train_reader(recipe, task)

    def images(seed: int) -> torch.Tensor:
        return torch.cat([x for x, _ in _batches(model, reader, recipe, 3, seed=seed)])

    first = images(0)
    assert first.shape == (12, 3, 64, 64)
    assert torch.equal(first, images(0))
    assert not torch.equal(first, images(1))
