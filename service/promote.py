"""Promotion: the best model of each task goes into the BentoML model store with its metadata.

Rule (also written into each report): the highest primary metric (COCO AP@[.50:.95] for
detection, mIoU for segmentation) across the suite's pairs of that task; ties broken by the
lower batch-1 p50 latency. The service loads models only from the store (or an explicit path).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import bentoml
import torch

from eval.base import flatten, nan_to_none
from eval.leaderboard import RULE
from service.launch import STORE
from vision.engine.checkpoint import load_checkpoint


def choose_best(results: list[dict]) -> dict[str, dict]:
    """The winner per task by the promotion rule."""
    best: dict[str, dict] = {}
    for r in results:
        score = (
            r["primary"] if r["primary"] is not None and not math.isnan(r["primary"]) else -math.inf
        )
        key = (score, -r["latency_ms_p50"])
        cur = best.get(r["task"])
        if cur is None or key > cur["_key"]:
            best[r["task"]] = {**r, "_key": key}
    return {t: {k: v for k, v in r.items() if k != "_key"} for t, r in best.items()}


def promote(
    results: list[dict], report_id: str, variants: dict | None = None, log=print
) -> dict[str, str]:
    """Save each task's winner into the BentoML store (``$BENTOML_HOME``); returns the tags.
    ``variants[task]``: the deployable-variants table of that winner (``eval.variants``),
    whose chosen variant is what gets stored and served."""
    tags = {}
    for task, r in choose_best(results).items():
        record = {
            "model": r["model"],
            "dataset": r["dataset"],
            "primary_metric": r["primary_metric"],
            "primary": r["primary"],
            "latency_ms_p50": r["latency_ms_p50"],
            "metrics": nan_to_none(flatten(r["metrics"])),  # the keys of eval.metrics
            "report_id": report_id,
            "git_commit": r.get("git_commit", "unknown"),
            "rule": RULE,
        }
        tags[task] = store(task, r["checkpoint"], record, (variants or {}).get(task), log)
    return tags


def store(task: str, checkpoint, record: dict, table: dict | None = None, log=print) -> str:
    """Put a checkpoint (weights and metadata only) and, with a variants ``table``, its chosen
    deployable variant into the store under the task's name; returns the tag."""
    ck = load_checkpoint(checkpoint)
    meta = ck["meta"]
    metadata = {
        "task": task,
        "arch": meta["name"],
        "class_names": meta["class_names"],
        "input_size": meta["input_size"],
        "mean": meta["mean"],
        "std": meta["std"],
        "model_kwargs": json.dumps(ck.get("args", {}).get("model_kwargs", {})),
        **record,
        "variant": "eager",
    }
    chosen = None
    if table is not None:
        chosen = next(row for row in table["rows"] if row.get("chosen"))
        metadata.update(
            variant=chosen["variant"],
            variant_metric=chosen["metric"],
            variant_p50_ms=chosen["p50_ms"],
            variant_rule=table["rule"],
            **({"variant_file": Path(chosen["file"]).name} if chosen.get("file") else {}),
            variants=json.dumps(
                [
                    {k: row.get(k) for k in ("variant", "status", "metric", "p50_ms", "speedup")}
                    for row in table["rows"]
                ]
            ),
        )
    with bentoml.models.create(STORE[task], labels={"task": task}, metadata=metadata) as bm:
        # weights and metadata only: optimizer and RNG state are training concerns
        slim = {"model": ck["model"], "meta": meta, "args": ck.get("args", {})}
        torch.save(slim, Path(bm.path) / "model.pt")
        if chosen is not None and chosen.get("file"):
            shutil.copy(chosen["file"], Path(bm.path) / metadata["variant_file"])
    variant = f", variant {metadata['variant']}" if table is not None else ""
    log(
        f"[promote] {task}: {record['model']} ({record['primary_metric']} "
        f"{record['primary']:.4f}{variant}) → {bm.tag}"
    )
    return str(bm.tag)
