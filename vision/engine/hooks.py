"""The Trainer's hooks, in the manner of detectron2's ``HookBase``: each concern of a training
run is one hook, called at fixed points of the loop (``before_train``, ``before_epoch``,
``after_step``, ``after_epoch``, ``after_train``) with the trainer, whose state it reads and
sets. ``default_hooks(cfg)`` lists a run's hooks in the order they run; pass more to
``Trainer(hooks=...)``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

BEST_KEYS = ("model", "epoch", "step", "best", "meta", "args")


class Hook:
    """Does nothing at every point; a hook overrides the points it needs."""

    def before_train(self, trainer) -> None: ...

    def before_epoch(self, trainer, epoch: int) -> None: ...

    def after_step(self, trainer, loss: float) -> None: ...

    def after_epoch(self, trainer, epoch: int) -> None: ...

    def after_train(self, trainer) -> None: ...


class SchedulerHook(Hook):
    """The learning-rate schedule, stepped after every optimizer step."""

    def after_step(self, trainer, loss: float) -> None:
        trainer.scheduler.step()


class BackboneWarmupHook(Hook):
    """``freeze_backbone_epochs``: the backbone frozen for the first epochs (the new head
    learns first)."""

    def before_epoch(self, trainer, epoch: int) -> None:
        cfg = trainer.cfg
        if cfg.freeze_backbone_epochs and not cfg.freeze_backbone:
            for p in trainer.backbone:
                p.requires_grad_(epoch >= cfg.freeze_backbone_epochs)


class DistillationHook(Hook):
    """The distillation weight's decay: the epoch's factor set before it starts."""

    def before_epoch(self, trainer, epoch: int) -> None:
        if trainer.distiller is not None:
            trainer.distiller.set_epoch(epoch, trainer.cfg.epochs)


class ValidationHook(Hook):
    """Every ``val_every`` epochs and after the last: the one evaluation pass; its primary
    metric decides ``trainer.is_best``."""

    def after_epoch(self, trainer, epoch: int) -> None:
        from vision.engine.loop import evaluate

        trainer.is_best, trainer.score_text = False, ""
        cfg = trainer.cfg
        if (epoch + 1) % max(cfg.val_every, 1) and epoch + 1 != cfg.epochs:
            return
        t0 = time.perf_counter()
        results, _ = evaluate(trainer.predictor, trainer.val_reader, trainer.evaluator, cfg.batch)
        flat = trainer.evaluator.scalars(results)
        primary = trainer.evaluator.primary
        value = flat[primary]
        value = -math.inf if value is None or math.isnan(value) else value
        trainer.summary.update({"val_time_s": time.perf_counter() - t0, **flat})
        trainer.is_best = value > trainer.best
        trainer.best = max(trainer.best, value)
        trainer.model.meta.metrics = {
            "primary": primary,
            "value": value,
            "epoch": epoch + 1,
            **flat,
        }
        trainer.score_text = f", {primary} {value:.4f}"


class CheckpointHook(Hook):
    """``last.pt`` after every epoch (all a resume needs), ``best.pt`` (weights, metadata and
    recipe) when the epoch is the best so far; the first rank writes."""

    def after_epoch(self, trainer, epoch: int) -> None:
        from vision.engine.checkpoint import rng_state, save_checkpoint
        from vision.engine.distributed import is_main

        ck = {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "epoch": epoch + 1,
            "step": trainer.step,
            "best": trainer.best,
            "rng": rng_state(),
            "meta": trainer.model.meta.as_dict(),
            "args": asdict(trainer.cfg),
        }
        if is_main():
            save_checkpoint(ck, trainer.out / "last.pt")
            if trainer.is_best:  # weights only: resuming reads last.pt
                save_checkpoint({k: ck[k] for k in BEST_KEYS}, trainer.out / "best.pt")


class MetricsLogHook(Hook):
    """``args.json`` (the resolved recipe), ``metrics.jsonl`` (one line per epoch, from the
    same row TensorBoard's ``epoch/`` scalars are written from) and the log line."""

    def before_train(self, trainer) -> None:
        from vision.engine.distributed import is_main

        if is_main():
            (trainer.out / "args.json").write_text(json.dumps(asdict(trainer.cfg), indent=1))
            truncate_metrics(trainer.out / "metrics.jsonl", trainer.start)

    def after_epoch(self, trainer, epoch: int) -> None:
        from vision.engine.distributed import is_main

        s = trainer.summary
        if is_main():
            with open(trainer.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(s) + "\n")
            best = " (best)" if trainer.is_best else ""
            trainer.log(
                f"[train] epoch {epoch + 1}/{trainer.cfg.epochs}: loss {s['train_loss']:.4f}, "
                f"{s['images_per_s']:.1f} img/s{trainer.score_text}{best}"
            )
        if trainer.world > 1:
            (trainer.out / f"rank{trainer.rank}_metrics.json").write_text(json.dumps(s))


class TensorBoardHook(Hook):
    """TensorBoard scalars under ``OUT/tb``: the loss and rate every 10 steps, the epoch's
    summary row (``epoch/...``) after each epoch; the first rank writes."""

    def __init__(self):
        self.writer = None

    def before_train(self, trainer) -> None:
        from vision.engine.distributed import is_main

        if is_main():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(trainer.out / "tb"))

    def after_step(self, trainer, loss: float) -> None:
        if self.writer is not None and trainer.step % 10 == 0:
            self.writer.add_scalar("train/loss", loss, trainer.step)
            self.writer.add_scalar(
                "train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.step
            )

    def after_epoch(self, trainer, epoch: int) -> None:
        if self.writer is not None:
            for k, v in trainer.summary.items():
                self.writer.add_scalar(f"epoch/{k}", v, epoch + 1)

    def after_train(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class EarlyStoppingHook(Hook):
    """``patience``: stop once that many validations in a row brought no new best."""

    def __init__(self, patience: int):
        self.patience, self.waited = patience, 0

    def after_epoch(self, trainer, epoch: int) -> None:
        if not trainer.score_text:  # no validation this epoch
            return
        self.waited = 0 if trainer.is_best else self.waited + 1
        if self.waited >= self.patience:
            trainer.stop = True
            trainer.log(
                f"[train] early stop after epoch {epoch + 1}: no better "
                f"{trainer.evaluator.primary} in {self.patience} validations"
            )


def default_hooks(cfg) -> list[Hook]:
    """A run's hooks, in the order they run at each point."""
    hooks = [
        SchedulerHook(),
        BackboneWarmupHook(),
        DistillationHook(),
        ValidationHook(),
        CheckpointHook(),
        MetricsLogHook(),
        TensorBoardHook(),
    ]
    if cfg.patience:
        hooks.append(EarlyStoppingHook(cfg.patience))
    return hooks


def truncate_metrics(path: Path, upto: int) -> None:
    """Keep the lines of epochs ≤ ``upto`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= upto]
    path.write_text("".join(ln + "\n" for ln in keep))
