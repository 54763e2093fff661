"""Benchmark suites: datasets × models (checkpoints, or recipes trained first) × options.

A suite is a flat YAML file::

    name: default
    datasets: [shapes]                 # dataset names or YAML paths
    models:
      - {name: fcos_r18, checkpoint: runs/fcos_r18/best.pt}
      - {name: fcn8s, train: {model: fcn8s, epochs: 3, img_size: 160}}   # trained if missing
    options: {fps_batch: [1, 8], fps_iters: 20, split: val, device: auto, half: false}

``device``: ``auto`` (CUDA when present, else CPU; the default), ``cpu`` or ``cuda[:N]``;
``half``: float16 inference on CUDA.

Every (dataset, model) pair of matching task is evaluated under every protocol of its task,
timed with the FPS protocol, and its parameters and FLOPs (``torch.utils.flop_counter``) are
counted. Each finished pair is written to ``OUT/pairs/`` at once: an interrupted run, started
again, only computes the missing pairs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from eval.base import nan_to_none
from eval.fps import measure
from eval.runner import dataset_hash, evaluate_model, git_commit, sample_images
from vision.config import load_config
from vision.data.build import build_dataset
from vision.engine.train import TrainConfig
from vision.errors import DataError
from vision.predictor import Predictor

PRIMARY = {"detection": ("coco", "AP"), "segmentation": ("seg", "mIoU")}
# what a suite's train recipe may set (the suite decides task, data and run folder)
RECIPE_KEYS = set(TrainConfig.__dataclass_fields__) - {"task", "data", "out"}


def load_suite(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "a benchmark suite YAML file", "no such file")
    suite = yaml.safe_load(path.read_text()) or {}
    for key in ("name", "datasets", "models"):
        if key not in suite:
            raise DataError(str(path), f"field '{key}'", f"fields {sorted(suite)}")
    for i, m in enumerate(suite["models"]):
        if "name" not in m or not ({"checkpoint", "train"} & set(m)):
            raise DataError(
                f"{path} models[{i}]", "a name and a checkpoint or a train recipe", repr(m)
            )
        unknown = sorted(set(m.get("train") or {}) - RECIPE_KEYS)
        if unknown:
            raise DataError(
                f"{path} models[{i}].train",
                f"training options among {sorted(RECIPE_KEYS)}",
                f"unknown {unknown}",
            )
    suite.setdefault("options", {})
    suite["source"] = str(path)
    return suite


def count_flops(predictor: Predictor) -> int:
    """FLOPs of one forward pass at the model's input size (NMS and other non-matmul work not
    counted), by torch's own counter."""
    rng = np.random.default_rng(0)
    x = predictor.to_tensor([rng.integers(0, 256, (predictor.size,) * 2 + (3,), np.uint8)])
    with FlopCounterMode(display=False) as fc:
        predictor.infer(x)
    return int(fc.get_total_flops())


def pair_key(dataset: str, model: str) -> str:
    return f"{Path(dataset).stem}__{model}"


def run_suite(
    suite: dict, out: Path | str, train_fn: Callable | None = None, log: Callable = print
) -> list[dict]:
    """Evaluate every pair not already in ``out/pairs``; returns all pair results."""
    out = Path(out)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    opts = suite["options"]
    split = opts.get("split", "val")
    results = []
    for data in suite["datasets"]:
        cfg = load_config(data)
        for spec in suite["models"]:
            path = out / "pairs" / f"{pair_key(data, spec['name'])}.json"
            if path.is_file():
                log(f"[bench] {cfg.name} × {spec['name']}: done earlier, reused")
                results.append(json.loads(path.read_text()))
                continue
            ckpt = _checkpoint(spec, data, cfg.name, out, train_fn, log)
            predictor = Predictor.from_checkpoint(
                ckpt, opts.get("device", "auto"), half=bool(opts.get("half", False))
            )
            task = predictor.task
            if task not in (t for t in ("detection", "segmentation") if getattr(cfg, t)):
                log(f"[bench] {cfg.name} × {spec['name']}: dataset has no {task} split, skipped")
                continue
            reader = build_dataset(cfg, task, split)
            reader.limit(opts.get("limit"))
            log(f"[bench] {cfg.name} × {spec['name']}: evaluating {len(reader)} images")
            t0 = time.perf_counter()
            res = evaluate_model(predictor, reader, cfg.names)
            images = [s.path.read_bytes() for s in reader.samples[:32]]
            fps = measure(
                predictor,
                images,
                tuple(opts.get("fps_batch", [1, 8])),
                opts.get("fps_warmup", 3),
                opts.get("fps_iters", 20),
            )
            key, metric = PRIMARY[task]
            result = {
                "pair": pair_key(data, spec["name"]),
                "dataset": cfg.name,
                "model": spec["name"],
                "task": task,
                "checkpoint": str(ckpt),
                "primary_metric": f"{key}/{metric}",
                "primary": res["metrics"][key][metric],
                "metrics": res["metrics"],
                "latency_ms_p50": fps["runs"][0]["total_ms"]["p50"],
                "latency_ms_p95": fps["runs"][0]["total_ms"]["p95"],
                "throughput": max(r["images_per_s"] for r in fps["runs"]),
                "fps": fps,
                "params": sum(p.numel() for p in predictor.model.parameters()),
                "flops": count_flops(predictor),
                "eval_time_s": time.perf_counter() - t0,
                "dataset_hash": dataset_hash(reader),
                "git_commit": git_commit(),
                "class_names": cfg.names,
            }
            samples = sample_images(reader, res["predictions"], cfg.names, task, n=4)
            np_samples = out / "pairs" / f"{pair_key(data, spec['name'])}.samples.pt"
            torch.save([torch.from_numpy(s.copy()) for s in samples], np_samples)
            path.write_text(json.dumps(nan_to_none(result)))  # written last: the pair is done
            results.append(json.loads(path.read_text()))
    return results


def _checkpoint(spec: dict, data: str, dataset: str, out: Path, train_fn, log) -> Path:
    """The pair's checkpoint: given, trained earlier in this report, or trained now on
    ``data`` (the suite's dataset entry: a name or a YAML path)."""
    if "checkpoint" in spec and Path(spec["checkpoint"]).is_file():
        return Path(spec["checkpoint"])
    if "train" not in spec:
        raise DataError(
            f"suite model {spec['name']}",
            "an existing checkpoint file",
            repr(spec.get("checkpoint")),
            "or give a 'train' recipe",
        )
    run_dir = out / "runs" / f"{dataset}__{spec['name']}"
    done = _epochs_done(run_dir / "last.pt")
    wanted = int(spec["train"].get("epochs", 1))
    if done >= wanted and (run_dir / "best.pt").is_file():
        return run_dir / "best.pt"
    if train_fn is None:
        raise DataError(f"suite model {spec['name']}", "a trained checkpoint", "none")
    recipe = {**spec["train"], "data": data, "out": str(run_dir)}
    if done:  # an interrupted run: continue it instead of mistaking its best.pt for the result
        log(f"[bench] resuming {spec['name']} on {dataset} at epoch {done}/{wanted}")
        recipe["resume"] = "auto"
    else:
        log(f"[bench] training {spec['name']} on {dataset} ({spec['train']})")
    train_fn(recipe)
    return run_dir / "best.pt"


def _epochs_done(last: Path) -> int:
    """Epochs a run folder's ``last.pt`` has finished (0 when there is none)."""
    if not last.is_file():
        return 0
    from vision.engine.checkpoint import load_checkpoint

    return int(load_checkpoint(last, mmap=True).get("epoch", 0))  # tensors are not read
