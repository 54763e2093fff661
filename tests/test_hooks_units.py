"""The Trainer's hooks one by one on a stand-in trainer (the state each reads and sets), the
one evaluation pass on a tiny reader, and the fine-tuning recipe."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from vision.engine import hooks as H
from vision.models.common import ModelMeta


@dataclass
class Cfg:
    epochs: int = 4
    val_every: int = 2
    batch: int = 2
    freeze_backbone: bool = False
    freeze_backbone_epochs: int = 0
    patience: int | None = None


class Evaluator:
    primary = "m/score"

    def __init__(self, values=(0.5,)):
        self.values, self.calls, self.processed = list(values), [], []

    def reset(self):
        self.calls.append("reset")
        self.processed = []

    def process(self, inputs, outputs):
        self.processed.append((inputs, outputs))

    def evaluate(self):
        self.calls.append("evaluate")
        return {"m": {"score": self.values.pop(0)}}

    def scalars(self, results):
        return {"m/score": results["m"]["score"], "m/other": 1.0}


class Predictor:
    def __init__(self, task="detection"):
        self.task, self.model, self.batches = task, nn.Linear(1, 1), []
        self.model.train()

    def __call__(self, images):
        self.batches.append(len(images))
        return [{"i": int(im[0, 0, 0])} for im in images]


class Reader:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((2, 2, 3), i, np.uint8)
        return SimpleNamespace(image=image, image_id=f"id{i}", mask=np.full((2, 2), i))


# ---- hooks ----------------------------------------------------------------------------------


def _trainer(tmp_path, **kw):
    model = nn.Linear(2, 2)
    model.meta = ModelMeta("m", "detection", ["a"], 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    t = SimpleNamespace(
        cfg=Cfg(),
        model=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        step=7,
        best=-math.inf,
        is_best=False,
        score_text="",
        out=tmp_path,
        summary={"epoch": 1, "train_loss": 0.25, "images_per_s": 12.34},
        logs=[],
        world=1,
        rank=0,
        start=0,
        stop=False,
        distiller=None,
        predictor=Predictor(),
        val_reader=Reader(3),
        evaluator=Evaluator(),
    )
    t.log = t.logs.append
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_base_hook_does_nothing(tmp_path):
    t, h = _trainer(tmp_path), H.Hook()
    before = dict(vars(t))
    for call in (
        h.before_train(t),
        h.before_epoch(t, 0),
        h.after_step(t, 1.0),
        h.after_epoch(t, 0),
        h.after_train(t),
    ):
        assert call is None
    assert vars(t) == before


def test_scheduler_steps_after_each_step(tmp_path):
    t = _trainer(tmp_path)
    H.SchedulerHook().after_step(t, 1.0)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_backbone_warm_up(tmp_path):
    params = [nn.Parameter(torch.zeros(1)) for _ in range(2)]
    t = _trainer(tmp_path, backbone=params, cfg=Cfg(freeze_backbone_epochs=2))
    hook = H.BackboneWarmupHook()
    for epoch, trainable in ((0, False), (1, False), (2, True), (3, True)):
        hook.before_epoch(t, epoch)
        assert all(p.requires_grad is trainable for p in params), epoch
    frozen = _trainer(
        tmp_path, backbone=params, cfg=Cfg(freeze_backbone=True, freeze_backbone_epochs=2)
    )
    for p in params:
        p.requires_grad_(False)
    hook.before_epoch(frozen, 5)  # kept frozen: the warm-up does not thaw it
    assert not any(p.requires_grad for p in params)
    hook.before_epoch(_trainer(tmp_path, backbone=params), 0)  # no warm-up: left as it is
    assert not any(p.requires_grad for p in params)


def test_distillation_epoch(tmp_path):
    seen = []
    d = SimpleNamespace(set_epoch=lambda e, n: seen.append((e, n)))
    H.DistillationHook().before_epoch(_trainer(tmp_path, distiller=d), 3)
    H.DistillationHook().before_epoch(_trainer(tmp_path), 3)
    assert seen == [(3, 4)]


def test_validation_every_n_epochs_and_after_the_last(tmp_path):
    t = _trainer(tmp_path)
    t.evaluator = Evaluator([0.5, 0.25, float("nan")])
    hook = H.ValidationHook()
    t.is_best, t.score_text = True, "old"
    hook.after_epoch(t, 0)  # epoch 1 of 4, every 2: no validation
    assert (t.is_best, t.score_text, t.evaluator.calls) == (False, "", [])
    hook.after_epoch(t, 1)
    assert t.is_best and t.best == 0.5 and t.score_text == ", m/score 0.5000"
    assert (
        t.summary["m/score"] == 0.5 and t.summary["m/other"] == 1.0 and t.summary["val_time_s"] >= 0
    )
    assert t.model.meta.metrics == {
        "primary": "m/score",
        "value": 0.5,
        "epoch": 2,
        "m/score": 0.5,
        "m/other": 1.0,
    }
    assert t.predictor.batches == [2, 1]  # the recipe's batch
    hook.after_epoch(t, 2)
    assert t.evaluator.calls == ["reset", "evaluate"]  # epoch 3: skipped
    hook.after_epoch(t, 3)  # the last epoch: validated, worse
    assert not t.is_best and t.best == 0.5 and t.score_text == ", m/score 0.2500"
    t.cfg = Cfg(epochs=9, val_every=1)
    hook.after_epoch(t, 4)  # NaN counts as the worst value
    assert not t.is_best and t.best == 0.5 and t.model.meta.metrics["value"] == -math.inf
    t2 = _trainer(tmp_path, cfg=Cfg(val_every=0, epochs=5))
    hook.after_epoch(t2, 0)  # val_every 0 means every epoch
    assert t2.is_best and t2.best == 0.5
    t3 = _trainer(tmp_path, best=0.5)
    hook.after_epoch(t3, 1)
    assert not t3.is_best  # equal is not better


@pytest.mark.parametrize(
    "every, epochs, validated", [(3, 4, [2, 3]), (3, 9, [2, 5, 8]), (1, 2, [0, 1]), (5, 3, [2])]
)
def test_validation_schedule(tmp_path, every, epochs, validated):
    t = _trainer(tmp_path, cfg=Cfg(val_every=every, epochs=epochs))
    t.evaluator = Evaluator([0.5] * 10)
    hook, done = H.ValidationHook(), []
    for epoch in range(epochs):
        hook.after_epoch(t, epoch)
        if t.score_text:
            done.append(epoch)
    assert done == validated  # every N epochs, and after the last


def test_validation_none_is_the_worst(tmp_path):
    t = _trainer(tmp_path, cfg=Cfg(val_every=1))
    t.evaluator = Evaluator([None])
    t.evaluator.scalars = lambda r: {"m/score": None}
    H.ValidationHook().after_epoch(t, 0)
    assert not t.is_best and t.best == -math.inf and t.score_text == ", m/score -inf"


def test_checkpoints_last_always_best_when_best(tmp_path):
    t = _trainer(tmp_path, best=0.75)
    H.CheckpointHook().after_epoch(t, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert sorted(last) == sorted(
        [
            "model",
            "optimizer",
            "scheduler",
            "scaler",
            "epoch",
            "step",
            "best",
            "rng",
            "meta",
            "args",
        ]
    )
    assert (last["epoch"], last["step"], last["best"]) == (3, 7, 0.75)
    assert last["args"] == {
        "epochs": 4,
        "val_every": 2,
        "batch": 2,
        "freeze_backbone": False,
        "freeze_backbone_epochs": 0,
        "patience": None,
    }
    assert last["meta"]["name"] == "m" and "torch" in last["rng"]
    assert last["optimizer"]["param_groups"][0]["lr"] == 0.1 and "model" in last
    assert torch.equal(last["model"]["weight"], t.model.weight.detach())
    assert last["scheduler"]["step_size"] == 1 and isinstance(last["scaler"], dict)
    t.is_best = True
    H.CheckpointHook().after_epoch(t, 3)
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert sorted(best) == sorted(H.BEST_KEYS) and best["epoch"] == 4
    assert H.BEST_KEYS == ("model", "epoch", "step", "best", "meta", "args")


def test_metrics_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    t = _trainer(tmp_path, start=2)
    hook = H.MetricsLogHook()
    hook.before_train(t)
    assert json.loads((tmp_path / "args.json").read_text()) == {
        "epochs": 4,
        "val_every": 2,
        "batch": 2,
        "freeze_backbone": False,
        "freeze_backbone_epochs": 0,
        "patience": None,
    }
    assert (tmp_path / "args.json").read_text().startswith('{\n "epochs": 4')
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    t.summary = {"epoch": 3, "train_loss": 0.123456, "images_per_s": 12.34}
    hook.after_epoch(t, 2)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines()[-1] == json.dumps(t.summary)
    assert t.logs == ["[train] epoch 3/4: loss 0.1235, 12.3 img/s"]
    t.is_best, t.score_text = True, ", m 0.5000"
    hook.after_epoch(t, 3)
    assert t.logs[-1] == "[train] epoch 4/4: loss 0.1235, 12.3 img/s, m 0.5000 (best)"
    assert not list(tmp_path.glob("rank*"))
    t.world, t.rank = 2, 0
    hook.after_epoch(t, 3)
    assert json.loads((tmp_path / "rank0_metrics.json").read_text()) == t.summary


def test_truncate_metrics(tmp_path):
    p = tmp_path / "m.jsonl"
    H.truncate_metrics(p, 3)
    assert not p.exists()
    p.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": 3}\n')
    H.truncate_metrics(p, 2)
    assert p.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    H.truncate_metrics(p, 0)
    assert p.read_text() == ""


class Writer:
    def __init__(self):
        self.scalars, self.closed = [], False

    def add_scalar(self, k, v, step):
        self.scalars.append((k, v, step))

    def close(self):
        self.closed = True


def test_tensorboard(tmp_path):
    hook = H.TensorBoardHook()
    t = _trainer(tmp_path)
    for call in (
        lambda: hook.after_step(t, 1.0),
        lambda: hook.after_epoch(t, 0),
        lambda: hook.after_train(t),
    ):
        call()  # no writer yet: nothing happens
    hook.before_train(t)
    assert type(hook.writer).__name__ == "SummaryWriter" and (tmp_path / "tb").is_dir()
    hook.writer.close()
    hook.writer = w = Writer()
    for step in (9, 10, 11, 20):
        t.step = step
        hook.after_step(t, 0.5)
    assert w.scalars == [
        ("train/loss", 0.5, 10),
        ("train/lr", 0.1, 10),
        ("train/loss", 0.5, 20),
        ("train/lr", 0.1, 20),
    ]
    w.scalars = []
    hook.after_epoch(t, 2)
    assert w.scalars == [
        ("epoch/epoch", 1, 3),
        ("epoch/train_loss", 0.25, 3),
        ("epoch/images_per_s", 12.34, 3),
    ]
    hook.after_train(t)
    assert w.closed


def test_early_stopping(tmp_path):
    hook = H.EarlyStoppingHook(2)
    t = _trainer(tmp_path)
    t.evaluator.primary = "m"
    for epoch, (text, best) in enumerate([(", m", True), ("", False), (", m", False)]):
        t.score_text, t.is_best = text, best
        hook.after_epoch(t, epoch)
    assert not t.stop and hook.waited == 1
    t.score_text, t.is_best = ", m", True
    hook.after_epoch(t, 3)
    assert hook.waited == 0 and not t.stop
    t.is_best = False
    hook.after_epoch(t, 4)
    hook.after_epoch(t, 5)
    assert t.stop and t.logs == ["[train] early stop after epoch 6: no better m in 2 validations"]
    once = H.EarlyStoppingHook(1)
    once.after_epoch(t2 := _trainer(tmp_path, score_text=", m", is_best=False), 0)
    assert t2.stop and once.patience == 1


def test_default_hooks_in_order():
    names = [type(h).__name__ for h in H.default_hooks(Cfg())]
    assert names == [
        "SchedulerHook",
        "BackboneWarmupHook",
        "DistillationHook",
        "ValidationHook",
        "CheckpointHook",
        "MetricsLogHook",
        "TensorBoardHook",
    ]
    last = H.default_hooks(Cfg(patience=3))[-1]
    assert isinstance(last, H.EarlyStoppingHook) and last.patience == 3 and last.waited == 0
    assert H.TensorBoardHook().writer is None
