"""Distributed evaluation gathers every rank's outputs: two gloo processes with uneven shards
give exactly the single-process metrics (COCO, VOC, P/R/F1, mIoU)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from eval.base import flatten
from eval.metrics import build_evaluator
from vision.data.build import build_dataset

N = 7  # odd: rank 0 gets 4 images, rank 1 gets 3


def _outputs(sample, i: int) -> dict:
    """Imperfect, image-dependent predictions (jittered, missing and extra boxes; masks with
    a wrong band), so that any image left out changes every metric."""
    rng = np.random.default_rng(i)
    boxes = sample.boxes + rng.normal(0, 2.0, sample.boxes.shape).astype(np.float32)
    keep = rng.random(len(boxes)) > 0.2
    extra = np.array([[5, 5, 40, 40]], np.float32)
    out = {
        "boxes": np.concatenate([boxes[keep], extra]),
        "scores": np.concatenate([rng.uniform(0.3, 1, keep.sum()), [0.6]]).astype(np.float32),
        "labels": np.concatenate([sample.labels[keep], [i % 4]]).astype(np.int64),
    }
    if sample.mask is not None:
        m = sample.mask.copy()
        m[: 10 + i * 3] = i % 5
        out["mask"] = m
    return out


def _score(cfg, task: str, indices: list[int]) -> dict:
    reader = build_dataset(cfg, task, "val")
    reader.limit(N)
    ev = build_evaluator(task, reader, cfg.names)
    for i in indices:
        s = reader[i]
        inp = {"image_id": s.image_id, **({"mask": s.mask} if task == "segmentation" else {})}
        ev.process([inp], [_outputs(s, i)])
    return flatten(ev.evaluate())


def _worker(rank: int, port: int, cfg, task: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        queue.put((rank, _score(cfg, task, list(range(rank, N, 2)))))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_two_ranks_give_the_single_process_metrics(shapes_cfg, task):
    single = _score(shapes_cfg, task, list(range(N)))
    half = _score(shapes_cfg, task, list(range(0, N, 2)))
    primary = "coco/AP" if task == "detection" else "seg/mIoU"
    assert 0 < single[primary] < 1 and half[primary] != single[primary]  # a shard differs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, shapes_cfg, task, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0] == got[1] == single
