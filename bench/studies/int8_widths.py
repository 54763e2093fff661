"""int8 convolution latency against channel width in ONNX Runtime (static QDQ, uint8
activations, per-channel int8 weights: the project's int8 path, ``vision.deploy``).

Why: the 45 %-pruned detector's float ONNX graph is faster than the base's (11.1 vs 14.1 ms) but
its int8 graph is not (9.6 vs 9.5 ms), and a per-operator profile shows its depthwise
``QLinearConv`` nodes at 24 / 72 / 104 channels no faster than the base's at 32 / 96 / 144. This
measures single layers (depthwise 3x3 and pointwise 1x1, as in the Lite0 backbone) at widths
around multiples of 16, round-robin in one process, median of ``--rounds`` rounds, float32 ORT
beside int8 as the reference that follows FLOPs.

    .venv/bin/python -m bench.studies.int8_widths [--out bench/records/.../int8_widths.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vision.deploy import quantize_int8

WIDTHS = tuple(
    int(w)
    for w in os.environ.get("WIDTHS", "16 24 32 40 48 56 64 72 80 96 104 112 128 144").split()
)
LAYERS = {  # name: (module for C channels, spatial size)
    "depthwise3x3@80": (
        lambda c: nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.ReLU6()),
        80,
    ),
    "depthwise3x3@40": (
        lambda c: nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.ReLU6()),
        40,
    ),
    "pointwise1x1@40": (lambda c: nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU6()), 40),
}


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def build(kind: str, c: int, tmp: Path) -> dict:
    make, size = LAYERS[kind]
    torch.manual_seed(0)
    net = make(c).eval()
    x = torch.rand(1, c, size, size)
    fp = tmp / f"{kind}_{c}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False, as vision.deploy
        torch.onnx.export(net, (x,), str(fp), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["y"])  # fmt: skip
    calib = [np.random.default_rng(i).random((1, c, size, size), np.float32) for i in range(4)]
    q = quantize_int8(fp, tmp / f"{kind}_{c}.int8.onnx", calib)
    return {"fp32": session(fp), "int8": session(q), "x": x.numpy()}


def time_once(sess, x: np.ndarray, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        sess.run(None, {"images": x})
    return (time.perf_counter() - t0) / n * 1e6  # microseconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=200, help="inferences per timing")
    ap.add_argument("--out", default="reports/int8_widths.json")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for kind in LAYERS:
            models = {c: build(kind, c, Path(d)) for c in WIDTHS}
            times = {(c, p): [] for c in WIDTHS for p in ("fp32", "int8")}
            for _ in range(a.rounds):  # round-robin: drift of the host hits every width alike
                for c, m in models.items():
                    for p in ("fp32", "int8"):
                        time_once(m[p], m["x"], 10)  # warm
                        times[c, p].append(time_once(m[p], m["x"], a.runs))
            print(f"{kind}: width, fp32 us, int8 us, int8 us per channel")
            for c in WIDTHS:
                f32, i8 = (statistics.median(times[c, p]) for p in ("fp32", "int8"))
                results.append({"layer": kind, "width": c, "fp32_us": f32, "int8_us": i8})
                print(f"  {c:4d} {f32:9.1f} {i8:9.1f} {i8 / c:7.2f}{'' if c % 16 else '  (x16)'}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": a.rounds, "runs": a.runs, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
