"""Deployable variants: every exportable model of the registry agrees with eager through ONNX
Runtime; the ones that cannot export say why; int8 is calibrated on training images only;
promotion picks the fastest variant within the budget."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.variants import agreement, choose
from vision.deploy import (
    OrtBackend,
    Unsupported,
    export_onnx,
    exportable,
    fold_batchnorm,
    quantize_int8,
)
from vision.models import build_model, list_models
from vision.predictor import Predictor

NOT_EXPORTED = {  # two-stage RoI heads / SSD: data-dependent shapes inside the network
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
}
SIZE = 64


def _images(n=3):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (SIZE - 8 * i, SIZE, 3), np.uint8) for i in range(n)]


def _model(name):
    torch.manual_seed(0)
    kw = {"score_thresh": 0.0} if name in ("fcos_r18", "fcos_slim") else {}
    m = build_model(name, 3, input_size=SIZE, **kw).eval()
    if m.meta.task == "detection" and hasattr(m.net, "score_thresh"):
        m.net.score_thresh = 0.0  # random weights score low: keep boxes to compare
    return m


@pytest.mark.parametrize("name", sorted(set(list_models()) - NOT_EXPORTED))
def test_onnx_runtime_agrees_with_eager(name, tmp_path):
    model = _model(name)
    eager = Predictor(model)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    ort = Predictor(model, backend=OrtBackend(path, model))
    imgs = _images()
    a, b = eager(imgs), ort(imgs)
    if model.meta.task == "segmentation":  # identical class maps (float32 noise ~1e-5)
        assert agreement("segmentation", a, b) > 0.999
        return
    for ra, rb in zip(a, b, strict=True):
        assert len(ra["boxes"]) == len(rb["boxes"]) > 0
        _same_detections(ra, rb)


def _same_detections(ra: dict, rb: dict) -> None:
    """The same detections, one to one: same class, boxes within 1e-3 px, scores within 1e-4.
    Not compared in order: random weights give scores that tie to float32 noise, and the two
    runtimes' noise can order tied detections differently."""
    left = list(range(len(rb["boxes"])))
    for box, score, label in zip(ra["boxes"], ra["scores"], ra["labels"], strict=True):
        match = [
            j
            for j in left
            if rb["labels"][j] == label
            and float((rb["boxes"][j] - box).abs().max()) <= 1e-3
            and abs(float(rb["scores"][j] - score)) <= 1e-4
        ]
        assert match, f"eager detection {box.tolist()} {float(score):.6f} not found in ORT's"
        left.remove(match[0])


@pytest.mark.parametrize("name", sorted(NOT_EXPORTED))
def test_models_without_an_export_path_say_why(name):
    with pytest.raises(Unsupported, match="one-stage"):
        exportable(build_model(name, 3, input_size=SIZE))


@pytest.mark.parametrize("name", ["fcn8s_slim", "dilated_slim", "fcos_r18"])
def test_folded_batchnorm_and_int8_stay_close(name, tmp_path):
    model = _model(name)
    imgs = _images()
    eager = Predictor(model)
    fused = copy.deepcopy(model)
    assert fold_batchnorm(fused) > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    a, b = eager(imgs), Predictor(fused, channels_last=True)(imgs)
    if model.meta.task == "segmentation":
        assert agreement("segmentation", a, b) > 0.999
    else:
        for ra, rb in zip(a, b, strict=True):
            np.testing.assert_allclose(ra["scores"][:10], rb["scores"][:10], atol=1e-3)
    path = export_onnx(model, tmp_path / "m.onnx")
    calib = [eager.preprocess(imgs)[0].numpy()]
    q = quantize_int8(path, tmp_path / "m.int8.onnx", calib)
    assert q.stat().st_size < path.stat().st_size / 2  # int8 weights
    got = Predictor(model, backend=OrtBackend(q, model))(imgs)
    assert len(got) == len(imgs)
    if model.meta.task == "segmentation":
        assert agreement("segmentation", a, got) > 0.5  # random weights: a loose sanity bound


def test_choose_fastest_within_budget_else_eager():
    rows = [
        {"variant": "eager", "status": "ok", "metric": 0.50, "p50_ms": 30.0},
        {"variant": "onnx", "status": "ok", "metric": 0.50, "p50_ms": 15.0},
        {"variant": "int8", "status": "ok", "metric": 0.492, "p50_ms": 8.0},
        {"variant": "bf16", "status": "ok", "metric": 0.40, "p50_ms": 5.0},
        {"variant": "fused", "status": "failed: x"},
    ]
    assert choose({"rows": rows}, 0.01)["variant"] == "int8"
    assert choose({"rows": rows}, 0.005)["variant"] == "onnx"
    slow = [rows[0], {**rows[3]}]  # nothing within budget: eager
    assert choose({"rows": slow}, 0.01)["variant"] == "eager"
    with pytest.raises(ValueError, match="eager"):
        choose({"rows": rows[1:]}, 0.01)


def test_variants_table_calibrates_on_training_images_only(shapes_cfg, tiny_checkpoints, tmp_path):
    from eval.variants import run_variants, write_table
    from vision.data.build import build_dataset

    val = build_dataset(shapes_cfg, "segmentation", "val")
    train = build_dataset(shapes_cfg, "segmentation", "train")
    val.limit(4)
    with pytest.raises(ValueError, match="overlap the scored split: 4 images.*--calibration-data"):
        run_variants(tiny_checkpoints["segmentation"], shapes_cfg, val, val, tmp_path)
    table = run_variants(
        tiny_checkpoints["segmentation"],
        shapes_cfg,
        val,
        train,
        tmp_path,
        ("eager", "onnx", "int8", "openvino_int8"),
        calibration_images=8,
        rounds=1,
        iters=2,
        log=lambda *a: None,
    )
    calib = set(table["calibration"]["images"])
    assert len(calib) == 8 and not calib & {s.image_id for s in val.samples}
    assert calib <= {s.image_id for s in train.samples}
    rows = {r["variant"]: r for r in table["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["onnx"]["agreement"] > 0.999 and abs(rows["onnx"]["delta"]) < 1e-3
    assert rows["int8"]["size_mb"] < rows["onnx"]["size_mb"] / 2
    # each runtime's own int8 quantization of the one float32 export
    assert Path(rows["openvino_int8"]["file"]).name == "model.openvino_int8.onnx"
    assert Path(rows["int8"]["file"]).name == "model.int8.onnx"
    assert abs(rows["openvino_int8"]["metric"] - rows["int8"]["metric"]) < 0.01
    chosen = write_table(tmp_path, table, budget=1.0)  # any metric: the fastest wins
    assert chosen["variant"] == min(rows.values(), key=lambda r: r["p50_ms"])["variant"]
    for ext in ("json", "md", "html"):
        assert (tmp_path / f"variants.{ext}").is_file()
    assert "training images. Served" in (tmp_path / "variants.md").read_text()
    table["calibration"]["dataset"] = "raccoon"  # vision optimize --calibration-data raccoon
    write_table(tmp_path, table, budget=1.0)
    assert "8 training images of raccoon. Served" in (tmp_path / "variants.md").read_text()
    page = (tmp_path / "variants.html").read_text()
    assert "accuracy–latency of the variants" in page and "data:image/png;base64," in page
    assert "✓ ok" in page and f"{chosen['variant']} (served)" in page  # words, not emoji
