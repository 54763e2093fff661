"""Leaderboards from benchmark pair results: ranking, Pareto front, comparison with the
previous run, and the suite report (JSON, Markdown, self-contained HTML)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import torch

from eval import plots
from eval.base import nan_to_none
from eval.figures import health_figures, model_figures
from eval.html import figure, fmt, fmt_count, legend, md_table, page, png_data_uri, table
from eval.report import per_class_rows

RULE = (
    "ranked by the primary metric (higher is better: COCO AP@[.50:.95] for detection, "
    "mIoU for segmentation); ties broken by batch-1 p50 latency (lower is better)"
)


def _score(v) -> float:
    return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else v


def rank(results: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{task: {dataset: [pair results, best first]}}`` with ``rank`` and ``pareto`` set."""
    boards: dict[str, dict[str, list[dict]]] = {}
    for r in results:
        boards.setdefault(r["task"], {}).setdefault(r["dataset"], []).append(r)
    for by_data in boards.values():
        for rows in by_data.values():
            rows.sort(key=lambda r: (-_score(r["primary"]), r["latency_ms_p50"]))
            for i, r in enumerate(rows, 1):
                r["rank"] = i
                r["pareto"] = not any(
                    _score(o["primary"]) >= _score(r["primary"])
                    and o["latency_ms_p50"] <= r["latency_ms_p50"]
                    and (
                        _score(o["primary"]) > _score(r["primary"])
                        or o["latency_ms_p50"] < r["latency_ms_p50"]
                    )
                    for o in rows
                )
    return boards


def compare(current: dict, previous: dict | None) -> list[dict]:
    """Per pair: primary metric and latency now vs the previous run of the suite."""
    if not previous:
        return []
    old = {
        (r["task"], r["dataset"], r["model"]): r
        for t in previous["boards"].values()
        for rows in t.values()
        for r in rows
    }
    out = []
    for t in current["boards"].values():
        for rows in t.values():
            for r in rows:
                o = old.get((r["task"], r["dataset"], r["model"]))
                if o is None:
                    out.append({"pair": f"{r['dataset']} × {r['model']}", "change": "new"})
                    continue
                now, before = _score(r["primary"]), _score(o["primary"])
                # a score that became (or stopped being) undefined: worse (better), no delta
                d = now - before if math.isfinite(now) and math.isfinite(before) else math.nan
                out.append(
                    {
                        "pair": f"{r['dataset']} × {r['model']}",
                        "primary_delta": d,
                        "latency_delta_ms": r["latency_ms_p50"] - o["latency_ms_p50"],
                        "change": "better" if now > before else "worse" if now < before else "same",
                    }
                )
    return out


def _rows(rows: list[dict]) -> list[list[str]]:
    return [
        [
            str(r["rank"]),
            r["model"],
            fmt(r["primary"]),
            fmt(r["latency_ms_p50"], 1, "ms"),
            fmt(r["latency_ms_p95"], 1, "ms"),
            fmt(r["throughput"], 1, "img/s"),
            fmt_count(r["params"]),
            fmt_count(r["flops"]),
            "yes" if r["pareto"] else "no",
        ]
        for r in rows
    ]


HEAD = [
    "#",
    "model",
    "primary",
    "p50 latency",
    "p95 latency",
    "throughput",
    "params",
    "FLOPs",
    "on the Pareto front",
]


def write_suite_report(
    out: Path | str, suite: dict, results: list[dict], health: dict[str, dict] | None = None
) -> dict:
    """Write ``leaderboard.json``, ``leaderboard.md`` and ``index.html``; the previous
    ``leaderboard.json`` becomes ``previous.json`` and is compared against. The page opens
    offline: figures are embedded, and it links each task's deployable-variants page when
    ``OUT/variants/TASK/variants.html`` exists."""
    out = Path(out)
    prev_path = out / "leaderboard.json"
    previous = json.loads(prev_path.read_text()) if prev_path.is_file() else None
    if previous:
        (out / "previous.json").write_text(prev_path.read_text())
    boards = rank(results)
    data = {"suite": suite.get("name"), "rule": RULE, "boards": boards}
    data["comparison"] = compare(data, previous)
    slim = {
        **data,
        "boards": {
            t: {
                d: [{k: v for k, v in r.items() if k not in ("fps",)} for r in rows]
                for d, rows in b.items()
            }
            for t, b in boards.items()
        },
    }
    prev_path.write_text(json.dumps(nan_to_none(slim), indent=1))
    name = html.escape(str(suite.get("name")))
    md = [f"# Benchmark: {suite.get('name')}", "", f"Rule: {RULE}.", ""]
    body = [f"<h1>Benchmark: {name}</h1>", f"<p class=small>Rule: {html.escape(RULE)}.</p>"]
    body.append(_nav(out, boards))
    shown: set[str] = set()  # a dataset's health appears once, under its first task
    for task, by_data in boards.items():
        for dataset, rows in by_data.items():
            metric = rows[0]["primary_metric"]
            title = f"{task} on {dataset} — primary: {metric}"
            md += [f"## {title}", "", md_table(_rows(rows), HEAD), ""]
            body += [
                f'<h2 id="{task}-{html.escape(dataset)}">{html.escape(title)}</h2>',
                table(_rows(rows), HEAD, sortable=True, numeric=(0, 2, 3, 4, 5, 6, 7)),
                *_accuracy_latency(rows, metric),
                *_variants_link(out, task),
            ]
            if dataset not in shown and (health or {}).get(dataset):
                body += _health_section(dataset, health[dataset])
            shown.add(dataset)
            for r in rows:
                body += _model_section(out, r)
    if data["comparison"]:
        comp = [
            [
                c["pair"],
                c["change"],
                fmt(c.get("primary_delta")),
                fmt(c.get("latency_delta_ms"), 1, "ms"),
            ]
            for c in data["comparison"]
        ]
        head = ["pair", "change", "Δ primary", "Δ p50 latency"]
        md += ["## Compared with the previous run", "", md_table(comp, head), ""]
        body += ["<h2>Compared with the previous run</h2>", table(comp, head, sortable=True)]
    (out / "leaderboard.md").write_text("\n".join(md))
    (out / "index.html").write_text(page(f"Benchmark {suite.get('name')}", body))
    return data


def _nav(out: Path, boards: dict) -> str:
    links = [
        f'<a href="#{t}-{html.escape(d)}">{html.escape(t)} on {html.escape(d)}</a>'
        for t, by in boards.items()
        for d in by
    ]
    links += [
        f'<a href="variants/{t}/variants.html">deployable variants ({html.escape(t)})</a>'
        for t in boards
        if (out / "variants" / t / "variants.html").is_file()
    ]
    return "<nav>" + "".join(links) + "</nav>"


def _accuracy_latency(rows: list[dict], metric: str) -> list[str]:
    """Accuracy against latency with labelled points, when there are models to compare."""
    if len(rows) < 2:
        return []
    points = [
        (
            r["model"],
            r["latency_ms_p50"],
            _score(r["primary"]) if math.isfinite(_score(r["primary"])) else 0.0,
        )
        for r in rows
    ]
    front = [r["model"] for r in rows if r["pareto"]]
    png = plots.scatter(
        points, "latency p50 (ms, batch 1, end to end)", metric, f"{metric} against latency", front
    )
    return [
        figure(
            png,
            f"accuracy–latency — {rows[0]['dataset']}",
            "Each model's primary metric against its batch-1 latency; the dashed line "
            "joins the Pareto front.",
        )
    ]


def _variants_link(out: Path, task: str) -> list[str]:
    page_ = out / "variants" / task / "variants.html"
    if not page_.is_file():
        return []
    return [
        f"<p>Deployable variants of this task's best model (eager, ONNX, int8: speed, size and "
        f'metric, the one served): <a href="variants/{task}/variants.html">table and '
        f"accuracy–latency plot</a>.</p>"
    ]


def _health_section(dataset: str, health: dict) -> list[str]:
    rows = [
        [
            k,
            fmt(v["images"]),
            fmt(v["objects"]),
            *(fmt(v.get("size_buckets", {}).get(b)) for b in ("small", "medium", "large")),
            fmt(v.get("difficult")),
            fmt(v.get("crowd")),
            fmt(v.get("skipped", {}).get("total")),
        ]
        for k, v in health["splits"].items()
    ]
    head = [
        "split",
        "images",
        "objects",
        "small < 32²",
        "medium",
        "large ≥ 96²",
        "difficult",
        "crowd",
        "skipped",
    ]
    status = (
        '<span class="ok">✓ healthy</span>'
        if health["ok"]
        else f'<span class="bad">✗ {len(health["errors"])} errors</span>'
    )
    return [
        f"<h3>{html.escape(dataset)}: dataset health</h3>",
        f"<p>{status} · {len(health['errors'])} errors, {len(health['warnings'])} warnings "
        "(the report of <code>vision data check</code>)</p>",
        table(rows, head, numeric=range(1, len(head))),
        '<div class="figs">',
        *health_figures(health, dataset),
        "</div>",
    ]


def _model_section(out: Path, r: dict) -> list[str]:
    model = r["model"]
    head, rows = per_class_rows(r["task"], r["metrics"], r.get("class_names") or [])
    body = [
        f"<h3>{html.escape(model)} on {html.escape(r['dataset'])}</h3>",
        "<p class=small>Per class (click a column to sort):</p>",
        table(rows, head, sortable=True, numeric=range(1, len(head))),
        '<div class="figs">',
        *model_figures(r["task"], r["metrics"], model, r.get("training"), r["primary_metric"]),
        "</div>",
    ]
    p = out / "pairs" / f"{r['pair']}.samples.pt"
    if p.is_file():
        imgs = torch.load(p, weights_only=True)
        captions = [s["caption"] for s in r.get("samples") or []] or [""] * len(imgs)
        if r.get("legend"):
            body.append(legend(r["legend"]["names"], r["legend"]["rgb"]))
        body.append('<div class="samples">')
        body += [
            f'<figure><img alt="sample {i} — {html.escape(model)}: {html.escape(c)}" '
            f'src="{png_data_uri(img.numpy())}"><figcaption>{html.escape(c)}</figcaption>'
            "</figure>"
            for i, (img, c) in enumerate(zip(imgs, captions, strict=False))
        ]
        body.append("</div>")
    return body
