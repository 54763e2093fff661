"""Benchmark suites: ranking, resumption after a kill, self-contained report, promotion."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

VISION = [sys.executable, "-m", "vision_cli"]


@pytest.fixture
def suite(shapes_yaml, tmp_path):
    recipe = (
        "{{model: {m}, epochs: {e}, img_size: 64, batch: 4, limit_train: 8, limit_val: 4, "
        "workers: 0, warmup_iters: 0, threads: 1}}"
    )
    text = f"""name: tiny
datasets: [{shapes_yaml}]
models:
  - {{name: fcn32s_short, train: {recipe.format(m="fcn32s", e=1)}}}
  - {{name: fcn8s_longer, train: {recipe.format(m="fcn8s", e=3)}}}
options: {{split: val, limit: 6, fps_batch: [1], fps_iters: 2, fps_warmup: 1}}
"""
    p = tmp_path / "tiny.yaml"
    p.write_text(text)
    return p


def test_suite_ranks_resumes_and_promotes(suite, tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "OMP_NUM_THREADS": "1"}
    # start, and kill the run as soon as its first pair is finished
    log = tmp_path / "first_run.log"
    with log.open("w") as f:  # a file, not a pipe: an unread pipe can block the child
        proc = subprocess.Popen(
            [*VISION, "bench", "run", str(suite), "--out", str(out)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.time() + 300
        while (
            time.time() < deadline
            and proc.poll() is None
            and not list((out / "pairs").glob("*.json"))
        ):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = sorted(p.name for p in (out / "pairs").glob("*.json"))
    assert len(done) == 1, (done, log.read_text()[-3000:])
    first = (out / "pairs" / done[0]).stat().st_mtime_ns
    r = subprocess.run(
        [*VISION, "bench", "run", str(suite), "--out", str(out), "--promote"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("done earlier, reused") == 1
    assert r.stdout.count("evaluating") == 1  # only the missing pair was computed
    assert (out / "pairs" / done[0]).stat().st_mtime_ns == first

    suite_data = yaml.safe_load(suite.read_text())["datasets"][0]
    for run_args in (out / "runs").glob("*/args.json"):  # trained on the suite's own dataset
        assert json.loads(run_args.read_text())["data"] == suite_data
    board = json.loads((out / "leaderboard.json").read_text())
    rows = board["boards"]["segmentation"]["shapes"]
    assert [row["rank"] for row in rows] == [1, 2]
    assert rows[0]["primary"] >= rows[1]["primary"]
    assert rows[0]["primary_metric"] == "seg/mIoU" and "tie" in board["rule"]
    for row in rows:
        assert row["params"] > 0 and row["flops"] > 0 and row["latency_ms_p50"] > 0

    page = (out / "index.html").read_text()
    assert not re.search(r"https?://|url\(|@import", page)
    assert not re.search(r"""src\s*=\s*(?!["']?data:)""", page)  # every image embedded
    # links: inside the page, or to the variants pages beside it
    assert set(re.findall(r'href="([^"#][^"]*)"', page)) <= {
        f"variants/{t}/variants.html" for t in ("detection", "segmentation")
    }
    assert "<svg" not in page and "Pareto" in page and "dataset health" in page

    promoted = json.loads((out / "promoted.json").read_text())
    show = (
        "import bentoml, json, sys; m = bentoml.models.get(sys.argv[1]); "
        "print(json.dumps({**m.info.metadata, 'file': m.path_of('model.pt')}))"
    )
    r = subprocess.run(
        [sys.executable, "-c", show, promoted["segmentation"]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    assert meta["model"] == rows[0]["model"] and meta["task"] == "segmentation"
    assert meta["class_names"] == ["circle", "square", "triangle", "star"]
    assert meta["primary"] == pytest.approx(rows[0]["primary"])
    assert os.path.isfile(meta["file"]) and meta["file"].startswith(env["BENTOML_HOME"])

    # the service loads the promoted model from the store and shows the report's metric keys
    serve = (
        "import json; from service.service import VisionService; s = VisionService(); "
        "print(json.dumps(s.info()))"
    )
    clean = {k: v for k, v in env.items() if not k.startswith("VISION_")}
    r = subprocess.run([sys.executable, "-c", serve], env=clean, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])["models"]
    assert set(info) == {"segmentation"}  # no detector was promoted
    seg = info["segmentation"]
    assert seg["version"] == promoted["segmentation"]
    assert seg["name"] == {"fcn32s_short": "fcn32s", "fcn8s_longer": "fcn8s"}[rows[0]["model"]]
    from eval.base import flatten

    pair = json.loads((out / "pairs" / f"{rows[0]['pair']}.json").read_text())
    assert set(seg["report"]["metrics"]) == set(flatten(pair["metrics"]))
    assert seg["report"]["metrics"]["seg/mIoU"] == pytest.approx(rows[0]["primary"])
    trained = {k for k in seg["metrics"] if "/" in k}  # the checkpoint's own validation
    assert trained == set(seg["report"]["metrics"])

    # a second run with nothing missing recomputes nothing and compares with the first
    r = subprocess.run(
        [*VISION, "bench", "run", str(suite), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert r.returncode == 0 and r.stdout.count("done earlier, reused") == 2
    assert "same" in (out / "leaderboard.md").read_text()


def test_interrupted_training_is_resumed_not_mistaken_for_done(shapes_yaml, tmp_path):
    from vision.engine.checkpoint import load_checkpoint
    from vision_cli.orchestrate import checkpoint_for, train_recipe

    recipe = {
        "model": "fcn32s",
        "epochs": 2,
        "img_size": 64,
        "batch": 4,
        "limit_train": 8,
        "limit_val": 4,
        "workers": 0,
        "warmup_iters": 0,
        "threads": 1,
    }
    spec = {"name": "fcn32s", "train": recipe}
    run_dir = tmp_path / "runs" / "shapes__fcn32s"
    train_recipe({**recipe, "data": str(shapes_yaml), "out": str(run_dir), "stop_after": 1})
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1  # killed after one epoch
    assert (run_dir / "best.pt").is_file()
    lines: list[str] = []
    got = checkpoint_for(spec, str(shapes_yaml), "shapes", tmp_path, train_recipe, lines.append)
    assert got == run_dir / "best.pt"
    assert any("resuming fcn32s on shapes at epoch 1/2" in ln for ln in lines), lines
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    best = load_checkpoint(got)
    assert "optimizer" not in best and best["meta"]["task"] == "segmentation"
    lines.clear()  # finished now: reused as it is, no training
    assert checkpoint_for(spec, str(shapes_yaml), "shapes", tmp_path, None, lines.append) == got
    assert lines == []


def test_a_misspelt_recipe_option_is_an_error_not_ignored(suite):
    from eval.bench import load_suite
    from vision.errors import DataError

    assert load_suite(suite)["models"][0]["train"]["epochs"] == 1
    suite.write_text(suite.read_text().replace("warmup_iters: 0", "seg_los: ce+dice", 1))
    with pytest.raises(
        DataError, match=r"models\[0\]\.train: key 'seg_los'.*did you mean 'seg_loss'"
    ):
        load_suite(suite)


def test_main_job_suites_train_the_registry_defaults():
    """Both suites of the main job (CPU, and the GPU recipes picked when CUDA is present) load
    and name only known training options; the CPU one trains the registry's default models, the
    GPU one a detector and a segmenter (its recipes were measured on an H100)."""
    import torch

    from eval.bench import load_suite
    from vision.models import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, model_task
    from vision_cli.orchestrate import MAIN_SUITES, main_suite

    cpu, gpu = ([m["train"]["model"] for m in load_suite(p)["models"]] for p in MAIN_SUITES)
    assert cpu == [DEFAULT_DETECTOR, DEFAULT_SEGMENTER]
    assert [model_task(m) for m in gpu] == ["detection", "segmentation"]
    assert main_suite() == MAIN_SUITES[int(torch.cuda.is_available())]


@pytest.mark.parametrize(
    "suite",
    sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "eval/suites").iterdir()),
)
def test_every_kept_suite_loads(suite):
    """The suites shipped in eval/suites (the GPU ones are run only on a lent GPU) name only known
    training options and registered models."""
    from eval.bench import load_suite
    from vision.models import list_models

    loaded = load_suite(suite)  # by name, as `vision bench run NAME` finds it
    assert loaded["models"] and all(m["train"]["model"] in list_models() for m in loaded["models"])
