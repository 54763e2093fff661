"""Deployable variants of a trained model, each scored like the eager model: the validation
metric (``eval.metrics``), agreement with eager, and speed by the FPS protocol, side by side.

Variants (``VARIANTS``; each built from the checkpoint, verified against eager outputs):

- ``eager``: the training checkpoint in float32 (the baseline);
- ``fused``: BatchNorm folded into the preceding convolutions, channels-last memory;
- ``bf16``: bfloat16 autocast (fast on CPUs with AVX512-BF16; float16 weights on CUDA);
- ``onnx``: the network in ONNX Runtime, float32 (``vision.deploy``: detectors up to their
  head outputs, then torchvision's own decoding and NMS);
- ``int8``: ONNX Runtime static QDQ int8, calibrated on training images only;
- ``openvino``: the float32 ONNX file compiled by OpenVINO's CPU plugin;
- ``openvino_int8``: int8 by NNCF's post-training quantization for OpenVINO, calibrated on the
  same training images (``vision.deploy_openvino``).

A variant that cannot be built or fails gets a row that says why; the others still run.
Speed is measured in interleaved rounds (every variant once per round, medians over rounds):
the machines drift by tens of percent between minutes.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from eval.bench import count_flops
from eval.fps import environment, measure
from eval.iou import box_iou
from eval.metrics import PRIMARY, primary_value, score
from vision.deploy import calibration_batches
from vision.predictor import Predictor

VARIANTS = ("eager", "fused", "bf16", "onnx", "int8", "openvino", "openvino_int8")
RULE = (
    "the fastest variant (batch-1 p50 latency, end to end) whose primary metric is at most "
    "`budget` below eager's; eager when none qualifies"
)


def build(
    name: str, checkpoint: Path, out: Path, calibration, files: dict | None = None
) -> tuple[Predictor, Path | None]:
    """The predictor of one variant and its deployable file (None for torch variants);
    ``calibration()`` gives the int8 calibration batches. ``files`` keeps the ONNX files
    built in this run: one float32 export (run by ONNX Runtime and OpenVINO alike) and each
    runtime's own int8 quantization of it."""
    from vision.deploy import VARIANT_KINDS, export_onnx, variant_predictor

    if name not in VARIANT_KINDS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {name!r}")
    backend, precision = VARIANT_KINDS[name]
    files = {} if files is None else files
    file = None
    if backend != "torch":
        if "float32" not in files:
            model = Predictor.from_checkpoint(checkpoint).model
            files["float32"] = export_onnx(model, out / "model.onnx")
        file = files["float32"]
        if precision == "int8":  # each runtime's own quantization, made once per run
            if name not in files:
                files[name] = _quantizer(backend)(file, out / f"model.{name}.onnx", calibration())
            file = files[name]
    return variant_predictor(checkpoint, name, file), file


def _quantizer(backend: str):
    """The int8 quantization of a float32 ONNX file for a runtime: ONNX Runtime's static QDQ,
    or NNCF's for OpenVINO."""
    if backend == "openvino":
        from vision.deploy_openvino import quantize_openvino_int8

        return quantize_openvino_int8
    from vision.deploy import quantize_int8

    return quantize_int8


def agreement(task: str, ref: list[dict], preds: list[dict]) -> float:
    """Detection: fraction of eager's boxes (score ≥ 0.3) found again at IoU ≥ 0.9 with the
    same class; segmentation: fraction of pixels with the same class."""
    if task == "segmentation":
        same = sum(int((r["mask"] == p["mask"]).sum()) for r, p in zip(ref, preds, strict=True))
        return same / max(sum(r["mask"].numel() for r in ref), 1)
    hit = total = 0
    for r, p in zip(ref, preds, strict=True):
        keep = r["scores"] >= 0.3
        rb, rl = r["boxes"][keep], r["labels"][keep]
        total += len(rb)
        if len(rb) and len(p["boxes"]):
            iou = box_iou(rb, p["boxes"])
            iou[rl[:, None] != p["labels"][None, :]] = 0
            hit += int((iou.max(1).values >= 0.9).sum())
    return hit / max(total, 1)


def _size_mb(path: Path | None, predictor: Predictor) -> float:
    if path is not None:
        return path.stat().st_size / 2**20
    return sum(t.numel() * t.element_size() for t in predictor.model.state_dict().values()) / 2**20


def run_variants(
    checkpoint: Path | str,
    cfg,
    val_reader,
    train_reader,
    out: Path | str,
    variants=VARIANTS,
    calibration_images: int = 64,
    rounds: int = 3,
    iters: int = 10,
    log=print,
) -> dict:
    """Build, verify, score and time every variant; returns the table (see ``write_table``)."""
    out, checkpoint = Path(out), Path(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    shared = {Path(s.path).resolve() for s in train_reader.samples} & {
        Path(s.path).resolve() for s in val_reader.samples
    }
    if shared:
        raise ValueError(
            f"int8 calibration images must not overlap the scored split: {len(shared)} images "
            f"are in both (e.g. {sorted(shared)[0]}); calibrate on another dataset "
            "(vision optimize --calibration-data NAME)"
        )
    eager = Predictor.from_checkpoint(checkpoint)
    task = eager.task
    calib_ids = [s.image_id for s in train_reader.samples[:calibration_images]]
    rows, preds, built, files = [], {}, {}, {}
    for name in variants:
        row = {"variant": name, "status": "ok"}
        t0 = time.perf_counter()
        try:
            pred, path = build(
                name,
                checkpoint,
                out,
                lambda: calibration_batches(eager, train_reader, calibration_images),
                files,
            )
            metrics, kept = score(pred, val_reader, cfg.names, keep=len(val_reader))
            built[name], preds[name] = pred, kept
            row.update(
                metric=primary_value(task, metrics),
                metrics={k: metrics[k] for k in metrics if k != "seg"}
                if task == "detection"
                else {"seg": {k: v for k, v in metrics["seg"].items() if k != "confusion"}},
                file=str(path) if path else None,
                size_mb=_size_mb(path, pred),
                params=sum(p.numel() for p in eager.model.parameters()),
                gflops=count_flops(eager) / 1e9,
            )
        except Exception as e:  # noqa: BLE001 - a failed variant is a row, not a crash
            row.update(status=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            log(f"[optimize] {name}: {row['status']}")
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
        row["build_s"] = time.perf_counter() - t0
        rows.append(row)
    if "eager" in preds:
        for row in rows:
            if row["variant"] in preds:
                row["agreement"] = agreement(task, preds["eager"], preds[row["variant"]])
    _time(built, val_reader, rows, rounds, iters)
    base = next((r for r in rows if r["variant"] == "eager" and r["status"] == "ok"), None)
    for row in rows:
        if base and row["status"] == "ok":
            row["delta"] = row["metric"] - base["metric"]
            row["speedup"] = base["p50_ms"] / row["p50_ms"]
    return {
        "checkpoint": str(checkpoint),
        "model": eager.meta.name,
        "task": task,
        "dataset": cfg.name,
        "primary_metric": PRIMARY[task],
        "images": len(val_reader),
        "calibration": {"split": "train", "images": calib_ids},
        "environment": environment(eager),
        "timing": f"FPS protocol, {rounds} interleaved rounds of {iters} iterations, medians",
        "rows": rows,
    }


def _time(built: dict, reader, rows: list[dict], rounds: int, iters: int) -> None:
    """Batch-1 p50/p95 and batch-8 images/s of every built variant, interleaved."""
    images = [s.path.read_bytes() for s in reader.samples[:32]]
    got: dict[str, list] = {n: [] for n in built}
    for _ in range(rounds):
        for name, pred in built.items():
            got[name].append(measure(pred, images, (1, 8), 3, iters)["runs"])
    for row in rows:
        runs = got.get(row["variant"])
        if not runs:
            continue
        b1 = [r[0] for r in runs]
        row["p50_ms"] = float(np.median([r["total_ms"]["p50"] for r in b1]))
        row["p95_ms"] = float(np.median([r["total_ms"]["p95"] for r in b1]))
        row["inference_p50_ms"] = float(np.median([r["stages_ms"]["inference"]["p50"] for r in b1]))
        row["post_p50_ms"] = float(np.median([r["stages_ms"]["postprocess"]["p50"] for r in b1]))
        row["b8_images_per_s"] = float(np.median([r[1]["images_per_s"] for r in runs]))


def choose(table: dict, budget: float = 0.01) -> dict:
    """The variant to deploy by ``RULE``."""
    ok = [r for r in table["rows"] if r["status"] == "ok" and "p50_ms" in r]
    eager = next((r for r in ok if r["variant"] == "eager"), None)
    if eager is None:
        raise ValueError("no working eager row: nothing to compare the variants with")
    within = [r for r in ok if r["metric"] >= eager["metric"] - budget]
    return min(within, key=lambda r: r["p50_ms"]) if within else eager


HEAD = [
    "variant",
    "status",
    "size",
    "params",
    "FLOPs",
    "metric",
    "Δ vs eager",
    "agreement",
    "p50 latency",
    "p95 latency",
    "batch-8 throughput",
    "speed-up",
]


def _cells(r: dict) -> list[str]:
    from eval.html import fmt, status_word

    ok = r["status"] == "ok"
    num = (lambda k, d=4, u="": fmt(r.get(k), d, u)) if ok else (lambda k, d=4, u="": "")
    return [
        r["variant"] + (" (served)" if r.get("chosen") else ""),
        status_word(r["status"]),
        num("size_mb", 1, "MB"),
        fmt(r["params"] / 1e6, 2, "M") if ok else "",
        num("gflops", 2, "G"),
        num("metric"),
        f"{r['delta']:+.4f}" if ok and "delta" in r else "",
        num("agreement"),
        num("p50_ms", 1, "ms"),
        num("p95_ms", 1, "ms"),
        num("b8_images_per_s", 1, "img/s"),
        f"{r['speedup']:.2f}×" if ok and "speedup" in r else "",
    ]


def _of(calibration_dataset: str | None, dataset: str) -> str:
    """`` of NAME`` when int8 was calibrated on another dataset than the scored one."""
    return f" of {calibration_dataset}" if calibration_dataset not in (None, dataset) else ""


def write_table(out: Path | str, table: dict, budget: float) -> dict:
    """``variants.json``, ``variants.md`` and ``variants.html`` (with the accuracy-latency
    plot); marks and returns the chosen row."""
    import html
    import json

    from eval import plots
    from eval.base import nan_to_none
    from eval.html import figure, md_table, page
    from eval.html import table as html_table

    out = Path(out)
    chosen = choose(table, budget)
    for r in table["rows"]:
        r["chosen"] = r is chosen
    table.update(
        rule=RULE.replace("`budget`", f"{budget:g}"), budget=budget, chosen=chosen["variant"]
    )
    (out / "variants.json").write_text(json.dumps(nan_to_none(table), indent=1))
    rows = [_cells(r) for r in table["rows"]]
    title = (
        f"Deployable variants: {table['model']} on {table['dataset']} ({table['primary_metric']})"
    )
    env = table["environment"]
    notes = (
        f"{table['images']} validation images; {table['timing']}; {env['device']}, "
        f"{env['threads']} threads; int8 calibrated on {len(table['calibration']['images'])} "
        f"training images{_of(table['calibration'].get('dataset'), table['dataset'])}. "
        f"Served: {table['rule']}."
    )
    md = [f"# {title}", "", notes, "", md_table(rows, HEAD), ""]
    (out / "variants.md").write_text("\n".join(md))
    ok = [r for r in table["rows"] if r["status"] == "ok" and "p50_ms" in r]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=small>{html.escape(notes)}</p>",
        html_table(rows, HEAD, sortable=True, numeric=range(2, len(HEAD))),
    ]
    if ok:
        points = [(r["variant"], r["p50_ms"], r["metric"]) for r in ok]
        png = plots.scatter(
            points,
            "latency p50 (ms, batch 1, end to end)",
            table["primary_metric"],
            "accuracy against latency",
            highlight=chosen["variant"],
        )
        body += [
            "<h2>Accuracy and latency</h2>",
            figure(
                png,
                f"accuracy–latency of the variants — {table['model']}",
                "Each variant's metric on the validation split against its batch-1 latency; "
                "the star is the one served.",
            ),
        ]
    (out / "variants.html").write_text(page(title, body))
    return chosen


def format_table(table: dict) -> str:
    """The table for a terminal."""
    rows = [_cells(r) for r in table["rows"]]
    widths = [
        max(len(h), *(len(c) for c in col))
        for h, col in zip(HEAD, zip(*rows, strict=True), strict=True)
    ]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(HEAD), *(line(r) for r in rows)])
