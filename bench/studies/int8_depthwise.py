"""Whether keeping the depthwise convolutions in float32 inside the int8 graph pays (issue 14).

``bench/studies/int8_widths.py`` found ONNX Runtime's int8 depthwise 3x3 slower than its float32
one at
every width on these CPUs, while int8 pointwise convolutions are faster. This script takes whole
checkpoints, exports them (``vision.deploy.export_onnx``), quantizes them twice with the
project's settings (static QDQ, uint8 activations, per-channel int8 weights, 48 training images
for calibration): every convolution in int8 (``vision.deploy.quantize_int8``), and the same with
the depthwise convolutions listed in ``nodes_to_exclude``. It prints the network's batch-1
latency (ONNX Runtime alone, no pre/post-processing; interleaved rounds, medians) and how close
each int8 graph's first output is to float32's (the largest difference, and how often the
top class agrees: per pixel for a segmenter, per location for a detector's class logits).

    .venv/bin/python -m bench.studies.int8_depthwise LABEL=CKPT ... [--rounds 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from vision.data.io import read_image
from vision.deploy import export_onnx, quantize_int8
from vision.predictor import Predictor


def depthwise(path: Path) -> list[str]:
    """Names of the Conv nodes whose weight has one input channel per group (group > 1)."""
    model = onnx.load(str(path))
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1 and dims.get(n.input[1], [0, 0])[1] == 1:
            out.append(n.name)
    return out


def int8_float_depthwise(src: Path, out: Path, calib: list[np.ndarray]) -> tuple[Path, int]:
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    names = depthwise(pre)
    it = iter(calib)

    class Reader(CalibrationDataReader):
        def get_next(self):
            x = next(it, None)
            return None if x is None else {"images": x}

    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=names,
    )
    return out, len(names)


def session(path: Path, threads: int) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="LABEL=CKPT")
    ap.add_argument("--images", default="datasets/shapes/VOC/JPEGImages")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/int8_depthwise.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)
    files = sorted(Path(a.images).glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.checkpoints:
            label, ckpt = spec.split("=", 1)
            pred = Predictor.from_checkpoint(ckpt)
            prep = [pred.preprocess([read_image(p)])[0].numpy() for p in files[:48]]
            calib = [np.concatenate(prep[i : i + 8]) for i in range(0, 48, 8)]
            test = [pred.preprocess([read_image(p)])[0].numpy() for p in files[-16:]]
            fp32 = export_onnx(pred.model, Path(tmp) / f"{label}.onnx")
            graphs = {
                "fp32": fp32,
                "int8": quantize_int8(fp32, Path(tmp) / f"{label}.int8.onnx", calib),
            }
            graphs["int8_float_dw"], n_dw = int8_float_depthwise(
                fp32, Path(tmp) / f"{label}.int8dw.onnx", calib
            )
            sess = {k: session(p, a.threads) for k, p in graphs.items()}
            ref = [sess["fp32"].run(None, {"images": x})[0] for x in test]
            ms: dict[str, list[float]] = {k: [] for k in sess}
            for _ in range(a.rounds):
                for k, s in sess.items():
                    for x in test[:3]:
                        s.run(None, {"images": x})
                    t0 = time.perf_counter()
                    for x in test:
                        s.run(None, {"images": x})
                    ms[k].append((time.perf_counter() - t0) / len(test) * 1e3)
            axis = 1 if pred.model.meta.task == "segmentation" else -1  # the class axis
            for k, s in sess.items():
                outs = [s.run(None, {"images": x})[0] for x in test]
                pairs = list(zip(outs, ref, strict=True))
                row = {
                    "model": label,
                    "graph": k,
                    "depthwise_convs": n_dw,
                    "ms_p50": statistics.median(ms[k]),
                    "rounds_ms": ms[k],
                    "max_abs_err": max(float(np.abs(o - r).max()) for o, r in pairs),
                    "argmax_agreement": float(
                        np.mean([(o.argmax(axis) == r.argmax(axis)).mean() for o, r in pairs])
                    ),
                }
                rows.append(row)
                print(
                    f"{label:>8} {k:>14}  {row['ms_p50']:6.2f} ms  max|err| "
                    f"{row['max_abs_err']:.3f}  argmax agreement {row['argmax_agreement']:.4f}"
                    f"  ({n_dw} depthwise convs)"
                )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
