"""Leaderboards from benchmark pair results: ranking, Pareto front, comparison with the
previous run, and the suite report (JSON, Markdown, self-contained HTML)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import torch

from eval.base import nan_to_none
from eval.report import CSS, _md_table, _table, fmt, png_data_uri, svg_lines

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
            fmt(r["latency_ms_p50"], 1),
            fmt(r["latency_ms_p95"], 1),
            fmt(r["throughput"], 1),
            f"{r['params'] / 1e6:.2f} M",
            f"{r['flops'] / 1e9:.2f} G",
            "yes" if r["pareto"] else "",
        ]
        for r in rows
    ]


HEAD = ["#", "model", "primary", "p50 ms", "p95 ms", "img/s", "params", "FLOPs", "Pareto"]


def write_suite_report(
    out: Path | str, suite: dict, results: list[dict], health: dict[str, dict] | None = None
) -> dict:
    """Write ``leaderboard.json``, ``leaderboard.md`` and ``index.html``; the previous
    ``leaderboard.json`` becomes ``previous.json`` and is compared against."""
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
    md = [f"# Benchmark: {suite.get('name')}", "", f"Rule: {RULE}.", ""]
    body = [
        f"<h1>Benchmark: {html.escape(str(suite.get('name')))}</h1>",
        f"<p class=small>Rule: {html.escape(RULE)}.</p>",
    ]
    shown: set[str] = set()  # a dataset's health table appears once, under its first task
    for task, by_data in boards.items():
        for dataset, rows in by_data.items():
            metric = rows[0]["primary_metric"]
            title = f"{task} on {dataset} — primary: {metric}"
            md += [f"## {title}", "", _md_table(_rows(rows), HEAD), ""]
            body += [
                f"<h2>{html.escape(title)}</h2>",
                _table(_rows(rows), HEAD),
                _pareto_svg(rows, metric),
            ]
            first = dataset not in shown
            shown.add(dataset)
            body += _dataset_section(
                out, dataset, rows, (health or {}).get(dataset) if first else None
            )
    if data["comparison"]:
        comp = [
            [c["pair"], c["change"], fmt(c.get("primary_delta")), fmt(c.get("latency_delta_ms"), 1)]
            for c in data["comparison"]
        ]
        head = ["pair", "change", "Δ primary", "Δ p50 ms"]
        md += ["## Compared with the previous run", "", _md_table(comp, head), ""]
        body += ["<h2>Compared with the previous run</h2>", _table(comp, head)]
    (out / "leaderboard.md").write_text("\n".join(md))
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Benchmark "
        f"{html.escape(str(suite.get('name')))}</title><style>{CSS}</style></head><body>"
        f"{''.join(body)}</body></html>"
    )
    (out / "index.html").write_text(page)
    return data


def _pareto_svg(rows: list[dict], metric: str) -> str:
    lat = [r["latency_ms_p50"] for r in rows]
    acc = [_score(r["primary"]) if _score(r["primary"]) > -math.inf else 0 for r in rows]
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms_p50"])
    series = {f"{r['model']}": ([r["latency_ms_p50"]], [a]) for r, a in zip(rows, acc, strict=True)}
    series["Pareto front"] = (
        [r["latency_ms_p50"] for r in front],
        [_score(r["primary"]) for r in front],
    )
    xmax = max(lat) * 1.15 if lat else 1
    svg = svg_lines(series, "latency p50 (ms, batch 1)", metric, xlim=(0, xmax), ylim=(0, 1))
    dots = []  # single-point series: mark them with circles
    for r, a in zip(rows, acc, strict=True):
        x = 45 + r["latency_ms_p50"] / xmax * (420 - 55)
        y = 10 + (1 - a) * (300 - 45)
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#333"><title>'
            f"{html.escape(r['model'])}: {fmt(r['primary'])} at {r['latency_ms_p50']:.1f} ms"
            f"</title></circle>"
        )
    return svg.replace("</svg>", "".join(dots) + "</svg>")


def _dataset_section(out: Path, dataset: str, rows: list[dict], health: dict | None) -> list:
    what = "dataset health and per-class results" if health else "per-class results"
    body = [f"<h3>{html.escape(dataset)}: {what}</h3>"]
    if health:
        hrows = [
            [
                k,
                str(v["images"]),
                str(v["objects"]),
                str(v["size_buckets"]),
                str(v["skipped"]["total"]),
            ]
            for k, v in health["splits"].items()
        ]
        body.append(_table(hrows, ["split", "images", "objects", "sizes", "skipped"]))
        body.append(
            f"<p class=small>health: {'OK' if health['ok'] else 'ERRORS'} "
            f"({len(health['errors'])} errors, {len(health['warnings'])} warnings)</p>"
        )
    best = rows[0]
    if best["task"] == "detection":
        pc = best["metrics"]["coco"]["per_class"]
        v7 = best["metrics"]["voc07"]["per_class"]
        prow = [[n, fmt(pc[n]), fmt(v7[n])] for n in pc]
        body.append(
            f"<p>Per class, best model ({html.escape(best['model'])}):</p>"
            + _table(prow, ["class", "COCO AP", "VOC07 AP"])
        )
    else:
        pc = best["metrics"]["seg"]["per_class_iou"]
        body.append(
            f"<p>Per class, best model ({html.escape(best['model'])}):</p>"
            + _table([[n, fmt(v)] for n, v in pc.items()], ["class", "IoU"])
        )
    for r in rows:
        p = out / "pairs" / f"{r['pair']}.samples.pt"
        if p.is_file():
            imgs = torch.load(p, weights_only=True)
            body.append(
                f"<p class=small>{html.escape(r['model'])}</p><div class=imgs>"
                + "".join(
                    f'<img alt="{html.escape(r["model"])} sample" src="{png_data_uri(i.numpy())}">'
                    for i in imgs
                )
                + "</div>"
            )
    return body
