"""The Trainer: one training run of a detector or a segmenter, its concerns in hooks.

``Trainer(cfg, make_evaluator).fit()`` builds the data, the model (from scratch, from
``--weights``, or resumed), the distiller, the optimizer and the schedule, then runs the
epochs; each epoch's steps run here, and everything else — the schedule's steps, backbone
warm-up, distillation's decay, validation, checkpoints, ``metrics.jsonl``, TensorBoard, early
stopping — is a hook (``vision.engine.hooks``), called at fixed points with this trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_segmentation,
)
from vision.engine.checkpoint import load_checkpoint, load_matching, set_rng_state
from vision.engine.distributed import ShardSampler, init_distributed, is_main
from vision.engine.hooks import Hook, default_hooks
from vision.engine.losses import segmentation_loss
from vision.models import build_model, load_weights
from vision.predictor import Predictor
from vision.recipe import TrainConfig


class Trainer:
    """One run. State the hooks read and set: ``cfg``, ``model``, ``optimizer``,
    ``scheduler``, ``scaler``, ``predictor``, ``evaluator``, ``val_reader``, ``distiller``,
    ``backbone``, ``out``, ``epoch``, ``step``, ``start``, ``best``, ``summary`` (this epoch's
    row), ``is_best``, ``score_text``, ``stop``, ``rank``, ``world``, ``log``."""

    def __init__(
        self, cfg: TrainConfig, make_evaluator: Callable, log: Callable = print, hooks=None
    ):
        self.cfg, self.make_evaluator, self.log = cfg, make_evaluator, log
        self.hooks: list[Hook] = list(hooks if hooks is not None else default_hooks(cfg))
        self.out = Path(cfg.out)
        self.step, self.start, self.best = 0, 0, -math.inf
        self.summary: dict = {}
        self.is_best, self.score_text, self.stop = False, "", False
        self.distiller = None

    # -- the run -------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train; returns the last epoch's summary (also the last line of metrics.jsonl)."""
        self.setup()
        self.out.mkdir(parents=True, exist_ok=True)
        self._call("before_train")
        self._log_header()
        end = self.cfg.epochs
        if self.cfg.stop_after is not None:
            end = min(end, self.start + self.cfg.stop_after)
        for epoch in range(self.start, end):
            self.epoch = epoch
            self.sampler.set_epoch(epoch)
            self.train_ds.epoch = epoch
            self._call("before_epoch", epoch)
            stats = self.run_epoch(epoch)
            self.summary = {"epoch": epoch + 1, **stats}
            self._call("after_epoch", epoch)
            if self.stop:
                break
        self._call("after_train")
        return self.summary

    def _call(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def _log_header(self) -> None:
        c = self.cfg
        self.log(
            f"[train] {c.model} on {self.dataset.name} {c.task}: {len(self.train_reader)} train "
            f"/ {len(self.val_reader)} val images, {c.epochs} epochs, {c.img_size} px, batch "
            f"{c.batch}, device {self.device}, world {self.world}"
        )

    # -- set-up, in the order the run depends on (and its random numbers are drawn) ---------
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.kd_cache and not cfg.teacher:
            raise ValueError("--kd-cache: expected --teacher CKPT (what to cache), got no teacher")
        self.rank, self.world, self.device = init_distributed()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.dataset = load_config(cfg.data)
        self._data()
        self._model()
        self.amp = autocast_dtype(cfg, self.device, self.log)
        if cfg.teacher:
            self._distiller()
        self.loader = train_loader(cfg, self.train_ds, self.sampler, cached=cfg.kd_cache)
        self.net = DistributedDataParallel(self.model) if self.world > 1 else self.model
        self._optimizer()
        self.evaluator = self.make_evaluator(cfg.task, self.val_reader, self.dataset.names)
        self.predictor = Predictor(self.model, self.device, autocast=self.amp)  # validation
        if self.resume_ck is not None:
            self._restore(self.resume_ck)

    def _data(self) -> None:
        cfg, d = self.cfg, self.dataset
        self.train_reader = build_dataset(d, cfg.task, "train")
        self.val_reader = build_dataset(d, cfg.task, "val")
        for split, r in (("train", self.train_reader), ("val", self.val_reader)):
            if r.skips.total:  # the config asked for lenient reading: say what was left out
                self.log(f"[train] {d.name} {split}: {r.skips.summary()}")
        self.train_reader.limit(cfg.limit_train)
        self.val_reader.limit(cfg.limit_val)
        tf = DetectionTransform if cfg.task == "detection" else SegmentationTransform
        self.train_ds = TransformedDataset(
            self.train_reader, tf(cfg.img_size, train=True), seed=cfg.seed
        )
        self.sampler = ShardSampler(len(self.train_ds), shuffle=True, seed=cfg.seed)

    def _model(self) -> None:
        cfg, d = self.cfg, self.dataset
        labels = (
            {"background": d.background, "colors": d.colors} if cfg.task == "segmentation" else {}
        )
        self.model = build_model(
            cfg.model,
            len(d.names),
            class_names=d.names,
            input_size=cfg.img_size,
            **labels,
            **cfg.model_kwargs,
        )
        self.resume_ck = None
        if cfg.resume:
            where = self.out / "last.pt" if cfg.resume == "auto" else cfg.resume
            self.resume_ck = load_checkpoint(where)
        start = self.resume_ck or (load_checkpoint(cfg.weights) if cfg.weights else None)
        if start is not None and start.get("meta", {}).get("pruned"):
            from vision.models.reshape import fit_to_state_dict  # its shapes, then weights

            fit_to_state_dict(self.model, start["model"])
            self.model.meta.pruned = start["meta"]["pruned"]
        if cfg.weights:
            r = load_matching(self.model, load_weights(cfg.weights))
            self.log(
                f"[train] --weights {cfg.weights}: loaded {len(r['loaded'])} tensors, skipped "
                f"{len(r['shape_mismatch'])} for shape {r['shape_mismatch'][:4]}, "
                f"{len(r['missing'])} not in the checkpoint"
            )
        self.backbone = [p for m in self.model.backbone_modules() for p in m.parameters()]
        if cfg.freeze_backbone:
            for p in self.backbone:
                p.requires_grad_(False)
            self.log(f"[train] froze {len(self.backbone)} backbone tensors")
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _distiller(self) -> None:
        from vision.engine.distill import Distiller

        cfg = self.cfg
        teacher = Predictor.from_checkpoint(cfg.teacher, self.device).model
        self.distiller = Distiller(  # an unknown KD option fails here
            self.model,
            teacher,
            weight=cfg.kd_weight,
            temperature=cfg.kd_temperature,
            mode=cfg.kd_mode,
            stride=cfg.kd_stride,
            decay=cfg.kd_decay,
            logit_loss=cfg.kd_logit_loss,
            box_weight=cfg.kd_box_weight,
        ).to(self.device)
        self.log(
            f"[train] distilling from {cfg.teacher} ({teacher.meta.name}, "
            f"{self.distiller.describe()})"
        )
        if cfg.kd_teacher_runtime != "torch":
            self._teacher_runtime(teacher)
        if cfg.kd_cache:
            from vision.engine.soft_labels import cached_teacher_dataset

            self.train_ds = cached_teacher_dataset(
                self.train_ds, self.distiller, self.device, self.amp, self.log
            )

    def _teacher_runtime(self, teacher) -> None:
        from vision.engine.soft_labels import view_batches
        from vision.engine.teacher_runtime import ort_teacher

        cfg = self.cfg

        def calibration() -> list:  # int8: the first 32 training images, unaugmented
            tf = type(self.train_ds.transform)(cfg.img_size)
            return [x.numpy() for _, x in view_batches(self.train_reader, tf, 32)]

        self.distiller.runtime = ort_teacher(
            teacher, cfg.kd_teacher_runtime, self.out / "teacher", calibration,
            log=self.log, size=cfg.img_size,
        )  # fmt: skip

    def _optimizer(self) -> None:
        cfg = self.cfg
        ids = {id(p) for p in self.backbone}
        head = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        if self.distiller is not None:  # a 1x1 adapter when the FPN widths differ
            head += list(self.distiller.parameters())
        groups = [{"params": head}]
        if not cfg.freeze_backbone:  # its own rate (pretrained backbones learn slower)
            groups.append({"params": self.backbone, "lr": cfg.lr * cfg.backbone_lr_mult})
        self.optimizer = make_optimizer(cfg, groups)
        self.iters = cfg.max_iters or len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_schedule(cfg, cfg.epochs * self.iters)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def _restore(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.start, self.best, self.step = ck["epoch"], ck["best"], ck["step"]
        set_rng_state(ck["rng"])
        self.log(
            f"[train] resumed from epoch {self.start} (best {self.evaluator.primary} "
            f"{self.best:.4f})"
        )

    # -- one epoch -------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> dict:
        """The epoch's steps; stops with a message naming the step if the loss is not
        finite. Returns the epoch's training statistics."""
        cfg = self.cfg
        self.net.train()
        if cfg.freeze_bn:  # pretrained statistics kept
            for m in self.model.backbone_modules():
                for bn in m.modules():
                    if isinstance(bn, torch.nn.BatchNorm2d):
                        bn.eval()
        n_images, loss_sum, n_steps, t0 = 0, 0.0, 0, time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not is_main(),
            mininterval=2.0,
            leave=False,
            dynamic_ncols=True,
        )
        for i, (images, targets, *cached) in enumerate(bar):  # cached: --kd-cache's outputs
            if cfg.max_iters is not None and i >= cfg.max_iters:
                break
            loss = self.train_step(images, targets, cached, i)
            n_images += images.shape[0]
            loss_sum += loss
            n_steps += 1
            lr = self.optimizer.param_groups[0]["lr"]
            rate = n_images / (time.perf_counter() - t0)
            bar.set_postfix(
                loss=f"{loss_sum / n_steps:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False
            )
        elapsed = time.perf_counter() - t0
        return {
            "train_loss": loss_sum / max(n_steps, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": n_images / max(elapsed, 1e-9),
            "train_time_s": elapsed,
        }

    def train_step(self, images, targets, cached: list, i: int) -> float:
        """One optimizer step; the ``after_step`` hooks (the schedule's step first) follow."""
        cfg = self.cfg
        images, targets = to_device(self.device, images, targets, cfg.task, cfg.channels_last)
        amp = self.amp
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = self.loss(images, targets, cached)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at epoch {self.epoch + 1}, step {i} (global step {self.step}): "
                "expected a finite loss; lower the learning rate, enable --clip, or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self._call("after_step", value)
        return value

    def loss(self, images, targets, cached: list):
        """The task's loss, plus distillation's (which reads a detector's features through
        the student's taps)."""
        if self.cfg.task == "detection":
            loss = sum(self.net(images, targets).values())
            if self.distiller is not None:
                loss = loss + self.distiller(images, None, None, *cached)
            return loss
        logits = self.net(images)
        loss = segmentation_loss(logits, targets, self.cfg.seg_loss)
        if self.distiller is not None:
            loss = loss + self.distiller(images, targets, logits, *cached)
        return loss


def to_device(device, images, targets, task: str, channels_last: bool):
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


def train_loader(cfg: TrainConfig, train_ds, sampler, cached: bool = False):
    """``cached``: the items carry the teacher's cached outputs (``soft_labels.py``)."""
    collate = collate_detection if cfg.task == "detection" else collate_segmentation
    if cached:
        from vision.engine.soft_labels import collate_cached

        collate = collate_cached(collate)
    return torch.utils.data.DataLoader(
        train_ds,
        cfg.batch,
        sampler=sampler,
        drop_last=len(train_ds) > cfg.batch,
        collate_fn=collate,
        num_workers=cfg.workers,
        persistent_workers=False,
    )


def lr_schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def factor(it: int) -> float:
        if it < cfg.warmup_iters:
            return 0.001 + (1 - 0.001) * it / max(cfg.warmup_iters, 1)
        t = min((it - cfg.warmup_iters) / max(total - cfg.warmup_iters, 1), 1.0)
        if cfg.schedule == "poly":
            return (1 - t) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor


def autocast_dtype(cfg: TrainConfig, device: torch.device, log: Callable) -> torch.dtype | None:
    """float16 on CUDA (with gradient scaling), bfloat16 on the CPU when asked, else None."""
    if device.type == "cuda" and cfg.amp:
        return torch.float16
    if device.type == "cpu" and cfg.bf16:
        if not torch.cpu._is_avx512_bf16_supported():
            log("[train] --bf16: this CPU has no native bfloat16 (AVX512-BF16): may be slower")
        return torch.bfloat16
    return None


def make_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {cfg.optimizer!r}")
