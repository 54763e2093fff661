"""The training engine: learning, exact resume, transfer, non-finite stop, distributed runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from eval.metrics import build_evaluator as make_evaluator
from vision.engine.checkpoint import load_checkpoint, load_matching
from vision.engine.train import TrainConfig, train
from vision.models import build_model

QUIET = {"log": lambda *a: None}


def _cfg(shapes_yaml, out, **kw) -> TrainConfig:
    base = {
        "task": "segmentation",
        "data": str(shapes_yaml),
        "model": "fcn32s",
        "out": str(out),
        "epochs": 2,
        "img_size": 64,
        "batch": 4,
        "workers": 0,
        "limit_train": 8,
        "limit_val": 4,
        "warmup_iters": 0,
        "threads": 2,
    }
    return TrainConfig(**{**base, **kw})


def _losses(out) -> list[float]:
    return [json.loads(ln)["train_loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "task,model,lr", [("segmentation", "fcn8s", 3e-3), ("detection", "fcos_r18", 1e-3)]
)
def test_a_few_steps_reduce_the_loss(shapes_yaml, tmp_path, task, model, lr):
    cfg = _cfg(
        shapes_yaml,
        tmp_path,
        task=task,
        model=model,
        epochs=12,
        lr=lr,
        img_size=96,
        schedule="poly",
    )
    train(cfg, make_evaluator, **QUIET)
    losses = _losses(tmp_path)
    assert losses[-1] < 0.6 * losses[0], losses
    ck = load_checkpoint(tmp_path / "best.pt")
    assert ck["meta"]["task"] == task and ck["meta"]["class_names"][0] == "circle"
    assert "value" in ck["meta"]["metrics"]


def test_resume_gives_identical_weights(shapes_yaml, tmp_path):
    straight = tmp_path / "straight"
    train(_cfg(shapes_yaml, straight), make_evaluator, **QUIET)
    split = tmp_path / "split"
    train(_cfg(shapes_yaml, split, stop_after=1), make_evaluator, **QUIET)  # "killed" here
    # a new process would do the same: the run is rebuilt from the checkpoint alone
    train(_cfg(shapes_yaml, split, epochs=2, resume="auto"), make_evaluator, **QUIET)
    a = load_checkpoint(straight / "last.pt")["model"]
    b = load_checkpoint(split / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [
        json.loads(ln)["epoch"] for ln in (split / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2]


def test_bf16_on_cpu_and_validation_every_n_epochs(shapes_yaml, tmp_path):
    cfg = _cfg(shapes_yaml, tmp_path, model="fcn8s_slim", epochs=3, bf16=True, val_every=2)
    logs: list[str] = []
    train(cfg, make_evaluator, log=logs.append)
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2, 3]
    # validated after epoch 2 and after the last one, not after epoch 1
    assert ["seg/mIoU" in ln for ln in lines] == [False, True, True]
    assert all(0.0 <= ln["train_loss"] < 10 for ln in lines)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert load_checkpoint(tmp_path / "best.pt")["meta"]["metrics"]["epoch"] in (2, 3)
    assert any("epoch 1/3" in m and "mIoU" not in m for m in logs)


def test_transfer_across_class_counts(tmp_path):
    src = build_model("fcn8s", 5)
    dst = build_model("fcn8s", 2)
    report = load_matching(dst, src.state_dict())
    assert any("score32.weight" in m for m in report["shape_mismatch"])
    assert "backbone.layers.0.0.weight" in report["loaded"]
    torch.testing.assert_close(
        dst.state_dict()["backbone.layers.0.0.weight"],
        src.state_dict()["backbone.layers.0.0.weight"],
    )


def test_non_finite_loss_stops_with_the_step(shapes_yaml, tmp_path):
    cfg = _cfg(shapes_yaml, tmp_path, lr=1e38, epochs=1, optimizer="sgd", momentum=0.0)
    with pytest.raises(FloatingPointError, match=r"at epoch 1, step \d+"):
        train(cfg, make_evaluator, **QUIET)


@pytest.mark.parametrize(
    "command,model,key,port,ort_teacher",
    [
        ("segment", "fcn32s", "seg/mIoU", 29561, False),
        ("detect", "fcos_r18", "coco/AP50", 29562, False),
        ("segment", "fcn8s_slim", "seg/mIoU", 29563, True),  # one rank writes the teacher file
    ],
)
def test_torchrun_two_gloo_processes(
    shapes_yaml, tiny_checkpoints, tmp_path, command, model, key, port, ort_teacher
):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = "--epochs 1 --img-size 64 --batch 2 --workers 0 --limit-train 8 --limit-val 6 "
    args += "--max-iters 2"
    if ort_teacher:
        args += f" --teacher {tiny_checkpoints['segmentation']} --kd-teacher-runtime int8"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "-m",
        "vision_cli",
        "train",
        command,
        "--data",
        str(shapes_yaml),
        "--model",
        model,
        "--out",
        str(tmp_path),
        *args.split(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m0 = json.loads((tmp_path / "rank0_metrics.json").read_text())
    m1 = json.loads((tmp_path / "rank1_metrics.json").read_text())
    assert m0[key] == m1[key]  # gathered across ranks: both see the whole validation split
    if ort_teacher:
        assert (tmp_path / "teacher" / "teacher.int8.onnx").is_file()
        assert r.stdout.count("teacher runs in ONNX Runtime (int8)") == 2, r.stdout[-3000:]


def test_resume_from_an_explicit_path_keeps_the_best_score(shapes_yaml, tmp_path):
    """A detection run resumed from a checkpoint elsewhere continues its epochs and keeps its
    best score: a later epoch that does not beat it leaves best.pt alone."""
    from vision.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    cfg = _cfg(shapes_yaml, run, task="detection", model="fcos_r18", epochs=2, stop_after=1)
    train(cfg, make_evaluator, **QUIET)
    first = load_checkpoint(run / "best.pt")
    assert first["epoch"] == 1
    ck = load_checkpoint(run / "last.pt")
    ck["best"] = 0.99  # a best score the next epoch cannot reach
    moved = tmp_path / "elsewhere.pt"
    save_checkpoint(ck, moved)
    logs: list[str] = []
    train(_cfg(shapes_yaml, run, task="detection", model="fcos_r18", epochs=2, resume=str(moved)),
          make_evaluator, log=logs.append)  # fmt: skip
    assert any("resumed from epoch 1 (best coco/AP 0.9900)" in m for m in logs), logs
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    assert load_checkpoint(run / "best.pt")["epoch"] == 1  # not overwritten by a worse epoch
    assert load_checkpoint(run / "last.pt")["best"] == 0.99


def test_validation_does_not_change_training(shapes_yaml, tmp_path):
    """Validating every epoch or only at the end trains the same weights (dropout draws from
    the global RNG; validation must not consume it)."""
    a, b = tmp_path / "every", tmp_path / "end"
    train(_cfg(shapes_yaml, a, epochs=3, val_every=1), make_evaluator, **QUIET)
    train(_cfg(shapes_yaml, b, epochs=3, val_every=3), make_evaluator, **QUIET)
    wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "task,student,teacher,kw",
    [
        ("segmentation", "fcn8s_slim", "fcn8s", {}),
        ("detection", "fcos_slim", "fcos_r18", {"fpn_width": 32}),  # FPN 32 wide vs 64
    ],
)
def test_distillation_step_trains_the_student_only(
    shapes_yaml, tmp_path, task, student, teacher, kw
):
    """Teacher and student of different widths: one training step with KD runs, the student
    changes, the teacher gets no gradient and stays unchanged; a teacher of other classes
    is an error naming both shapes."""
    from vision.engine.checkpoint import save_checkpoint
    from vision.engine.distill import Distiller

    t = build_model(teacher, 4, class_names=["circle", "square", "triangle", "star"],
                    input_size=64)  # fmt: skip
    save_checkpoint({"model": t.state_dict(), "meta": t.meta.as_dict(), "args": {}},
                    tmp_path / "teacher.pt")  # fmt: skip
    before = {k: v.clone() for k, v in t.state_dict().items()}
    cfg = _cfg(shapes_yaml, tmp_path / "run", task=task, model=student, epochs=1, max_iters=2,
               teacher=str(tmp_path / "teacher.pt"), kd_weight=2.0, model_kwargs=kw)  # fmt: skip
    logs: list[str] = []
    train(cfg, make_evaluator, log=logs.append)
    assert any("distilling from" in m for m in logs)
    s = build_model(student, 4, input_size=64, **kw)
    teacher_model = build_model(teacher, 4, input_size=64)
    teacher_model.load_state_dict(before)
    d = Distiller(s, teacher_model, 1.0, 2.0)
    x = torch.rand(2, 3, 64, 64)
    if task == "segmentation":
        out = s(x)
        loss = d(x, torch.zeros(2, 64, 64, dtype=torch.long), out)
    else:
        s.train()
        tg = [{"boxes": torch.tensor([[5.0, 5, 30, 30]]), "labels": torch.tensor([1])}] * 2
        s(x, tg)
        loss = d(x)
        assert d.adapter is not None  # slim FPN width differs from ResNet-18's
    assert loss > 0
    loss.backward()
    assert all(p.grad is None for p in teacher_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters())
    assert all(torch.equal(v, teacher_model.state_dict()[k]) for k, v in before.items())
    other = build_model(teacher, 7, input_size=64)
    st = build_model(student, 4, input_size=64, **kw)
    d2 = Distiller(st, other)
    with pytest.raises(ValueError, match=r"student \(2, .*teacher \(2, "):
        if task == "segmentation":
            d2(x, None, st(x))
        else:
            st.train()
            st(x, tg)
            d2(x)


def test_pretrained_backbone_options(shapes_yaml, tmp_path):
    """ImageNet Lite0 FCN-8s: the backbone stays frozen for the first epoch and then learns
    (at its own rate); with --freeze-bn its BatchNorm statistics never move."""
    from vision.engine.train import backbone_parameters
    from vision.models.efficientnet import weights_file

    imagenet = torch.load(weights_file(), map_location="cpu", weights_only=True)
    run = tmp_path / "run"
    kw = {"model": "fcn8s_lite0", "epochs": 2, "max_iters": 2, "freeze_backbone_epochs": 1,
          "backbone_lr_mult": 0.1, "freeze_bn": True}  # fmt: skip
    train(_cfg(shapes_yaml, run, stop_after=1, **kw), make_evaluator, **QUIET)
    first = load_checkpoint(run / "last.pt")["model"]
    stem = "backbone.layers.0.0.weight"  # EfficientNet-Lite0's _conv_stem
    assert torch.equal(first[stem], imagenet["_conv_stem.weight"])  # frozen in epoch 1
    train(_cfg(shapes_yaml, run, resume="auto", **kw), make_evaluator, **QUIET)
    second = load_checkpoint(run / "last.pt")["model"]
    assert not torch.equal(second[stem], imagenet["_conv_stem.weight"])  # learns in epoch 2
    bn = "backbone.layers.0.1.running_mean"  # _bn0's statistics: kept
    assert torch.equal(second[bn], imagenet["_bn0.running_mean"])
    model = build_model("fcn8s_lite0", 4)
    assert len(backbone_parameters(model)) == len(
        [k for k in imagenet if k.startswith(("_conv_stem", "_bn0.", "_blocks")) and
         not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    )  # fmt: skip
