"""One training epoch and one evaluation pass, for detectors and segmenters alike."""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from vision.engine.distributed import is_main, world_size
from vision.engine.losses import segmentation_loss
from vision.predictor import Predictor


def _interval() -> float:
    """Progress refresh period: lively on a terminal, sparse in log files."""
    return 1.0 if sys.stderr.isatty() else 30.0


def _to(device, images, targets, task, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if task == "detection":
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
    else:
        targets = targets.to(device, non_blocking=True)
    return images, targets


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    scaler,
    device,
    task: str,
    epoch: int,
    epochs: int,
    clip: float = 0.0,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    writer=None,
    step: int = 0,
    max_iters: int | None = None,
    seg_loss: str = "ce",
    distiller=None,
    frozen_bn=(),
) -> dict:
    """Train for one epoch; stops with a message naming the step if the loss is not finite.
    ``distiller``: adds a knowledge-distillation loss from a frozen teacher (``distill.py``)."""
    model.train()
    for bn in frozen_bn:  # pretrained statistics kept (--freeze-bn)
        bn.eval()
    n_images, loss_sum, n_steps, t0 = 0, 0.0, 0, time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{epochs}",
        disable=not is_main(),
        mininterval=2.0,
        leave=False,
        dynamic_ncols=True,
    )
    for i, (images, targets, *cached) in enumerate(bar):  # cached: --kd-cache's outputs
        if max_iters is not None and i >= max_iters:
            break
        images, targets = _to(device, images, targets, task, channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if task == "detection":
                losses = model(images, targets)
                loss = sum(losses.values())
                if distiller is not None:  # reads the student's features through hooks
                    loss = loss + distiller(images, None, None, *cached)
            else:
                logits = model(images)
                loss = segmentation_loss(logits, targets, seg_loss)
                if distiller is not None:
                    loss = loss + distiller(images, targets, logits, *cached)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {epoch + 1}, step {i} (global step {step}): "
                "expected a finite loss; lower the learning rate, enable --clip, or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        n_images += images.shape[0]
        loss_sum += loss.item()
        n_steps += 1
        lr = optimizer.param_groups[0]["lr"]
        rate = n_images / (time.perf_counter() - t0)
        bar.set_postfix(
            loss=f"{loss_sum / n_steps:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False
        )
        if writer is not None and step % 10 == 0:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", lr, step)
    elapsed = time.perf_counter() - t0
    return {
        "train_loss": loss_sum / max(n_steps, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": n_images / max(elapsed, 1e-9),
        "train_time_s": elapsed,
        "steps": step,
    }


def evaluate(
    predictor: Predictor, reader, evaluator, batch: int = 8, keep: int = 0, observe=None
) -> tuple[dict, list[dict]]:
    """The one evaluation pass (training validation, ``vision eval run``, suites): this rank's
    shard of ``reader`` (items ``rank, rank + world, ...``) through ``predictor`` in batches,
    each batch's results in original pixels handed to ``evaluator.process``. Returns
    ``evaluator.evaluate()`` (collective under ``torch.distributed``) and the first ``keep``
    results of this rank (for drawn samples).

    ``inputs[i]`` holds ``image_id`` and, for segmentation, the original-size ``mask``."""
    predictor.model.eval()
    evaluator.reset()
    rank = dist.get_rank() if dist.is_initialized() else 0
    idx = list(range(rank, len(reader), world_size()))
    kept: list[dict] = []
    seg = predictor.task == "segmentation"
    steps = range(0, len(idx), batch)
    for i in tqdm(steps, desc="validate", disable=not is_main(), leave=False, mininterval=2.0):
        samples = [reader[j] for j in idx[i : i + batch]]
        outputs = predictor([s.image for s in samples])
        inputs = [{"image_id": s.image_id, **({"mask": s.mask} if seg else {})} for s in samples]
        evaluator.process(inputs, outputs)
        if observe is not None:  # e.g. each image's own score (reports choose samples by it)
            observe(samples, outputs)
        kept += outputs[: max(keep - len(kept), 0)]
    return evaluator.evaluate(), kept
