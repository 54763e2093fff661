"""Ranking and promotion rules on hand-made pair results."""

from __future__ import annotations

import math

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
