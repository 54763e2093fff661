"""The Trainer's hooks: a hook of one's own sees every point of a run in order, and early
stopping ends a run after `patience` validations without a new best."""

from __future__ import annotations

from types import SimpleNamespace

from eval.metrics import build_evaluator
from vision.engine.hooks import EarlyStoppingHook, Hook, default_hooks
from vision.engine.train import train
from vision.recipe import validate


class Recorder(Hook):
    def __init__(self):
        self.events = []

    def before_train(self, trainer):
        self.events.append("before_train")

    def before_epoch(self, trainer, epoch):
        self.events.append(f"before_epoch {epoch}")

    def after_step(self, trainer, loss):
        self.events.append(f"step {trainer.step}")

    def after_epoch(self, trainer, epoch):
        self.events.append(f"after_epoch {epoch} {'val' if trainer.score_text else ''}".strip())

    def after_train(self, trainer):
        self.events.append("after_train")


def test_a_hook_of_ones_own_sees_every_point_in_order(shapes_yaml, tmp_path):
    cfg = validate({"task": "segmentation", "data": str(shapes_yaml), "model": "fcn32s",
                    "out": str(tmp_path), "epochs": 2, "img_size": 64, "batch": 4,
                    "workers": 0, "limit_train": 8, "limit_val": 4, "max_iters": 2,
                    "val_every": 2, "warmup_iters": 0, "threads": 1})  # fmt: skip
    rec = Recorder()
    summary = train(cfg, build_evaluator, log=lambda *a: None, hooks=[*default_hooks(cfg), rec])
    assert rec.events == ["before_train", "before_epoch 0", "step 1", "step 2", "after_epoch 0",
                          "before_epoch 1", "step 3", "step 4", "after_epoch 1 val",
                          "after_train"]  # fmt: skip
    assert summary["epoch"] == 2 and "seg/mIoU" in summary  # validated after the last only
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_early_stopping_after_patience_validations_without_a_new_best():
    hook, logs = EarlyStoppingHook(2), []
    t = SimpleNamespace(stop=False, log=logs.append, evaluator=SimpleNamespace(primary="m"))
    for epoch, (validated, best) in enumerate([(1, 1), (0, 0), (1, 0), (1, 1), (1, 0), (1, 0)]):
        t.score_text, t.is_best = (", m 0.5" if validated else ""), bool(best)
        hook.after_epoch(t, epoch)
        if t.stop:
            break
    assert (
        t.stop
        and epoch == 5
        and logs == ["[train] early stop after epoch 6: no better m in 2 validations"]
    )
    cfg = validate({"task": "detection", "data": "x", "model": "fcos_r18", "out": "o",
                    "patience": 3})  # fmt: skip
    assert type(default_hooks(cfg)[-1]).__name__ == "EarlyStoppingHook"
