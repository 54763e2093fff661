"""Ranking and promotion rules on hand-made pair results."""

from __future__ import annotations

import math
from pathlib import Path

from eval.leaderboard import compare, rank
from service.promote import choose_best


def _pair(model, primary, p50, task="detection", dataset="shapes"):
    return {"task": task, "dataset": dataset, "model": model, "primary": primary,
            "latency_ms_p50": p50}  # fmt: skip


def test_rank_ties_by_latency_undefined_last_and_pareto():
    rows = rank(
        [
            _pair("slow_tie", 0.5, 30.0),
            _pair("fast_tie", 0.5, 10.0),
            _pair("best", 0.7, 50.0),
            _pair("nan", math.nan, 1.0),
            _pair("none", None, 2.0),
            _pair("dominated", 0.4, 40.0),
        ]
    )["detection"]["shapes"]
    assert [r["model"] for r in rows] == [
        "best",
        "fast_tie",
        "slow_tie",
        "dominated",
        "nan",
        "none",
    ]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    pareto = {r["model"] for r in rows if r["pareto"]}
    # best (most accurate), fast_tie (faster at that accuracy), nan (fastest: an undefined
    # score is -inf, so it is on the front only by speed); slow_tie, dominated and none are not
    assert pareto == {"best", "fast_tie", "nan"}
    # at equal latency the more accurate one dominates; at equal accuracy the faster one
    same_speed = rank([_pair("hi", 0.5, 10.0), _pair("lo", 0.4, 10.0)])["detection"]["shapes"]
    assert [(r["model"], r["pareto"]) for r in same_speed] == [("hi", True), ("lo", False)]


def test_boards_are_per_task_and_dataset():
    boards = rank(
        [_pair("a", 0.1, 1), _pair("b", 0.2, 1, "segmentation"), _pair("c", 0.3, 1, dataset="voc")]
    )
    assert {t: sorted(b) for t, b in boards.items()} == {
        "detection": ["shapes", "voc"],
        "segmentation": ["shapes"],
    }


def test_compare_with_the_previous_run():
    old = {"boards": rank([_pair("a", 0.5, 10), _pair("b", 0.5, 10), _pair("gone", 0.1, 1)])}
    new = {"boards": rank([_pair("a", 0.6, 12), _pair("b", 0.5, 9), _pair("new", 0.3, 5)])}
    out = {c["pair"]: c for c in compare(new, old)}
    assert out["shapes × a"]["change"] == "better"
    assert out["shapes × a"]["primary_delta"] == 0.6 - 0.5
    assert out["shapes × a"]["latency_delta_ms"] == 2
    assert out["shapes × b"]["change"] == "same" and out["shapes × b"]["latency_delta_ms"] == -1
    assert out["shapes × new"]["change"] == "new" and "shapes × gone" not in out
    worse = compare({"boards": rank([_pair("a", 0.4, 10)])}, old)
    assert worse[0]["change"] == "worse"
    assert compare(new, None) == []


def test_promotion_picks_the_best_per_task_ties_by_latency_never_undefined():
    results = [
        _pair("det_slow", 0.5, 20),
        _pair("det_fast", 0.5, 10),
        _pair("det_nan", math.nan, 1),
        _pair("seg_none", None, 1, "segmentation"),
        _pair("seg_low", 0.1, 50, "segmentation"),
    ]
    best = choose_best(results)
    assert best["detection"]["model"] == "det_fast"
    assert best["segmentation"]["model"] == "seg_low"
    assert choose_best([_pair("only_nan", math.nan, 1)])["detection"]["model"] == "only_nan"
    assert all("_key" not in row for row in best.values())  # the sort key stays inside


def _full(model, primary, p50, task="detection", dataset="shapes", **kw):
    """A pair result with every field the report reads."""
    per_class = {"circle": primary, "square": 0.25}
    metrics = (
        {"coco": {"AP": primary, "per_class": per_class},
         "voc07": {"mAP": 0.5, "per_class": {"circle": 0.75, "square": 0.5}}}
        if task == "detection"
        else {"seg": {"mIoU": primary, "per_class_iou": {"background": 0.9, "circle": 0.125}}}
    )  # fmt: skip
    return {
        **_pair(model, primary, p50, task, dataset),
        "pair": f"{dataset}__{model}",
        "primary_metric": "coco/AP" if task == "detection" else "seg/mIoU",
        "latency_ms_p95": p50 * 1.5,
        "throughput": 1000 / p50,
        "params": 1_500_000,
        "flops": 2_000_000_000,
        "fps": {"big": "table"},
        "metrics": metrics,
        **kw,
    }


SNAPSHOTS = Path(__file__).parent / "data" / "snapshots"


def _same_as_snapshot(path: Path, name: str) -> None:
    """The page byte for byte as reviewed once (``UPDATE_SNAPSHOTS=1`` rewrites it after a
    deliberate change of the report; review the diff)."""
    import os

    want = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        want.parent.mkdir(parents=True, exist_ok=True)
        want.write_text(path.read_text())
    assert path.read_text() == want.read_text(), f"{path} differs from {want}"


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_suite_report_tables_plot_health_and_the_previous_run(tmp_path):
    import html
    import json

    import torch

    from eval.leaderboard import RULE, write_suite_report

    (tmp_path / "pairs").mkdir()
    torch.save([torch.full((4, 6, 3), 200, dtype=torch.uint8)],
               tmp_path / "pairs" / "shapes__a.samples.pt")  # fmt: skip
    health = {
        "ok": False,
        "errors": ["e"],
        "warnings": ["w1", "w2"],
        "splits": {"val": {"images": 16, "objects": 40, "size_buckets": {"small": 3},
                           "skipped": {"total": 2}}},
    }  # fmt: skip
    first = [_full("a", 0.5, 10.0), _full("b", 0.25, 20.0), _full("s", 0.75, 5.0, "segmentation")]
    data = write_suite_report(tmp_path, {"name": "unit"}, first, {"shapes": health})
    _same_as_snapshot(tmp_path / "index.html", "leaderboard_index.html")
    assert data["comparison"] == [] and not (tmp_path / "previous.json").exists()
    head = "| # | model | primary | p50 ms | p95 ms | img/s | params | FLOPs | Pareto |\n" + (
        "|---" * 9 + "|\n"
    )
    top = f"# Benchmark: unit\n\nRule: {RULE}.\n\n## detection on shapes — primary: coco/AP\n\n"
    assert (tmp_path / "leaderboard.md").read_text() == (
        f"{top}{head}"
        "| 1 | a | 0.5000 | 10.0 | 15.0 | 100.0 | 1.50 M | 2.00 G | yes |\n"
        "| 2 | b | 0.2500 | 20.0 | 30.0 | 50.0 | 1.50 M | 2.00 G |  |\n\n"
        f"## segmentation on shapes — primary: seg/mIoU\n\n{head}"
        "| 1 | s | 0.7500 | 5.0 | 7.5 | 200.0 | 1.50 M | 2.00 G | yes |\n"
    )
    page = (tmp_path / "index.html").read_text()
    # the health table once (under the dataset's first task), per-class tables of the best
    assert page.count("<th>split</th>") == 1
    assert "<td>val</td><td>16</td><td>40</td><td>{&#x27;small&#x27;: 3}</td><td>2</td>" in page
    assert "health: ERRORS (1 errors, 2 warnings)" in page
    assert "<td>circle</td><td>0.5000</td><td>0.7500</td>" in page  # COCO and VOC07 of a
    assert "<td>circle</td><td>0.1250</td>" in page  # IoU of the segmenter
    assert page.count('src="data:image/png;base64,') == 1
    # Pareto dots: x = 45 + p50 / (1.15 * max p50) * 365, y = 10 + (1 - primary) * 255
    assert '<circle cx="203.7" cy="137.5" r="4"' in page  # a: 10 ms of 23, 0.5
    assert '<circle cx="362.4" cy="201.2" r="4"' in page  # b: 20 ms of 23, 0.25
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert "fps" not in saved["boards"]["detection"]["shapes"][0]
    second = [_full("a", 0.375, 12.0), _full("b", float("nan"), 20.0), _full("c", 0.1, 1.0)]
    data = write_suite_report(tmp_path, {"name": "unit"}, second)
    _same_as_snapshot(tmp_path / "index.html", "leaderboard_index_second.html")
    assert "<title>b: n/a at 20.0 ms</title>" in (tmp_path / "index.html").read_text()
    assert json.loads((tmp_path / "previous.json").read_text()) == saved
    change = {c["pair"]: c["change"] for c in data["comparison"]}
    assert change == {"shapes × a": "worse", "shapes × b": "worse", "shapes × c": "new"}
    # an undefined primary is shown as n/a and ranked last; having lost its score is worse
    assert (tmp_path / "leaderboard.md").read_text() == (
        f"{top}{head}"
        "| 1 | a | 0.3750 | 12.0 | 18.0 | 83.3 | 1.50 M | 2.00 G | yes |\n"
        "| 2 | c | 0.1000 | 1.0 | 1.5 | 1000.0 | 1.50 M | 2.00 G | yes |\n"
        "| 3 | b | n/a | 20.0 | 30.0 | 50.0 | 1.50 M | 2.00 G |  |\n\n"
        "## Compared with the previous run\n\n"
        "| pair | change | Δ primary | Δ p50 ms |\n|---|---|---|---|\n"
        "| shapes × a | worse | -0.1250 | 2.0 |\n"
        "| shapes × c | new | n/a | n/a |\n"
        "| shapes × b | worse | n/a | 0.0 |\n"
    )
    page = (tmp_path / "index.html").read_text()
    assert page.startswith("<!doctype html><html><head><meta charset=utf-8><title>Benchmark unit"
                           "</title><style>")  # fmt: skip
    assert page.endswith("</body></html>") and "<h1>Benchmark: unit</h1>" in page
    assert f"<p class=small>Rule: {html.escape(RULE)}.</p>" in page
    assert (
        "<h2>Compared with the previous run</h2><table><thead><tr><th>pair</th><th>change" in page
    )
    assert "<h3>shapes: per-class results</h3>" in page  # no health table this time
    assert page.count("<h2>") == 2
    saved = json.loads((tmp_path / "leaderboard.json").read_text(), parse_constant=_refuse)
    assert saved["boards"]["detection"]["shapes"][2]["primary"] is None  # NaN as JSON null
    assert saved["comparison"][2]["primary_delta"] is None  # strict JSON: no -Infinity
    assert saved["suite"] == "unit" and saved["rule"] == RULE


def saved_args(bm) -> dict:
    import torch

    return torch.load(Path(bm.path) / "model.pt", weights_only=True)["args"]


def test_promote_stores_the_winner_with_its_variant_and_record(tmp_path):
    import json

    import bentoml
    import torch
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from service.promote import promote
    from vision.engine.checkpoint import save_checkpoint

    meta = {"name": "fcos_r18", "class_names": ["circle"], "input_size": 96,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    ckpt = tmp_path / "best.pt"
    save_checkpoint({"model": {"w": torch.arange(3.0)}, "meta": meta, "optimizer": {"x": 1},
                     "args": {"model_kwargs": {"fpn_width": 32}}}, ckpt)  # fmt: skip
    (tmp_path / "m.int8.onnx").write_bytes(b"onnx bytes")
    table = {
        "rule": "fastest within 0.01",
        "rows": [
            {"variant": "eager", "status": "ok", "metric": 0.5, "p50_ms": 20.0, "speedup": 1.0},
            {"variant": "int8", "status": "ok", "metric": 0.495, "p50_ms": 8.0, "speedup": 2.5,
             "chosen": True, "file": str(tmp_path / "m.int8.onnx")},
        ],
    }  # fmt: skip
    results = [
        {**_full("loser", 0.25, 1.0), "checkpoint": str(tmp_path / "missing.pt")},
        {**_full("fcos_r18", 0.5, 20.0), "checkpoint": str(ckpt), "git_commit": "abc"},
    ]
    store = ModelStore(tmp_path / "store")
    BentoMLContainer.model_store.set(store)
    logs: list[str] = []
    try:
        tags = promote(results, "report-1", {"detection": table}, log=logs.append)
        bm = bentoml.models.get(tags["detection"])
    finally:
        BentoMLContainer.model_store.reset()
    assert list(tags) == ["detection"] and tags["detection"].startswith("vision-detector:")
    md = bm.info.metadata
    assert (md["task"], md["arch"], md["model"], md["report_id"]) == (
        "detection", "fcos_r18", "fcos_r18", "report-1")  # fmt: skip
    assert md["primary"] == 0.5 and md["latency_ms_p50"] == 20.0 and md["git_commit"] == "abc"
    assert md["class_names"] == ["circle"] and md["input_size"] == 96
    assert json.loads(md["model_kwargs"]) == {"fpn_width": 32}
    assert md["metrics"] == {"coco/AP": 0.5, "voc07/mAP": 0.5}
    assert (md["variant"], md["variant_metric"], md["variant_p50_ms"]) == ("int8", 0.495, 8.0)
    assert md["variant_rule"] == "fastest within 0.01" and md["variant_file"] == "m.int8.onnx"
    assert json.loads(md["variants"]) == [
        {"variant": "eager", "status": "ok", "metric": 0.5, "p50_ms": 20.0, "speedup": 1.0},
        {"variant": "int8", "status": "ok", "metric": 0.495, "p50_ms": 8.0, "speedup": 2.5},
    ]
    assert saved_args(bm) == {"model_kwargs": {"fpn_width": 32}}
    assert bm.info.labels == {"task": "detection"}
    assert (Path(bm.path) / "m.int8.onnx").read_bytes() == b"onnx bytes"
    saved = torch.load(Path(bm.path) / "model.pt", weights_only=True)
    assert set(saved) == {"model", "meta", "args"}  # no optimizer state in the store
    assert torch.equal(saved["model"]["w"], torch.arange(3.0))
    assert logs == [f"[promote] detection: fcos_r18 (coco/AP 0.5000, variant int8) → {bm.tag}"]


def test_promote_without_a_variants_table_stores_the_eager_model(tmp_path):
    import json

    import bentoml
    import torch
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from eval.leaderboard import RULE
    from service.promote import promote
    from vision.engine.checkpoint import save_checkpoint

    meta = {"name": "fcn8s_slim", "class_names": ["a", "b"], "input_size": 64,
            "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}  # fmt: skip
    save_checkpoint({"model": {"w": torch.ones(1)}, "meta": meta}, tmp_path / "s.pt")  # no args
    seg = {**_full("fcn8s_slim", 0.75, 5.0, "segmentation"), "checkpoint": str(tmp_path / "s.pt")}
    first, second = (dict(seg, dataset=d) for d in ("first", "second"))  # a tie: the first wins
    BentoMLContainer.model_store.set(ModelStore(tmp_path / "store"))
    logs: list[str] = []
    eager = {
        "rule": "fastest within 0.01",
        "rows": [
            {"variant": "eager", "status": "ok", "metric": 0.75, "p50_ms": 5.0, "chosen": True}
        ],
    }
    try:
        tag = promote([first, second], "r2", log=logs.append)["segmentation"]
        bm = bentoml.models.get(tag)
        tag = promote([first], "r3", {"segmentation": eager}, log=logs.append)["segmentation"]
        chose_eager = bentoml.models.get(tag).info.metadata
    finally:
        BentoMLContainer.model_store.reset()
    md = bm.info.metadata
    assert md["dataset"] == "first" and md["rule"] == RULE and md["git_commit"] == "unknown"
    assert md["mean"] == [0.1, 0.2, 0.3] and md["std"] == [0.4, 0.5, 0.6]
    assert md["model_kwargs"] == "{}" and md["variant"] == "eager"
    assert not {"variant_file", "variants", "variant_rule"} & set(md)
    assert saved_args(bm) == {}
    assert logs[0] == f"[promote] segmentation: fcn8s_slim (seg/mIoU 0.7500) → {bm.tag}"
    assert chose_eager["variant"] == "eager" and "variant_file" not in chose_eager  # no file
    assert json.loads(md["model_kwargs"]) == {}
