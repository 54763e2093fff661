"""Promotion: the best model of each task goes into the BentoML model store with its metadata.

Rule (also written into each report): the highest primary metric (COCO AP@[.50:.95] for
detection, mIoU for segmentation) across the suite's pairs of that task; ties broken by the
lower batch-1 p50 latency. The service loads models only from the store (or an explicit path).
"""

from __future__ import annotations

import json
import math
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


def promote(results: list[dict], report_id: str, log=print) -> dict[str, str]:
    """Save each task's winner into the BentoML store (``$BENTOML_HOME``); returns the tags."""
    tags = {}
    for task, r in choose_best(results).items():
        ck = load_checkpoint(r["checkpoint"])
        meta = ck["meta"]
        metadata = {
            "task": task,
            "model": r["model"],
            "arch": meta["name"],
            "class_names": meta["class_names"],
            "input_size": meta["input_size"],
            "mean": meta["mean"],
            "std": meta["std"],
            "dataset": r["dataset"],
            "primary_metric": r["primary_metric"],
            "primary": r["primary"],
            "latency_ms_p50": r["latency_ms_p50"],
            "metrics": nan_to_none(flatten(r["metrics"])),  # the keys of eval.metrics
            "report_id": report_id,
            "git_commit": r.get("git_commit", "unknown"),
            "rule": RULE,
            "model_kwargs": json.dumps(ck.get("args", {}).get("model_kwargs", {})),
        }
        with bentoml.models.create(STORE[task], labels={"task": task}, metadata=metadata) as bm:
            # weights and metadata only: optimizer and RNG state are training concerns
            slim = {"model": ck["model"], "meta": meta, "args": ck.get("args", {})}
            torch.save(slim, Path(bm.path) / "model.pt")
        tags[task] = str(bm.tag)
        log(
            f"[promote] {task}: {r['model']} ({r['primary_metric']} {r['primary']:.4f}, "
            f"p50 {r['latency_ms_p50']:.1f} ms) → {bm.tag}"
        )
    return tags
