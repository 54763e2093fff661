"""The COCO detector ported from the npm package: the TF.js reader on graphs written here, the
port against TensorFlow.js in Node, what it detects, serving it, and fine-tuning from it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vision.data.io import read_image
from vision.models import build_model
from vision.models.nanodet_port import port_convs, port_weights
from vision.models.npm_weights import weight_file
from vision.models.tfjs import GraphModelError, read_graph_model
from vision.predictor import Predictor

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def _const(name: str) -> dict:
    return {"name": name, "op": "Const", "attr": {}}


def _graph(tmp_path: Path, k1: np.ndarray, truncate: int = 0) -> Path:
    """Input → Pad → Conv2D (+ float16 bias) → LeakyReLU → 1x1 Conv2D (uint8 kernel) + bias."""
    b1 = np.array([0.5, -1.0, 2.0, 0.25], np.float32)  # exact in float16
    q = np.arange(12, dtype=np.uint8).reshape(1, 1, 4, 3)
    b2 = np.array([1.0, 2.0, 3.0], np.float32)
    pad = np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32)
    nodes = [
        {"name": "x", "op": "Placeholder"},
        _const("pad"), _const("k1"), _const("b1"), _const("k2"), _const("b2"),
        {"name": "Pad", "op": "Pad", "input": ["x", "pad"]},
        {"name": "t", "op": "Transpose", "input": ["Pad"]},
        {"name": "m/convolution", "op": "Conv2D", "input": ["t", "k1"],
         "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}}},
        {"name": "Add", "op": "Add", "input": ["m/convolution", "b1"]},
        {"name": "act", "op": "LeakyRelu", "input": ["Add"], "attr": {"alpha": {"f": 0.1}}},
        {"name": "m/convolution_1", "op": "Conv2D", "input": ["act", "k2"],
         "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}}},
        {"name": "Add_1", "op": "Add", "input": ["m/convolution_1", "b2:0"]},
    ]  # fmt: skip
    weights = [
        {"name": "pad", "shape": [4, 2], "dtype": "int32"},
        {"name": "k1", "shape": list(k1.shape), "dtype": "float32"},
        {"name": "b1", "shape": [4], "dtype": "float32",
         "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "k2", "shape": [1, 1, 4, 3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5}},
        {"name": "b2", "shape": [3], "dtype": "float32"},
    ]  # fmt: skip
    data = b"".join(
        [pad.tobytes(), k1.astype("<f4").tobytes(), b1.astype("<f2").tobytes(), q.tobytes(),
         b2.astype("<f4").tobytes()]
    )  # fmt: skip
    (tmp_path / "w.bin").write_bytes(data[: len(data) - truncate])
    spec = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["w.bin"], "weights": weights}],
    }
    (tmp_path / "model.json").write_text(json.dumps(spec))
    return tmp_path / "model.json"


K1 = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32)


def test_reader_dequantizes_and_the_port_copies_every_tensor(tmp_path):
    g = read_graph_model(_graph(tmp_path, K1))
    np.testing.assert_array_equal(g.weights["k1"], K1)
    np.testing.assert_array_equal(g.weights["b1"], [0.5, -1.0, 2.0, 0.25])
    assert g.weights["b1"].dtype == np.float32
    np.testing.assert_array_equal(g.weights["k2"].ravel(), np.arange(12) * 0.5 - 1.0)
    assert g.source("t") == "Pad" and [n.name for n in g.consumers("Pad")] == ["m/convolution"]
    convs = [nn.Conv2d(2, 4, 3, 1, 1), nn.Conv2d(4, 3, 1)]
    report = port_convs(convs, g)
    assert report["mapped"] == 4 and report["structural"] == ["pad"]
    torch.testing.assert_close(convs[0].weight.data, torch.from_numpy(K1).permute(3, 2, 0, 1))
    torch.testing.assert_close(convs[1].bias.data, torch.tensor([1.0, 2.0, 3.0]))
    x = torch.rand(1, 2, 5, 5)  # the graph's computation, written out in NumPy-free torch
    want = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), convs[0].weight) + torch.tensor(
        [0.5, -1.0, 2.0, 0.25]
    ).view(1, 4, 1, 1)
    torch.testing.assert_close(convs[0](x), want)


def test_reader_and_port_refuse_what_does_not_fit(tmp_path):
    with pytest.raises(GraphModelError, match=r"needs bytes .* but the shards hold"):
        read_graph_model(_graph(tmp_path, K1, truncate=3))
    g = read_graph_model(_graph(tmp_path, K1))
    with pytest.raises(GraphModelError, match=r"expected shape \(5, 2, 3, 3\).*got \(4, 2, 3, 3\)"):
        port_convs([nn.Conv2d(2, 5, 3, 1, 1), nn.Conv2d(5, 3, 1)], g)
    with pytest.raises(GraphModelError, match=r"padding \[1, 1\], the port's is \(0, 0\)"):
        port_convs([nn.Conv2d(2, 4, 3), nn.Conv2d(4, 3, 1)], g)
    with pytest.raises(GraphModelError, match="expected 3 Conv2D nodes"):
        port_convs([nn.Conv2d(2, 4, 3, 1, 1), nn.Conv2d(4, 3, 1), nn.Conv2d(3, 3, 1)], g)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(GraphModelError, match="names the shard w.bin"):
        read_graph_model(tmp_path / "model.json")


def test_the_package_graph_maps_whole():
    g = read_graph_model(weight_file("models/nanodet.json"))
    model = build_model("nanodet_coco", 80, weights_backbone=None)
    report = port_weights(model.net, g)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert report["mapped"] == 2 * len(convs) == 68  # every kernel and bias
    floats = [n for n in report["structural"] if g.weights[n].dtype == np.float32]
    assert all(g.weights[n].size == 1 for n in floats)  # only the max pool's -inf pad value
    assert sum(p.numel() for p in model.parameters()) == 3_786_068


def test_port_agrees_with_tfjs_in_node(tmp_path):
    out = tmp_path / "parity"
    cmd = [sys.executable, "-m", "bench.nanodet_parity", "--images", "2", "--folder", str(DATA)]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((out / "parity.json").read_text())
    assert [i["image"] for i in r["images"]] == ["coco128_elephant.jpg", "coco128_zebra.jpg"]
    assert r["runtime"]["backend"] == "cpu" and r["runtime"]["version"] == "4.22.0"
    assert r["max_abs_scores"] <= 1e-3 and r["max_abs_box_logits"] <= 1e-3
    assert r["detections_compared"] > 20 and r["unmatched"] == 0 and r["min_iou"] >= 0.99


@pytest.fixture(scope="module")
def coco():
    return Predictor.from_checkpoint("nanodet_coco")


@pytest.mark.parametrize(
    ("photo", "animal", "count"),
    [("coco128_zebra.jpg", "zebra", 1), ("coco128_elephant.jpg", "elephant", 2)],
)
def test_real_photos_top_detection(coco, photo, animal, count):
    r = coco([read_image(DATA / photo)], score_threshold=0.3)[0]
    names = [coco.meta.class_names[int(k)] for k in r["labels"]]
    assert names[0] == animal and names.count(animal) == count, names


def test_served_with_coco_names(monkeypatch):
    monkeypatch.setenv("VISION_DETECTOR_CKPT", "nanodet_coco")
    monkeypatch.setenv("VISION_SEGMENTER_CKPT", "")
    from service.service import VisionService

    svc = VisionService()
    resp = asyncio.run(svc.detect(image=DATA / "coco128_zebra.jpg", score_threshold=0.3))
    body = json.loads(resp.body)
    assert resp.status_code == 200 and body["model"] == "nanodet_coco"
    assert body["detections"][0]["label"] == "zebra"
    info = svc.info()
    assert info["models"]["detection"]["classes"][:3] == ["person", "bicycle", "car"]


def test_fine_tuning_keeps_coco_weights_and_learns():
    torch.manual_seed(0)
    coco = build_model("nanodet_coco", 80)
    model = build_model("nanodet_coco", 1, class_names=["raccoon"], input_size=256)
    own, ref = model.net.state_dict(), coco.net.state_dict()
    assert all(torch.equal(own[k], ref[k]) for k in ref if k.startswith(("backbone", "neck")))
    head = "head.0.out.weight"
    assert torch.equal(own[head][1:], ref[head][80:])  # the box rows: COCO's
    assert not torch.equal(own[head][:1], ref[head][:1])  # the class row: new
    boxes = json.loads((DATA / "raccoon_boxes.json").read_text())
    pred = Predictor(model)
    x, info = pred.preprocess([read_image(DATA / n) for n in boxes])
    targets = [
        {"boxes": torch.tensor(b) * i["scale"], "labels": torch.zeros(len(b), dtype=torch.long)}
        for b, i in zip(boxes.values(), info, strict=True)
    ]

    def top_score() -> float:
        with torch.inference_mode():
            return float(model.net(x)[0].sigmoid().max())

    before = top_score()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # the training recipes' optimizer
    losses = []
    for _ in range(6):
        loss = model(x, targets)
        assert set(loss) == {"loss_qfl", "loss_bbox", "loss_dfl"}
        opt.zero_grad()
        sum(loss.values()).backward()
        opt.step()
        losses.append({k: float(v.detach()) for k, v in loss.items()})
    # the box branch adapts (GIoU and the distribution loss fall) and the new class is found;
    # the class loss's target is the boxes' IoU, so it rises while they improve
    assert losses[-1]["loss_bbox"] < 0.8 * losses[0]["loss_bbox"], losses
    assert losses[-1]["loss_dfl"] < losses[0]["loss_dfl"], losses
    assert top_score() > 2 * before, (before, top_score())


def test_gfl_pieces_on_hand_cases():
    from vision.models.gfl import atss_assign, distribution_focal, quality_focal
    from vision.models.nanodet import cell_centers

    logits = torch.randn(2, 11)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([3, 4]), reduction="none")
    got = distribution_focal(logits, torch.tensor([3.0, 3.25]))
    torch.testing.assert_close(got[0], ce[0])  # an integer distance: its own bin alone
    ce3 = torch.nn.functional.cross_entropy(logits[1:], torch.tensor([3]))
    torch.testing.assert_close(got[1], 0.75 * ce3 + 0.25 * ce[1])
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert quality_focal(x, x.sigmoid()).abs().max() < 1e-7  # a score equal to its target
    assert quality_focal(torch.tensor([4.0]), torch.tensor([0.0])) > 0.9  # a confident miss
    centers, strides = cell_centers((64, 64))
    box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    assigned = atss_assign(centers, strides, box)
    pos = assigned == 0
    assert pos.any() and (assigned[~pos] == -1).all()
    c = centers[pos]
    assert ((c > 16) & (c < 48)).all()  # every positive's centre lies inside the object
    assert (atss_assign(centers, strides, box[:0]) == -1).all()


def test_batch_prediction_names_coco_classes(tmp_path):
    from vision_cli.cli import main

    out = tmp_path / "preds"
    src = [str(DATA / "coco128_zebra.jpg"), str(DATA / "coco128_elephant.jpg")]
    args = ["predict", "--model", "nanodet_coco", "--source", *src, "--out", str(out)]
    assert main([*args, "--score-threshold", "0.3", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    top = {Path(r["path"]).name: r["detections"][0]["label"] for r in rows}
    assert top == {"coco128_zebra.jpg": "zebra", "coco128_elephant.jpg": "elephant"}


def test_eval_run_scores_the_shipped_model_by_name(tmp_path):
    """`vision eval run --model nanodet_coco` with no checkpoint file, on the two COCO128
    photos and their official boxes (scaled as the photos were): both animals found."""
    import yaml

    from vision.data.coco_names import COCO_NAMES
    from vision_cli.cli import main

    cfg = {
        "name": "coco128_two",
        "format": "coco",
        "root": str(DATA),
        "detection": {
            s: {"images": ".", "annotations": "coco128_two.json"} for s in ("train", "val")
        },
        "names": list(COCO_NAMES),
    }
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "report"
    args = ["eval", "run", "--model", "nanodet_coco", "--data", str(tmp_path / "two.yaml")]
    assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    assert metrics["coco"]["AP50"] > 0.9 and metrics["coco"]["AP"] > 0.5, metrics["coco"]
