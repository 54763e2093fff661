"""The training engine: learning, exact resume, transfer, non-finite stop, distributed runs."""

from __future__ import annotations

import json
import math
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
    "command,model,key,port",
    [("segment", "fcn32s", "seg/mIoU", 29561), ("detect", "fcos_r18", "coco/AP50", 29562)],
)
def test_torchrun_two_gloo_processes(shapes_yaml, tmp_path, command, model, key, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = "--epochs 1 --img-size 64 --batch 2 --workers 0 --limit-train 8 --limit-val 6 "
    args += "--max-iters 2"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "-m",
        "app",
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


def test_dice_loss_ignores_ignored_pixels_and_is_zero_when_perfect():
    from vision.engine.losses import segmentation_loss, soft_dice

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 16, 16), generator=g)
    target[0, :4] = 255
    perfect = torch.nn.functional.one_hot(target.clamp(0, 4), 5).permute(0, 3, 1, 2) * 40.0
    assert float(soft_dice(perfect, target)) < 1e-3
    noisy = torch.randn(2, 5, 16, 16, generator=g)
    changed = noisy.clone()
    changed[0, :, :4] = 100 * torch.randn(5, 4, 16, generator=g)  # only ignored pixels
    a, b = (
        segmentation_loss(noisy, target, "ce+dice"),
        segmentation_loss(changed, target, "ce+dice"),
    )
    assert float(a) > 1.0 and torch.allclose(a, b)
    with pytest.raises(ValueError, match="expected one of"):
        segmentation_loss(noisy, target, "focal")


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


@pytest.mark.parametrize("mode", ["pixel", "channel"])
def test_kd_losses_zero_when_equal_positive_otherwise(mode):
    from vision.engine.distill import binary_kd, channel_kd, pearson_mse, pixel_kd

    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 8, 8)
    kd = pixel_kd if mode == "pixel" else channel_kd
    assert kd(a, a.clone(), 2.0).abs() < 1e-6 and kd(a, b, 2.0) > 0.01
    assert binary_kd(a, a.clone(), 2.0).abs() < 1e-6 and binary_kd(a, b, 2.0) > 0.01
    assert pearson_mse(a, 3 * a + 1) < 1e-6 and pearson_mse(a, b) > 0.1  # scale-free


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


KL_3_1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL([.75, .25] ‖ [.5, .5])


def test_kd_losses_equal_their_worked_values():
    """Teacher logits (ln 3, 0) against a uniform student: KL([3/4, 1/4] ‖ [1/2, 1/2]) at
    T = 1; at T = 2 the teacher is sqrt(3):1 and the loss is scaled by T²."""
    from vision.engine.distill import binary_kd, channel_kd, pearson_mse, pixel_kd

    s, t = torch.zeros(1, 2, 1, 1), torch.tensor([math.log(3), 0.0]).view(1, 2, 1, 1)
    assert pixel_kd(s, t, 1.0).item() == pytest.approx(KL_3_1, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    assert pixel_kd(s, t, 2.0).item() == pytest.approx(4 * kl2, rel=1e-6)
    # two pixels, the second void: only the first counts; none valid: 0 that backpropagates
    s2 = torch.zeros(1, 2, 1, 2, requires_grad=True)
    t2 = torch.tensor([[math.log(3), 9.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    valid = torch.tensor([[[True, False]]])
    assert pixel_kd(s2, t2, 1.0, valid).item() == pytest.approx(KL_3_1, rel=1e-6)
    none = pixel_kd(s2, t2, 1.0, torch.zeros(1, 1, 2, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and s2.grad is not None
    # channel-wise: the same distribution, over the two positions of one channel
    assert channel_kd(s.view(1, 1, 1, 2), t.view(1, 1, 1, 2), 1.0).item() == pytest.approx(
        KL_3_1, rel=1e-6
    )
    assert binary_kd(torch.zeros(1), torch.tensor([math.log(3)]), 1.0).item() == pytest.approx(
        KL_3_1, rel=1e-6
    )
    assert binary_kd(torch.zeros(1), torch.tensor([math.log(3)]), 2.0).item() == pytest.approx(
        4 * kl2, rel=1e-6
    )
    # standardized 0..3 against 3..0: (2z)² on average, z² averaging (n - 1) / n = 3/4
    a = torch.arange(4.0).view(1, 1, 2, 2)
    assert pearson_mse(a, a.flip(-1).flip(-2)).item() == pytest.approx(3.0, rel=1e-5)


def test_distiller_losses_modes_and_refusals():
    from vision.engine.distill import Distiller, _fpn_width, channel_kd, pixel_kd

    torch.manual_seed(0)
    s, te = build_model("fcn8s_slim", 3, input_size=64), build_model("fcn8s_slim", 3, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.zeros(2, 64, 64, dtype=torch.long)
    targets[:, :32] = 255
    out = s(x)
    with torch.no_grad():
        t_out = te.eval()(x)
    d = Distiller(s, te, weight=3.0, temperature=2.0)
    want = 3.0 * pixel_kd(out, t_out, 2.0, targets != 255)
    assert d(x, targets, out).item() == pytest.approx(want.item(), rel=1e-6)
    assert d(x, targets, out).item() != pytest.approx(3.0 * pixel_kd(out, t_out, 2.0).item())
    assert d(x, None, out).item() == pytest.approx(3.0 * pixel_kd(out, t_out, 2.0).item())
    ch = Distiller(s, te, weight=0.5, temperature=4.0, mode="channel")
    assert ch(x, targets, out).item() == pytest.approx(0.5 * channel_kd(out, t_out, 4.0).item())
    assert all(not p.requires_grad for p in te.parameters()) and not te.training
    with pytest.raises(ValueError, match="expected one of"):
        Distiller(s, te, mode="feature")
    det = build_model("fcos_slim", 3, input_size=64, fpn_width=32)
    with pytest.raises(ValueError, match="teacher: expected a segmentation model"):
        Distiller(s, det)
    det.train()
    assert _fpn_width(det) == 32 and det.training  # read by a forward pass, mode restored
    twin = build_model("fcos_slim", 3, input_size=64, fpn_width=32)
    twin.load_state_dict(det.state_dict())
    same = Distiller(det, twin, weight=2.0)
    assert same.adapter is None
    det.eval()  # batch statistics would make the twins differ
    with torch.no_grad():
        det(x)  # the hooks keep the student's features and logits
    assert same(x).item() == pytest.approx(0.0, abs=1e-5)  # identical nets: nothing to learn
    twin.net.head.classification_head.cls_logits.bias.data += 1.0
    half = Distiller(det, twin, weight=1.0)
    with torch.no_grad():
        det(x)  # both distillers' hooks see this pass
        one, other = same(x).item(), half(x).item()
    assert one > 0.01 and other == pytest.approx(one / 2, rel=1e-5)
    wide = Distiller(build_model("fcos_slim", 3, input_size=64), build_model("fcos_slim", 3,
                     input_size=64, fpn_width=32))  # fmt: skip
    assert (wide.adapter.in_channels, wide.adapter.out_channels) == (64, 32)


def test_soft_dice_and_segmentation_loss_worked_values():
    """Pixel 1: probabilities (1/2, 1/2, 0), class 0; pixel 2: (3/4, 1/4, 0), class 1; a void
    pixel counts for nothing; class 2 is in no label and is left out of the mean.
    Dice (eps 1): class 0 (2 * 1/2 + 1) / (5/4 + 1 + 1), class 1 (2 * 1/4 + 1) / (3/4 + 1 + 1)."""
    from vision.engine.losses import segmentation_loss, soft_dice

    logits = torch.tensor([[0.0, math.log(3), 5.0], [0.0, 0.0, -5.0], [-100.0, -100.0, 0.0]])
    logits = logits.view(1, 3, 1, 3).requires_grad_(True)
    target = torch.tensor([[[0, 1, 255]]])
    d0, d1 = 2 / 3.25, 1.5 / 2.75
    assert soft_dice(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    assert soft_dice(logits, target, eps=0.0).item() == pytest.approx(
        1 - (1 / 2.25 + 0.5 / 1.75) / 2, rel=1e-6
    )
    ce = (math.log(2) + math.log(4)) / 2
    assert segmentation_loss(logits, target).item() == pytest.approx(ce, rel=1e-6)
    both = segmentation_loss(logits, target, "ce+dice")
    assert both.item() == pytest.approx(ce + 1 - (d0 + d1) / 2, rel=1e-6)
    void = soft_dice(logits, torch.full((1, 1, 3), 255))
    void.backward()
    assert void.item() == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"unknown segmentation loss 'dice': expected one of"):
        segmentation_loss(logits, target, "dice")
