"""Benchmark suites: datasets × models (checkpoints, or recipes trained first) × options.

A suite is a flat YAML file::

    name: default
    datasets: [shapes]                 # dataset names or YAML paths
    models:
      - {name: fcos_r18, checkpoint: runs/fcos_r18/best.pt}
      - {name: fcn8s, train: {model: fcn8s, epochs: 3, img_size: 160}}   # trained if missing
    options: {fps_batch: [1, 8], fps_iters: 20, split: val, device: auto, half: false}

``device``: ``auto`` (CUDA when present, else CPU; the default), ``cpu`` or ``cuda[:N]``;
``half``: float16 inference on CUDA; ``threads``: torch's threads for scoring (default: torch's
choice here, one per Ray task on Ray).

Every (dataset, model) pair of matching task is evaluated under every protocol of its task
(``eval.metrics``), timed with the FPS protocol, and its parameters and FLOPs
(``torch.utils.flop_counter``) are counted (``evaluate_pair``). Each finished pair is written to
``OUT/pairs/`` at once (``save_pair``): an interrupted run, started again, only computes the
missing pairs. Running a suite (training missing checkpoints, then every pair) is the command
layer's orchestration (``vision_cli.orchestrate``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from eval.base import nan_to_none
from eval.fps import measure
from eval.metrics import PRIMARY, primary_value, score
from eval.provenance import dataset_hash, git_commit
from eval.samples import Quality, drawn_samples
from vision.data.build import build_dataset
from vision.errors import DataError
from vision.predictor import Predictor
from vision.recipe import FIELDS, check_keys, check_value, read_recipe

# what a suite's train recipe may set (the suite decides task, data and run folder)
RECIPE_KEYS = sorted(set(FIELDS) - {"task", "data", "out"})


SUITES = Path(__file__).resolve().parent / "suites"  # shipped inside the package


def shipped_suites() -> list[str]:
    """Names of the suites that ship with the package (``vision bench run NAME``)."""
    return sorted(p.stem for p in SUITES.glob("*.yaml"))


def find_suite(name_or_path: Path | str) -> Path:
    """A suite file: a path that exists, else a shipped suite's name (``default``, ``camvid``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITES / f"{path.stem if path.suffix in ('.yaml', '.yml') else path.name}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise DataError(
        str(name_or_path),
        f"a suite YAML file or a shipped suite's name ({', '.join(shipped_suites())})",
        "no such file or suite",
    )


def load_suite(path: Path | str) -> dict:
    path = find_suite(path)
    suite = yaml.safe_load(path.read_text()) or {}
    for key in ("name", "datasets", "models"):
        if key not in suite:
            raise DataError(str(path), f"field '{key}'", f"fields {sorted(suite)}")
    for i, m in enumerate(suite["models"]):
        if "name" not in m or not ({"checkpoint", "train"} & set(m)):
            raise DataError(
                f"{path} models[{i}]", "a name and a checkpoint or a train recipe", repr(m)
            )
        if "train" in m:
            m["train"] = suite_recipe(m["train"], f"{path} models[{i}].train")
    suite.setdefault("options", {})
    suite["source"] = str(path)
    return suite


def suite_recipe(train, where: str) -> dict:
    """A suite model's ``train``: a recipe's name or file, a mapping of training options, or
    ``{recipe: NAME, key: override...}``; checked key by key (the suite decides task, data and
    run folder)."""
    if isinstance(train, str):
        train = {"recipe": train}
    if not isinstance(train, dict):
        raise DataError(where, "a recipe name or a mapping of training options", repr(train))
    if "recipe" in train:
        base = read_recipe(train["recipe"])
        train = {**base, **{k: v for k, v in train.items() if k != "recipe"}}
    check_keys(train, where, RECIPE_KEYS)
    return {k: check_value(k, v, where) for k, v in train.items()}


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


def evaluate_pair(
    predictor: Predictor, cfg, data: str, name: str, ckpt: Path | str, opts: dict
) -> tuple[dict, list[np.ndarray]]:
    """One (dataset, model) pair: every metric of its task on the suite's split, the FPS
    protocol, parameters and FLOPs. Returns the pair result and drawn samples."""
    task = predictor.task
    reader = build_dataset(cfg, task, opts.get("split", "val"))
    reader.limit(opts.get("limit"))
    t0 = time.perf_counter()
    quality = Quality(task, len(cfg.names))
    metrics, _ = score(predictor, reader, cfg.names, observe=quality)
    images = [s.path.read_bytes() for s in reader.samples[:32]]
    fps = measure(
        predictor,
        images,
        tuple(opts.get("fps_batch", [1, 8])),
        opts.get("fps_warmup", 3),
        opts.get("fps_iters", 20),
    )
    drawn, legend = drawn_samples(predictor, reader, quality)
    result = {
        "pair": pair_key(data, name),
        "dataset": cfg.name,
        "model": name,
        "task": task,
        "checkpoint": str(ckpt),
        "primary_metric": PRIMARY[task],
        "primary": primary_value(task, metrics),
        "metrics": metrics,
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
        "skipped": reader.skips.as_dict(),  # bad annotations left out (skip_invalid configs)
        "training": training_rows(Path(ckpt)),
        "samples": [{k: d[k] for k in ("caption", "index", "kind", "quality")} for d in drawn],
        "legend": legend,
    }
    return result, [d["image"] for d in drawn]


def training_rows(checkpoint: Path) -> list[dict]:
    """The ``metrics.jsonl`` rows of the run a checkpoint came from (TensorBoard's ``epoch/``
    scalars are written from the same rows); none for a checkpoint outside its run folder."""
    path = checkpoint.parent / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_pair(ckpt: str, data: str, name: str, opts: dict, out: str) -> dict | None:
    """Score one (dataset, model) pair and save it under ``out``; None when the dataset has no
    split of the model's task. A suite runs this pair after pair, or as Ray tasks. The suite
    option ``threads`` sets torch's threads for it (scores can differ in the last digits at
    other thread counts)."""
    from vision.config import load_config

    threads = torch.get_num_threads()
    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    try:
        cfg = load_config(data)
        predictor = Predictor.from_checkpoint(
            ckpt, opts.get("device", "auto"), half=bool(opts.get("half", False))
        )
        if not getattr(cfg, predictor.task):
            return None
        result, samples = evaluate_pair(predictor, cfg, data, name, ckpt, opts)
        return save_pair(Path(out), result, samples)
    finally:
        torch.set_num_threads(threads)


def save_pair(out: Path, result: dict, samples: list[np.ndarray]) -> dict:
    """Write a finished pair (its samples first, the JSON last: a pair with a JSON is done)."""
    pairs = Path(out) / "pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    torch.save(
        [torch.from_numpy(s.copy()) for s in samples], pairs / f"{result['pair']}.samples.pt"
    )
    path = pairs / f"{result['pair']}.json"
    path.write_text(json.dumps(nan_to_none(result)))
    return json.loads(path.read_text())
