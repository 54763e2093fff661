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


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def _images(page: str) -> list[str]:
    """The alt text of every image; each must be embedded."""
    import re

    alts = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert len(alts) == page.count("<img "), "an image that is not embedded"
    return alts


def test_suite_report_tables_plot_health_and_the_previous_run(tmp_path):
    import html
    import json

    import torch

    from eval.leaderboard import RULE, write_suite_report

    (tmp_path / "pairs").mkdir()
    torch.save([torch.full((4, 6, 3), 200, dtype=torch.uint8)],
               tmp_path / "pairs" / "shapes__a.samples.pt")  # fmt: skip
    (tmp_path / "variants" / "detection").mkdir(parents=True)
    (tmp_path / "variants" / "detection" / "variants.html").write_text("<html></html>")
    health = {
        "ok": False,
        "errors": ["e"],
        "warnings": ["w1", "w2"],
        "splits": {"detection/val": {"images": 16, "objects": 40, "size_buckets": {"small": 3},
                                     "skipped": {"total": 2},
                                     "objects_per_class": {"circle": 30, "square": 10},
                                     "box_sizes": {"edges": [0, 32, None], "counts": [3, 37]}}},
    }  # fmt: skip
    a = {**_full("a", 0.5, 10.0), "samples": [{"caption": "worst: 1.jpg, AP at IoU 0.5 0.100"}],
         "legend": {"names": ["circle", "square"], "rgb": [[128, 0, 0], [0, 128, 0]]},
         "training": [{"epoch": 1, "train_loss": 2.0, "lr": 0.01, "coco/AP": 0.25},
                      {"epoch": 2, "train_loss": 1.0, "lr": 0.001, "coco/AP": 0.5}]}  # fmt: skip
    first = [a, _full("b", 0.25, 20.0), _full("s", 0.75, 5.0, "segmentation")]
    data = write_suite_report(tmp_path, {"name": "unit"}, first, {"shapes": health})
    assert data["comparison"] == [] and not (tmp_path / "previous.json").exists()
    head = (
        "| # | model | primary | p50 latency | p95 latency | throughput | params | FLOPs | "
        "on the Pareto front |\n" + "|---" * 9 + "|\n"
    )
    top = f"# Benchmark: unit\n\nRule: {RULE}.\n\n## detection on shapes — primary: coco/AP\n\n"
    assert (tmp_path / "leaderboard.md").read_text() == (
        f"{top}{head}"
        "| 1 | a | 0.5000 | 10.0 ms | 15.0 ms | 100.0 img/s | 1.50 M | 2.00 G | yes |\n"
        "| 2 | b | 0.2500 | 20.0 ms | 30.0 ms | 50.0 img/s | 1.50 M | 2.00 G | no |\n\n"
        f"## segmentation on shapes — primary: seg/mIoU\n\n{head}"
        "| 1 | s | 0.7500 | 5.0 ms | 7.5 ms | 200.0 img/s | 1.50 M | 2.00 G | yes |\n"
    )
    page = (tmp_path / "index.html").read_text()
    assert "{" + "&#x27;" not in page and "{'" not in page  # no Python reprs in cells
    # the health table once (under the dataset's first task), counts as numbers, status as words
    assert page.count("<th>split</th>") == 1
    assert (
        "<td>detection/val</td><td class=num>16</td><td class=num>40</td><td class=num>3</td>"
        "<td class=num>n/a</td><td class=num>n/a</td>" in page
    )
    assert '<span class="bad">✗ 1 errors</span> · 1 errors, 2 warnings' in page
    # every model's per-class table, sortable
    assert page.count('<table class="sortable"><thead><tr><th>class</th>') == 3
    assert "<td>circle</td><td class=num>0.5000</td><td class=num>0.7500</td>" in page
    assert "<td>circle</td><td class=num>0.1250</td>" in page  # IoU of the segmenter
    alts = _images(page)
    assert "accuracy–latency — shapes" in alts  # two detectors: compared
    assert alts.count("accuracy–latency — shapes") == 1  # one segmenter: no plot
    assert {"per-class AP — a", "per-class AP — b", "per-class IoU — s"} <= set(alts)
    assert {
        "training curves — a",
        "objects per class — shapes",
        "box-size histogram — shapes",
    } <= set(alts)
    assert "sample 0 — a: worst: 1.jpg, AP at IoU 0.5 0.100" in alts
    assert '<div class="legend"><span><i style="background:rgb(128,0,0)"></i>circle' in page
    assert 'href="variants/detection/variants.html"' in page  # the variants page, linked
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    assert "fps" not in saved["boards"]["detection"]["shapes"][0]
    second = [_full("a", 0.375, 12.0), _full("b", float("nan"), 20.0), _full("c", 0.1, 1.0)]
    data = write_suite_report(tmp_path, {"name": "unit"}, second)
    assert json.loads((tmp_path / "previous.json").read_text()) == saved
    change = {c["pair"]: c["change"] for c in data["comparison"]}
    assert change == {"shapes × a": "worse", "shapes × b": "worse", "shapes × c": "new"}
    # an undefined primary is shown as n/a and ranked last; having lost its score is worse
    assert (tmp_path / "leaderboard.md").read_text() == (
        f"{top}{head}"
        "| 1 | a | 0.3750 | 12.0 ms | 18.0 ms | 83.3 img/s | 1.50 M | 2.00 G | yes |\n"
        "| 2 | c | 0.1000 | 1.0 ms | 1.5 ms | 1000.0 img/s | 1.50 M | 2.00 G | yes |\n"
        "| 3 | b | n/a | 20.0 ms | 30.0 ms | 50.0 img/s | 1.50 M | 2.00 G | no |\n\n"
        "## Compared with the previous run\n\n"
        "| pair | change | Δ primary | Δ p50 latency |\n|---|---|---|---|\n"
        "| shapes × a | worse | -0.1250 | 2.0 ms |\n"
        "| shapes × c | new | n/a | n/a |\n"
        "| shapes × b | worse | n/a | 0.0 ms |\n"
    )
    page = (tmp_path / "index.html").read_text()
    assert page.startswith("<!doctype html><html lang=en><head><meta charset=utf-8>")
    assert page.endswith("</script></body></html>") and "<h1>Benchmark: unit</h1>" in page
    assert f"<p class=small>Rule: {html.escape(RULE)}.</p>" in page
    assert (
        '<h2>Compared with the previous run</h2><table class="sortable"><thead><tr><th>pair' in page
    )
    assert "dataset health" not in page  # no health report this time
    assert page.count("<h2") == 2
    assert "accuracy–latency — shapes" in _images(page)  # three detectors now
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
