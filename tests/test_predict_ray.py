"""``--engine ray`` on a real two-node Ray cluster started here (one CPU per node): the work
lands on both nodes, the files equal the local engine's, a model actor killed mid-job still
leaves every image exactly once; a benchmark suite's pairs as Ray tasks score as the
sequential run does; and without Ray the error names the extra."""

from __future__ import annotations

import json
import sys

import pytest
import ray
from ray.cluster_utils import Cluster

from .conftest import run_cli
from .test_predict import lines

# one CPU per node: two actors of 0.75 CPUs cannot share a node, a decode task (0.25) fits beside
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    c.add_node(**NODE)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def onnx_variant(tiny_checkpoints, tmp_path_factory):
    """The tiny detector's float32 ONNX variant, as `vision optimize` leaves it (with its
    variants.json): both engines run it on NumPy, the Ray actors without torch."""
    from vision.deploy import export_onnx
    from vision.predictor import Predictor

    ck = tiny_checkpoints["detection"]
    folder = tmp_path_factory.mktemp("variant")
    path = export_onnx(Predictor.from_checkpoint(ck).model, folder / "model.onnx")
    rows = [{"variant": "onnx", "file": str(path)}]
    (folder / "variants.json").write_text(json.dumps({"checkpoint": str(ck), "rows": rows}))
    return path


@pytest.mark.parametrize("model", ["checkpoint", "onnx_variant"])
def test_two_nodes_same_files_as_local_and_a_killed_actor_loses_nothing(
    cluster, photos, tiny_checkpoints, tmp_path, monkeypatch, request, model
):
    model = (
        tiny_checkpoints["detection"] if model == "checkpoint" else request.getfixturevalue(model)
    )
    args = ["predict", "--model", model, "--source", photos,
            "--score-threshold", "0", "--batch", "2", "--threads", "1", "--quiet"]  # fmt: skip
    local = tmp_path / "local"
    assert run_cli([*args, "--out", local]).returncode == 1
    monkeypatch.setenv("VISION_PREDICT_KILL_AFTER", "1")  # the first actor dies after a batch
    on_ray = tmp_path / "ray"
    r = run_cli([*args, "--out", on_ray, "--engine", "ray", "--address", cluster.address,
                 "--num-workers", "2", "--cpus-per-worker", "0.75"])  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    key = lambda row: row["path"]  # noqa: E731
    for name in ("predictions.jsonl", "errors.jsonl"):
        assert sorted(lines(on_ray / name), key=key) == sorted(lines(local / name), key=key)
    paths = [p["path"] for p in lines(on_ray / "predictions.jsonl")]
    assert len(paths) == len(set(paths)) == 10
    summary = json.loads((on_ray / "summary.json").read_text())
    run = summary["this_run"]
    assert len(run["nodes"]) == 2 and sum(run["nodes"].values()) == 13, run["nodes"]
    assert run["merged"]["duplicates"] > 0  # the killed actor's batch, written then retried
    assert (summary["images"], summary["errors"]) == (10, 3)
    coco = lambda p: sorted(json.loads(p.read_text()), key=json.dumps)  # noqa: E731
    assert coco(on_ray / "coco_results.json") == coco(local / "coco_results.json")
    assert not (on_ray / ".shards").exists()


def test_a_suite_on_ray_scores_as_the_sequential_run(
    cluster, shapes_yaml, tiny_checkpoints, tmp_path
):
    suite = tmp_path / "two.yaml"
    suite.write_text(
        f"name: two\ndatasets: [{shapes_yaml}]\nmodels:\n"
        f"  - {{name: det, checkpoint: {tiny_checkpoints['detection']}}}\n"
        f"  - {{name: seg, checkpoint: {tiny_checkpoints['segmentation']}}}\n"
        "options: {split: val, fps_batch: [1], fps_iters: 2, fps_warmup: 1, threads: 1}\n"
    )
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert run_cli(["bench", "run", suite, "--out", seq]).returncode == 0
    r = run_cli(["bench", "run", suite, "--out", par, "--engine", "ray",
                 "--address", cluster.address])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for pair in ("shapes_small__det", "shapes_small__seg"):
        a = json.loads((seq / "pairs" / f"{pair}.json").read_text())
        b = json.loads((par / "pairs" / f"{pair}.json").read_text())
        assert a["metrics"] == b["metrics"] and a["primary"] == b["primary"] > 0
    assert (par / "index.html").is_file() and (par / "leaderboard.json").is_file()


def test_without_ray_the_error_names_the_extra(tiny_checkpoints, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: import fails
    r = run_cli(["predict", "--model", tiny_checkpoints["detection"], "--source", photos,
                 "--out", tmp_path / "o", "--engine", "ray", "--quiet"])  # fmt: skip
    assert r.returncode == 2 and "pip install 'vision-suite[ray]'" in r.stderr
