"""One evaluation path: training validation, ``vision eval run`` and a benchmark suite score a
checkpoint with the same evaluator and report the same metric keys and values."""

from __future__ import annotations

import json

import pytest

from eval.base import flatten, nan_to_none
from eval.metrics import KEYS, PRIMARY
from vision.engine.checkpoint import load_checkpoint
from vision_cli.cli import main
from vision_cli.orchestrate import run_suite


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_training_eval_run_and_suite_report_identical_metrics(
    task, tiny_checkpoints, shapes_yaml, tmp_path
):
    ckpt = tiny_checkpoints[task]  # last.pt: validated after its last epoch, first 4 val images
    meta = load_checkpoint(ckpt)["meta"]["metrics"]
    assert meta["primary"] == PRIMARY[task]
    trained = nan_to_none({k: v for k, v in meta.items() if k not in ("primary", "value", "epoch")})
    assert {k.split("/")[0] for k in trained} == set(KEYS[task])

    out = tmp_path / "run"
    args = ["eval", "run", "--checkpoint", str(ckpt), "--data", str(shapes_yaml)]
    assert main([*args, "--limit", "4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: same\ndatasets: [{shapes_yaml}]\nmodels: [{{name: m, checkpoint: {ckpt}}}]\n"
        "options: {limit: 4, fps_batch: [1], fps_iters: 1, fps_warmup: 0}\n"
    )
    board = run_suite(str(suite), str(tmp_path / "suite"), log=lambda *a: None)
    (pair,) = [r for t in board["boards"].values() for rows in t.values() for r in rows]

    assert trained == flatten(report["metrics"]) == nan_to_none(flatten(pair["metrics"]))
    assert pair["primary_metric"] == PRIMARY[task]
    assert nan_to_none(pair["primary"]) == trained[PRIMARY[task]]
