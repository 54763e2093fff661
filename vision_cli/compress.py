"""``vision compress prune|table``: structured pruning with fine-tuning, and the compression
table (every model × its deployable variants, scored and timed side by side)."""

from __future__ import annotations

import json
from pathlib import Path

# training options compress prune takes for its fine-tuning (distillation, rates, seed)
FINETUNE_OPTIONS = ("teacher", "kd_weight", "kd_temperature", "kd_mode", "kd_cache", "kd_stride",
                    "kd_decay", "kd_logit_loss", "kd_box_weight", "kd_teacher_runtime", "lr",
                    "backbone_lr_mult", "seed")  # fmt: skip


def add_commands(sub) -> None:
    from vision_cli.options import add_options

    c = sub.add_parser("compress", help="pruning, and the compression table")
    c = c.add_subparsers(dest="cmd", required=True)
    p = c.add_parser("prune", help="prune channels, fine-tune, score")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="shapes")
    p.add_argument("--ratio", type=float, nargs="+", default=[0.3, 0.5], help="FLOPs to remove")
    p.add_argument("--importance", default="magnitude", choices=["magnitude", "bn", "taylor"])
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=2,
        help="fine-tuning epochs per step (0: prune only, writing pruned.pt and prune.json)",
    )
    p.add_argument(
        "--finetune-budget",
        type=float,
        default=None,
        help="fine-tune for this share of the checkpoint's own training iterations "
        "(e.g. 0.3; replaces --finetune-epochs)",
    )
    # the fine-tuning's training options, generated from the recipe's fields (they default
    # to the pruned checkpoint's own recipe)
    add_options(p, FINETUNE_OPTIONS)
    p.add_argument(
        "--round-to",
        type=int,
        default=8,
        help="keep pruned widths multiples of this (SIMD channel blocks; 1: exact ratio)",
    )
    p.add_argument("--steps", type=int, default=1, help="prune and fine-tune in this many steps")
    p.add_argument("--taylor-batches", type=int, default=4, help="batches for Taylor importance")
    p.add_argument("--scope", default="all", choices=["all", "inner"], help="channels to prune")
    p.add_argument(
        "--ranking",
        default="layer",
        choices=["layer", "global"],
        help="layer: every layer loses the same share; global: the lowest-scored channels "
        "of the whole network go",
    )
    p.add_argument(
        "--recalibrate",
        type=int,
        default=None,
        help="batches of training images that re-estimate BatchNorm statistics after pruning "
        "(0: off; default 40, or 0 with --reconstruct, whose refitted layers reproduce the "
        "statistics the network has)",
    )
    p.add_argument(
        "--reconstruct",
        type=int,
        default=0,
        help="batches of training images on which every convolution of the pruned network is "
        "refitted by least squares to the unpruned layer's outputs (0: off)",
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prune)
    t = c.add_parser("table", help="several checkpoints and their variants in one table")
    t.add_argument("--checkpoint", nargs="+", required=True, help="LABEL=CKPT or CKPT")
    t.add_argument("--data", default="shapes")
    t.add_argument("--variants", nargs="+", default=["eager", "onnx", "int8"])
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--iters", type=int, default=10)
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_table)


def _train_reader(recipe: dict, task: str):
    """The recipe's training images (its ``limit_train`` respected)."""
    from vision.config import load_config
    from vision.data.build import build_dataset

    reader = build_dataset(load_config(recipe["data"]), task, "train")
    reader.limit(recipe.get("limit_train"))
    return reader


def _batches(model, reader, recipe: dict, n: int, train: bool = True, seed: int = 0):
    """``n`` batches ``(images, targets)`` of ``reader``, as training (``train``; its random
    augmentation seeded by ``seed``) or evaluation (no augmentation) transforms them."""
    from vision.data import transforms as T

    det = model.meta.task == "detection"
    tf = (T.DetectionTransform if det else T.SegmentationTransform)(recipe["img_size"], train)
    collate = T.collate_detection if det else T.collate_segmentation
    data, batch = T.TransformedDataset(reader, tf, seed=seed), recipe.get("batch", 8)
    for i in range(min(n, len(reader) // batch)):
        yield collate([data[j] for j in range(i * batch, (i + 1) * batch)])


def _loss_batches(model, reader, recipe: dict, n: int = 4, seed: int = 0):
    """Losses of ``n`` training batches (Taylor importance), as training computes them; the
    same batches at every call and in every run with the same ``seed``."""
    from vision.engine.losses import segmentation_loss

    def batches():
        model.train()
        for x, y in _batches(model, reader, recipe, n, seed=seed):
            if model.meta.task == "detection":
                yield sum(model(x, y).values())
            else:
                yield segmentation_loss(model(x), y, recipe.get("seg_loss", "ce"))
        model.eval()

    return batches


def budget_schedule(recipe: dict, train_images: int, share: float) -> dict:
    """Epochs and iterations per epoch that make ``share`` of the recipe's own training
    iterations (``epochs`` × batches per epoch, capped by its ``max_iters``)."""
    import math

    if not 0 < share <= 1:
        raise ValueError(f"fine-tuning budget: expected a share in (0, 1], got {share}")
    per_epoch = max(train_images // int(recipe.get("batch", 8)), 1)
    if recipe.get("max_iters"):
        per_epoch = min(per_epoch, int(recipe["max_iters"]))
    total = int(recipe.get("epochs", 1)) * per_epoch
    iters = max(round(share * total), 1)
    epochs = math.ceil(iters / per_epoch)
    return {"epochs": epochs, "max_iters": math.ceil(iters / epochs), "of_iters": total}


def cmd_prune(a) -> int:
    import copy

    import torch

    from eval.metrics import build_evaluator
    from vision.engine.checkpoint import load_checkpoint, save_checkpoint
    from vision.engine.train import finetune_config, train
    from vision.predictor import Predictor
    from vision.prune import prune_flops, recalibrate_bn

    if a.recalibrate is None:
        a.recalibrate = 0 if a.reconstruct else 40
    for name, value, least in (("--steps", a.steps, 1), ("--recalibrate", a.recalibrate, 0),
                               ("--reconstruct", a.reconstruct, 0),
                               ("--taylor-batches", a.taylor_batches, 1),
                               ("--finetune-epochs", a.finetune_epochs, 0)):  # fmt: skip
        if value < least:
            raise ValueError(f"{name}: expected an integer ≥ {least}, got {value}")
    tuned = {k: getattr(a, k) for k in FINETUNE_OPTIONS if hasattr(a, k)}  # typed ones only
    seed, teacher = tuned.get("seed", 0), tuned.get("teacher")
    if tuned.get("kd_cache") and not teacher:
        raise ValueError(
            "--kd-cache: expected --teacher CKPT too (the outputs it caches), got none"
        )
    tune = a.finetune_budget is not None or a.finetune_epochs > 0  # 0 epochs: prune only
    if teacher and not tune:
        raise ValueError(
            "--teacher: expected a fine-tuning to distil in (--finetune-epochs ≥ 1 or "
            "--finetune-budget), got --finetune-epochs 0 (prune only)"
        )
    ck = load_checkpoint(a.checkpoint)
    recipe = {**ck.get("args", {}), "data": a.data}
    out = Path(a.out)
    reader = _train_reader(recipe, ck["meta"]["task"])
    budget = {"epochs": a.finetune_epochs}  # per step
    if a.finetune_budget is not None:
        budget = budget_schedule(recipe, len(reader), a.finetune_budget / a.steps)
        print(
            f"[prune] fine-tuning {budget['epochs']} × {budget['max_iters']} iterations per step, "
            f"{a.steps} step(s) ({a.finetune_budget:.0%} of the recipe's {budget['of_iters']})",
            flush=True,
        )
    summary = []
    for ratio in a.ratio:
        run, start, first = out / f"pruned_{int(round(ratio * 100))}", a.checkpoint, None
        for step in range(1, a.steps + 1):  # the FLOPs cut grows linearly over the steps
            model = Predictor.from_checkpoint(start).model
            original = copy.deepcopy(model) if a.reconstruct else None  # what to refit towards
            done, goal = ratio * (step - 1) / a.steps, ratio * step / a.steps
            taylor = a.importance == "taylor"
            report = prune_flops(
                model,
                1 - (1 - goal) / (1 - done),
                a.importance,
                _loss_batches(model, reader, recipe, a.taylor_batches, seed) if taylor else None,
                scope=a.scope,
                ranking=a.ranking,
                round_to=a.round_to if a.round_to > 1 else None,
            )
            kept = report.pop("kept")
            if a.reconstruct:
                from vision.reconstruct import reconstruct

                imgs = [x for x, _ in _batches(model, reader, recipe, a.reconstruct, train=False)]
                report["reconstructed"] = reconstruct(original, model, imgs, kept)
            if a.recalibrate:
                imgs = (x for x, _ in _batches(model, reader, recipe, a.recalibrate, train=False))
                report["recalibrated_on"] = recalibrate_bn(model, imgs)
            first = first or report
            report = {**report, "flops_ratio_asked": ratio, "steps": a.steps,
                      "macs_before": first["macs_before"],
                      "params_before": first["params_before"],
                      "flops_cut": 1 - report["macs_after"] / first["macs_before"]}  # fmt: skip
            model.meta.pruned = report
            where = run if a.steps == 1 else run / f"step{step}"
            where.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"model": model.state_dict(), "meta": model.meta.as_dict(),
                             "args": ck.get("args", {})}, where / "pruned.pt")  # fmt: skip
            print(
                f"[prune] {ratio:.0%} of FLOPs asked, step {step}/{a.steps}: channel ratio "
                f"{report['channel_ratio']:.3f}, FLOPs {report['flops_cut']:.1%} lower, "
                f"parameters {report['params_before'] / 1e6:.2f} M → "
                f"{report['params_after'] / 1e6:.2f} M",
                flush=True,
            )
            if not tune:  # the next step prunes this one's pruned weights
                start, summ = where / "pruned.pt", None
                continue
            cfg = finetune_config(
                recipe,
                out=str(where / "finetune"),
                weights=str(where / "pruned.pt"),
                epochs=budget["epochs"],
                **({"max_iters": budget["max_iters"]} if "max_iters" in budget else {}),
                **{**tuned, "seed": seed},
            )
            torch.manual_seed(seed)
            summ = train(cfg, build_evaluator)
            start = where / "finetune/best.pt"
        summary.append({"ratio": ratio, **report, "pruned": str(where / "pruned.pt"),
                        "finetuned": str(start) if tune else None,
                        "budget": budget if tune else None,
                        "teacher": teacher, "finetune_summary": summ})  # fmt: skip
    (out / "prune.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"[prune] wrote {out / 'prune.json'}")
    return 0


def cmd_table(a) -> int:
    from eval.variants import format_table, run_variants
    from vision.config import load_config
    from vision.data.build import build_dataset
    from vision.engine.checkpoint import load_checkpoint

    out = Path(a.out)
    cfg = load_config(a.data)
    rows, tables = [], []
    for spec in a.checkpoint:
        label, _, path = spec.rpartition("=")
        label = label or Path(path).parent.name
        task = load_checkpoint(path, mmap=True)["meta"]["task"]
        val = build_dataset(cfg, task, "val")
        val.limit(a.limit)
        train = build_dataset(cfg, task, "train")
        t = run_variants(path, cfg, val, train, out / label, a.variants, 64, a.rounds, a.iters)
        tables.append({"label": label, **t})
        for r in t["rows"]:
            rows.append({**r, "variant": f"{label} / {r['variant']}"})
    base = next((r for r in rows if r["status"] == "ok"), None)
    for r in rows:  # relative to the first model's first variant (eager of the baseline)
        if base is not None and r["status"] == "ok":
            r["delta"], r["speedup"] = r["metric"] - base["metric"], base["p50_ms"] / r["p50_ms"]
    table = {**tables[0], "rows": rows, "models": [t["label"] for t in tables]}
    (out / "compression.json").write_text(json.dumps(table, indent=1, default=str))
    text = format_table(table)
    (out / "compression.md").write_text(
        f"# Compression: {', '.join(table['models'])} on {cfg.name}\n\nΔ and speed-up against "
        f"{rows[0]['variant']}.\n\n```\n{text}\n```\n"
    )
    print(text)
    print(f"[compress] wrote {out / 'compression.json'}, {out / 'compression.md'}")
    return 0
