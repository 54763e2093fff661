"""The NanoDet port against the original TF.js graph in Node (TensorFlow.js 4.22, pure-JS CPU
backend): raw head outputs and final detections on COCO128 photos.

    NODE_PATH=.node/node_modules .venv/bin/python -m bench.nanodet_parity [--images 10]
        [--out bench/results/nanodet_parity]

Each photo is letterboxed to 416 px by the Predictor (the graph's fixed size). The graph gets
NanoDet's input (BGR, its mean/std), the port the Predictor's [0, 1] RGB tensor. Compared:
the graph's sigmoid class scores with the sigmoid of the port's class logits, and the box
distribution logits, as max |Δ|; then the detections both give through the same decoder
(classes equal, IoU of matched boxes, score differences). JSON in ``--out``/parity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from vision.data.io import read_image
from vision.models import build_model
from vision.models.nanodet import MEAN, STD, NanoDetDecoder
from vision.models.npm_weights import weight_file
from vision.predictor import Predictor

COCO128 = "../shared/data/real/coco/coco128/train2017"
SCORES = ("Identity", "Identity_1", "Identity_2")  # strides 8, 16, 32
BOXES = ("Identity_3", "Identity_4", "Identity_5")
MIN_SCORE = 0.05  # the decoder's own threshold: every detection is compared


def reference(inputs: list[np.ndarray], work: Path) -> list[dict]:
    """The graph's outputs for NanoDet-normalized BGR inputs, run by Node."""
    src, dst = work / "in", work / "out"
    src.mkdir(parents=True)
    files = []
    for k, x in enumerate(inputs):
        files.append(f"{k}.f32")
        x.astype("<f4").tofile(src / files[-1])
    spec = {"shape": list(inputs[0].shape), "files": files, "outputs": [*SCORES, *BOXES]}
    (src / "inputs.json").write_text(json.dumps(spec))
    script = Path(__file__).with_name("tfjs_run.js")
    env = {**os.environ, "NODE_PATH": os.environ.get("NODE_PATH", ".node/node_modules")}
    proc = subprocess.run(
        ["node", str(script), str(weight_file("models/nanodet.json")), str(src), str(dst)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"node tfjs_run.js failed: {proc.stderr.strip()[-800:]}")
    info = json.loads((dst / "outputs.json").read_text())
    out = []
    for f in files:
        arrays = {
            name: np.fromfile(dst / f"{f}.{name}.f32", "<f4").reshape(info["shapes"][name])
            for name in spec["outputs"]
        }
        scores = np.concatenate([arrays[n][0] for n in SCORES])
        boxes = np.concatenate([arrays[n][0] for n in BOXES])
        out.append({"scores": scores, "box_dist": boxes, "runtime": info})
    return out


def compare(port: dict, ref: dict) -> dict:
    """Matched detections (greedy by score, same class, best IoU) and what differs."""
    pb, rb = port["boxes"], ref["boxes"]
    ious = box_iou(pb, rb) if len(pb) and len(rb) else torch.zeros(len(pb), len(rb))
    left, worst_iou, worst_score, unmatched = set(range(len(rb))), 1.0, 0.0, 0
    for i in range(len(pb)):
        cands = [j for j in left if int(ref["labels"][j]) == int(port["labels"][i])]
        if not cands:
            unmatched += 1
            continue
        j = max(cands, key=lambda j: float(ious[i, j]))
        left.discard(j)
        worst_iou = min(worst_iou, float(ious[i, j]))
        worst_score = max(worst_score, abs(float(port["scores"][i] - ref["scores"][j])))
    return {
        "port": len(pb),
        "reference": len(rb),
        "unmatched": unmatched + len(left),
        "min_iou": worst_iou,
        "max_score_diff": worst_score,
    }


def run(images: list[Path], work: Path) -> dict:
    model = build_model("nanodet_coco", 80).eval()
    pred = Predictor(model)
    x, _ = pred.preprocess([read_image(p) for p in images])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    bgr = ((x - mean) / std).flip(1)
    refs = reference([bgr[k : k + 1].numpy() for k in range(len(images))], work)
    with torch.inference_mode():
        cls_logits, box_dist = model.net(x)
    dec = NanoDetDecoder(416, score_thresh=MIN_SCORE)
    rows = []
    for k, (path, ref) in enumerate(zip(images, refs, strict=True)):
        s_ref = torch.from_numpy(ref["scores"])
        d_ref = torch.from_numpy(ref["box_dist"])
        s_port = cls_logits[k].sigmoid()
        det_port = dec.from_scores(s_port, box_dist[k])
        det_ref = dec.from_scores(s_ref, d_ref)
        rows.append(
            {
                "image": path.name,
                "max_abs_scores": float((s_port - s_ref).abs().max()),
                "max_abs_box_logits": float((box_dist[k] - d_ref).abs().max()),
                "detections": compare(det_port, det_ref),
            }
        )
    return {
        "runtime": refs[0]["runtime"],
        "images": rows,
        "max_abs_scores": max(r["max_abs_scores"] for r in rows),
        "max_abs_box_logits": max(r["max_abs_box_logits"] for r in rows),
        "detections_compared": sum(r["detections"]["port"] for r in rows),
        "unmatched": sum(r["detections"]["unmatched"] for r in rows),
        "min_iou": min(r["detections"]["min_iou"] for r in rows),
        "max_score_diff": max(r["detections"]["max_score_diff"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--folder", default=COCO128)
    ap.add_argument("--out", default="bench/results/nanodet_parity")
    a = ap.parse_args()
    images = sorted(Path(a.folder).glob("*.jpg"))[: a.images]
    with tempfile.TemporaryDirectory() as tmp:
        result = run(images, Path(tmp))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(result, indent=1))
    rt = result["runtime"]
    print(
        f"{len(images)} photos, TF.js {rt['version']} ({rt['backend']}): "
        f"max |Δ| scores {result['max_abs_scores']:.2e}, box logits "
        f"{result['max_abs_box_logits']:.2e}; {result['detections_compared']} detections, "
        f"{result['unmatched']} unmatched, min IoU {result['min_iou']:.6f}, max score Δ "
        f"{result['max_score_diff']:.2e}"
    )
    print(f"wrote {out / 'parity.json'}")


if __name__ == "__main__":
    main()
