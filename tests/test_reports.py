"""Evaluation runs end to end: checkpoint → all protocols → JSON/Markdown/HTML report; FPS."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

VISION = [sys.executable, "-m", "vision_cli"]


@pytest.fixture(params=["detection", "segmentation"])
def trained(request, tiny_checkpoints, shapes_yaml):
    return request.param, tiny_checkpoints[request.param], shapes_yaml


def test_eval_run_writes_a_self_contained_report(trained, tmp_path):
    task, ckpt, data = trained
    r = subprocess.run(
        [
            *VISION,
            "eval",
            "run",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--out",
            str(tmp_path),
            "--limit",
            "6",
            "--fps",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"https?://|url\(|@import", page)  # nothing fetched from elsewhere
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?data:)""", page)
    assert "<svg" not in page  # figures are matplotlib PNGs, embedded
    alts = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert len(alts) == page.count("<img ")
    model = "fcos_r18" if task == "detection" else "fcn8s_slim"
    assert f"confusion matrix — {model}" in alts and f"training curves — {model}" in alts
    assert len([a for a in alts if a.startswith("sample ")]) == 6  # 4 worst + 2 typical
    assert "ground truth on the left" in page and 'class="legend"' in page
    assert 'class="sortable"' in page
    for name in ("circle", "square", "triangle", "star", "git_commit", "dataset_hash"):
        assert name in page
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["fps"]["runs"][0]["total_ms"]["p95"] >= rep["fps"]["runs"][0]["total_ms"]["p50"]
    if task == "detection":
        m = rep["metrics"]
        assert {"coco", "voc07", "voc12", "prf"} <= set(m)
        assert 0 <= m["coco"]["AP"] <= 1 and "IoU .50:.05:.95" in page
        assert "VOC2007 11-point" in page
        for kind in ("COCO IoU 0.5", "COCO IoU .50:.95", "VOC"):
            assert f"precision–recall curves ({kind}) — {model}" in alts
        assert f"F1–confidence curve — {model}" in alts
        assert m["prf"]["confusion"]["labels"][-1] == "background"
    else:
        seg = rep["metrics"]["seg"]
        assert len(seg["confusion"]) == 5 and 0 <= seg["mIoU"] <= 1
        assert f"per-class IoU — {model}" in alts
    assert "| mIoU |" in (tmp_path / "report.md").read_text() or task == "detection"


def test_bench_fps_protocol(tmp_path):
    out = tmp_path / "fps.json"
    r = subprocess.run(
        [
            *VISION,
            "bench",
            "fps",
            "--model",
            "fcn8s",
            "--img-size",
            "64",
            "--batch",
            "1",
            "2",
            "--warmup",
            "1",
            "--iters",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    fps = json.loads(out.read_text())
    assert [run["batch"] for run in fps["runs"]] == [1, 2]
    for run in fps["runs"]:
        assert set(run["stages_ms"]) == {"decode", "preprocess", "inference", "postprocess"}
        assert run["images_per_s"] > 0 and run["peak_memory_mb"] > 0
    env = fps["environment"]
    assert env["threads"] == 1 and env["torch"].startswith("2.14.1")
    assert "img/s" in r.stdout


def test_suite_page_shows_a_datasets_health_once(tmp_path):
    """A dataset benchmarked for two tasks gets its health table once, per-class tables twice."""
    from eval.leaderboard import write_suite_report

    common = {"dataset": "shapes", "latency_ms_p50": 5.0, "latency_ms_p95": 6.0}
    common.update({"throughput": 100.0, "params": 1e6, "flops": 1e9})
    results = [
        {
            **common,
            "task": "detection",
            "model": "det",
            "pair": "shapes__det",
            "primary_metric": "coco/AP",
            "primary": 0.5,
            "metrics": {"coco": {"per_class": {"a": 0.5}}, "voc07": {"per_class": {"a": 0.6}}},
        },
        {
            **common,
            "task": "segmentation",
            "model": "seg",
            "pair": "shapes__seg",
            "primary_metric": "seg/mIoU",
            "primary": 0.7,
            "metrics": {"seg": {"per_class_iou": {"background": 0.9, "a": 0.5}}},
        },
    ]
    health = {
        "shapes": {
            "ok": True,
            "errors": [],
            "warnings": [],
            "splits": {
                "val": {"images": 2, "objects": 3, "size_buckets": {}, "skipped": {"total": 0}}
            },
        }
    }
    write_suite_report(tmp_path, {"name": "t"}, results, health)
    page = (tmp_path / "index.html").read_text()
    assert page.count(": dataset health</h3>") == 1  # under the dataset's first task only
    assert page.count("Per class (click a column to sort)") == len(results)
