"""Train a detector or a segmenter.

    vision train detect  --data datasets/shapes.yaml --model fcos_r18 --epochs 12 \\
        --img-size 192 --batch 16 --out runs/fcos_r18
    vision train segment --data datasets/shapes.yaml --model fcn8s --epochs 8 --out runs/fcn8s
    torchrun --nproc_per_node=2 -m vision_cli train segment ...     # distributed (gloo/NCCL)

Validation runs the one evaluation pass (``vision.engine.loop.evaluate``: the run's model
behind a ``Predictor``, as ``vision eval run`` and suites score checkpoints) into an evaluator
built by the caller's ``make_evaluator(task, val_reader, class_names)`` (the command line
passes ``eval.metrics.build_evaluator``); the evaluator names its primary metric
(``evaluator.primary``, e.g. ``coco/AP``), which chooses ``best.pt``. The run folder receives
``args.json``, ``metrics.jsonl``, TensorBoard scalars (``tb/``), ``last.pt`` and ``best.pt``.
``last.pt`` holds everything needed to resume; ``best.pt`` only the weights, metadata and
recipe (a third of the size with AdamW), which is all evaluation, prediction and promotion read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from vision.config import DatasetConfig, load_config
from vision.data.build import build_dataset
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_segmentation,
)
from vision.engine.checkpoint import (
    load_checkpoint,
    load_matching,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vision.engine.distributed import ShardSampler, init_distributed, is_main
from vision.engine.loop import evaluate, train_one_epoch
from vision.models import build_model, load_weights
from vision.predictor import Predictor
from vision.recipe import TrainConfig, validate

BEST_KEYS = ("model", "epoch", "step", "best", "meta", "args")


def finetune_config(recipe: dict, **overrides) -> TrainConfig:
    """A fine-tuning run of a checkpoint's own recipe (``ck["args"]``): its options, with
    resuming and distillation off and warm-up capped at 20 iterations, then ``overrides``
    (checked as a recipe is)."""
    fields = TrainConfig.__dataclass_fields__
    cfg = {k: v for k, v in recipe.items() if k in fields}
    cfg.update(resume=None, stop_after=None)  # and every distillation option at its default:
    cfg.update({k: f.default for k, f in fields.items() if k.startswith(("teacher", "kd_"))})
    cfg["warmup_iters"] = min(int(cfg.get("warmup_iters", 0)), 20)
    return validate({**cfg, **overrides}, "fine-tuning recipe")


def _loaders(cfg: TrainConfig, dcfg: DatasetConfig, log: Callable = print):
    det = cfg.task == "detection"
    train_r = build_dataset(dcfg, cfg.task, "train")
    val_r = build_dataset(dcfg, cfg.task, "val")
    for split, r in (("train", train_r), ("val", val_r)):
        if r.skips.total:  # the config asked for lenient reading: say what was left out
            log(f"[train] {dcfg.name} {split}: {r.skips.summary()}")
    train_r.limit(cfg.limit_train)
    val_r.limit(cfg.limit_val)
    tf = DetectionTransform if det else SegmentationTransform
    train_ds = TransformedDataset(train_r, tf(cfg.img_size, train=True), seed=cfg.seed)
    sampler = ShardSampler(len(train_ds), shuffle=True, seed=cfg.seed)
    return train_r, val_r, train_ds, sampler


def _train_loader(cfg: TrainConfig, train_ds, sampler, cached: bool = False):
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


def _schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def factor(it: int) -> float:
        if it < cfg.warmup_iters:
            return 0.001 + (1 - 0.001) * it / max(cfg.warmup_iters, 1)
        t = min((it - cfg.warmup_iters) / max(total - cfg.warmup_iters, 1), 1.0)
        if cfg.schedule == "poly":
            return (1 - t) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _autocast_dtype(cfg: TrainConfig, device: torch.device, log: Callable) -> torch.dtype | None:
    """float16 on CUDA (with gradient scaling), bfloat16 on the CPU when asked, else None."""
    if device.type == "cuda" and cfg.amp:
        return torch.float16
    if device.type == "cpu" and cfg.bf16:
        if not torch.cpu._is_avx512_bf16_supported():
            log("[train] --bf16: this CPU has no native bfloat16 (AVX512-BF16): may be slower")
        return torch.bfloat16
    return None


def backbone_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The feature extractor's parameters (the model's ``backbone_modules``)."""
    return [p for m in model.backbone_modules() for p in m.parameters()]


def backbone_batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [
        b
        for m in model.backbone_modules()
        for b in m.modules()
        if isinstance(b, torch.nn.BatchNorm2d)
    ]


def _optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {cfg.optimizer!r}")


def train(cfg: TrainConfig, make_evaluator: Callable, log: Callable = print) -> dict:
    """Run training. ``make_evaluator(task, val_reader, class_names)`` builds the validation
    evaluator. Returns the final summary (also written to ``metrics.jsonl``)."""
    if cfg.kd_cache and not cfg.teacher:
        raise ValueError("--kd-cache: expected --teacher CKPT (what to cache), got no teacher")
    rank, world, device = init_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    dcfg = load_config(cfg.data)
    train_r, val_r, train_ds, sampler = _loaders(cfg, dcfg, log)
    names = dcfg.names
    labels = (  # a segmenter's mask indices follow the dataset's label maps
        {"background": dcfg.background, "colors": dcfg.colors} if cfg.task == "segmentation" else {}
    )
    model = build_model(
        cfg.model,
        len(names),
        class_names=names,
        input_size=cfg.img_size,
        **labels,
        **cfg.model_kwargs,
    )
    resume_ck = None
    if cfg.resume:
        resume_ck = load_checkpoint(out / "last.pt" if cfg.resume == "auto" else cfg.resume)
    start_ck = resume_ck or (load_checkpoint(cfg.weights) if cfg.weights else None)
    if start_ck is not None and start_ck.get("meta", {}).get("pruned"):
        from vision.models.reshape import (
            fit_to_state_dict,  # a pruned model: its shapes, then weights
        )

        fit_to_state_dict(model, start_ck["model"])
        model.meta.pruned = start_ck["meta"]["pruned"]
    if cfg.weights:
        report = load_matching(model, load_weights(cfg.weights))
        log(
            f"[train] --weights {cfg.weights}: loaded {len(report['loaded'])} tensors, skipped "
            f"{len(report['shape_mismatch'])} for shape {report['shape_mismatch'][:4]}, "
            f"{len(report['missing'])} not in the checkpoint"
        )
    backbone = backbone_parameters(model)
    if cfg.freeze_backbone:
        for p in backbone:
            p.requires_grad_(False)
        log(f"[train] froze {len(backbone)} backbone tensors")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    meta = model.meta
    amp = _autocast_dtype(cfg, device, log)
    distiller = None
    if cfg.teacher:
        from vision.engine.distill import Distiller

        teacher = Predictor.from_checkpoint(cfg.teacher, device).model
        distiller = Distiller(  # an unknown KD option fails here
            model,
            teacher,
            weight=cfg.kd_weight,
            temperature=cfg.kd_temperature,
            mode=cfg.kd_mode,
            stride=cfg.kd_stride,
            decay=cfg.kd_decay,
            logit_loss=cfg.kd_logit_loss,
            box_weight=cfg.kd_box_weight,
        ).to(device)
        log(f"[train] distilling from {cfg.teacher} ({teacher.meta.name}, {distiller.describe()})")
        if cfg.kd_teacher_runtime != "torch":
            from vision.engine.soft_labels import view_batches
            from vision.engine.teacher_runtime import ort_teacher

            def calibration() -> list:  # int8: the first 32 training images, unaugmented
                tf = type(train_ds.transform)(cfg.img_size)
                return [x.numpy() for _, x in view_batches(train_r, tf, 32)]

            distiller.runtime = ort_teacher(
                teacher, cfg.kd_teacher_runtime, out / "teacher", calibration, log, cfg.img_size
            )
        if cfg.kd_cache:
            from vision.engine.soft_labels import cached_teacher_dataset

            train_ds = cached_teacher_dataset(train_ds, distiller, device, amp, log)
    train_dl = _train_loader(cfg, train_ds, sampler, cached=cfg.kd_cache)
    net = DistributedDataParallel(model) if world > 1 else model
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    if distiller is not None:  # a 1x1 adapter when the FPN widths differ
        head += list(distiller.parameters())
    groups = [{"params": head}]
    if not cfg.freeze_backbone:  # its own rate (pretrained backbones learn slower)
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult})
    optimizer = _optimizer(cfg, groups)
    iters = cfg.max_iters or len(train_dl)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, cfg.epochs * iters))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    evaluator = make_evaluator(cfg.task, val_r, names)
    primary = evaluator.primary
    predictor = Predictor(model, device, autocast=amp)  # validation: the inference path
    start, best, step = 0, -math.inf, 0
    if resume_ck is not None:
        ck = resume_ck
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start, best, step = ck["epoch"], ck["best"], ck["step"]
        set_rng_state(ck["rng"])
        log(f"[train] resumed from epoch {start} (best {primary} {best:.4f})")
    writer = None
    out.mkdir(parents=True, exist_ok=True)
    if is_main():
        (out / "args.json").write_text(json.dumps(asdict(cfg), indent=1))
        _truncate_metrics(out / "metrics.jsonl", start)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    log(
        f"[train] {cfg.model} on {dcfg.name} {cfg.task}: {len(train_r)} train / {len(val_r)} val "
        f"images, {cfg.epochs} epochs, {cfg.img_size} px, batch {cfg.batch}, device {device}, "
        f"world {world}"
    )
    summary: dict = {}
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start + cfg.stop_after)
    for epoch in range(start, end):
        sampler.set_epoch(epoch)
        train_ds.epoch = epoch
        if cfg.freeze_backbone_epochs and not cfg.freeze_backbone:
            warm = epoch < cfg.freeze_backbone_epochs  # the new head learns first
            for p in backbone:
                p.requires_grad_(not warm)
        if distiller is not None:
            distiller.set_epoch(epoch, cfg.epochs)
        stats = train_one_epoch(
            net,
            train_dl,
            optimizer,
            scheduler,
            scaler,
            device,
            cfg.task,
            epoch,
            cfg.epochs,
            cfg.clip,
            amp,
            cfg.channels_last,
            writer,
            step,
            cfg.max_iters,
            cfg.seg_loss,
            distiller,
            backbone_batchnorms(model) if cfg.freeze_bn else (),
        )
        step = stats.pop("steps")
        summary, is_best, score = {"epoch": epoch + 1, **stats}, False, ""
        if (epoch + 1) % max(cfg.val_every, 1) == 0 or epoch + 1 == cfg.epochs:
            t0 = time.perf_counter()
            results, _ = evaluate(predictor, val_r, evaluator, cfg.batch)
            flat = evaluator.scalars(results)
            value = flat[primary]
            value = -math.inf if value is None or math.isnan(value) else value
            summary.update({"val_time_s": time.perf_counter() - t0, **flat})
            is_best = value > best
            best = max(best, value)
            meta.metrics = {"primary": primary, "value": value, "epoch": epoch + 1, **flat}
            score = f", {primary} {value:.4f}"
        ck = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch + 1,
            "step": step,
            "best": best,
            "rng": rng_state(),
            "meta": meta.as_dict(),
            "args": asdict(cfg),
        }
        if is_main():
            save_checkpoint(ck, out / "last.pt")
            if is_best:  # weights only: resuming reads last.pt, so best.pt needs no optimizer
                save_checkpoint({k: ck[k] for k in BEST_KEYS}, out / "best.pt")
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(summary) + "\n")
            for k, v in summary.items():
                writer.add_scalar(f"epoch/{k}", v, epoch + 1)
            log(
                f"[train] epoch {epoch + 1}/{cfg.epochs}: loss {stats['train_loss']:.4f}, "
                f"{stats['images_per_s']:.1f} img/s{score}{' (best)' if is_best else ''}"
            )
        if world > 1:
            (out / f"rank{rank}_metrics.json").write_text(json.dumps(summary))
    if writer is not None:
        writer.close()
    return summary


def _truncate_metrics(path: Path, upto: int) -> None:
    """Keep the lines of epochs ≤ ``upto`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= upto]
    path.write_text("".join(ln + "\n" for ln in keep))
