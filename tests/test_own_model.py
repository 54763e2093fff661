"""A model of one's own, registered by name from this file, goes through everything the
project does with a model — train, evaluate, ONNX and int8 variants, prune and fine-tune,
distil — with no change to the library: what the project needs of a model, it asks the model
(``prediction_layers``, ``export_module``, ``export_decoder``, ``backbone_modules``,
``kd_taps``...), which it has by deriving from ``Segmenter`` or ``Detector``."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from vision.models import register_model, unregister_model
from vision.models.common import ModelMeta, Segmenter, default_names
from vision.models.detection import Detector

from .conftest import run_cli


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())  # fmt: skip


class ToySegmenter(Segmenter):
    """Two strided blocks, a 1x1 score layer, bilinear upsampling back to the input."""

    def __init__(self, num_classes, class_names=None, input_size=64, background=True,
                 colors=None, **_):  # fmt: skip
        super().__init__()
        names = list(class_names or default_names(num_classes))
        self.meta = ModelMeta("toy_seg", "segmentation", names, input_size, (0.5,) * 3,
                              (0.25,) * 3, background=background, colors=colors or [])  # fmt: skip
        self.backbone = nn.Sequential(_block(3, 16, 2), _block(16, 32, 2))
        self.score = nn.Conv2d(32, len(names) + int(background), 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        y = self.score(self.backbone(self.normalize(x)))
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


class ToyFeatures(nn.Module):
    """Two feature levels (strides 8 and 16) of 32 channels, as an FPN would give."""

    out_channels = 32

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_block(3, 16, 2), _block(16, 32, 2), _block(32, 32, 2))
        self.down = _block(32, 32, 2)

    def forward(self, x):
        p3 = self.stem(x)
        return OrderedDict([("p3", p3), ("p4", self.down(p3))])


def toy_detector(num_classes, class_names=None, input_size=64, **_):
    anchors = AnchorGenerator(((16,), (32,)), ((1.0,),) * 2)
    net = FCOS(ToyFeatures(), num_classes, min_size=input_size, max_size=input_size,
               image_mean=[0.5] * 3, image_std=[0.25] * 3, anchor_generator=anchors,
               score_thresh=0.05, detections_per_img=50)  # fmt: skip
    names = list(class_names or default_names(num_classes))
    return Detector(net, 0, ModelMeta("toy_det", "detection", names, input_size))


@pytest.fixture
def registered():
    register_model("toy_seg", "segmentation", ToySegmenter)
    register_model("toy_det", "detection", toy_detector)
    yield
    unregister_model("toy_seg")
    unregister_model("toy_det")


@pytest.mark.parametrize(("command", "model"), [("segment", "toy_seg"), ("detect", "toy_det")])
def test_a_registered_model_goes_through_everything(registered, shapes_yaml, tmp_path, command,
                                                     model):  # fmt: skip
    tiny = ["--data", shapes_yaml, "--img-size", "64", "--batch", "4", "--workers", "0",
            "--limit-train", "8", "--limit-val", "4", "--warmup-iters", "0", "--threads", "2",
            "--lr", "0.002"]  # fmt: skip
    run = tmp_path / "run"
    r = run_cli(["train", command, "--model", model, "--epochs", "1", "--out", run, *tiny])
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = run / "best.pt"
    r = run_cli(["eval", "run", "--checkpoint", ckpt, "--data", shapes_yaml, "--limit", "4",
                 "--out", tmp_path / "eval"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli(["optimize", "--checkpoint", ckpt, "--data", shapes_yaml, "--variants", "eager",
                 "onnx", "int8", "--limit", "4", "--calibration", "8", "--rounds", "1",
                 "--iters", "1", "--out", tmp_path / "variants"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "variants" / "variants.json").read_text())["rows"]
    assert {row["variant"]: row["status"] for row in rows} == {"eager": "ok", "onnx": "ok",
                                                               "int8": "ok"}  # fmt: skip
    onnx = next(row for row in rows if row["variant"] == "onnx")
    assert abs(onnx["delta"]) < 1e-3  # through the export boundary and decoder it named
    r = run_cli(["compress", "prune", "--checkpoint", ckpt, "--data", shapes_yaml, "--ratio",
                 "0.3", "--finetune-epochs", "1", "--round-to", "1",
                 "--out", tmp_path / "prune"])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (report,) = json.loads((tmp_path / "prune" / "prune.json").read_text())
    assert report["flops_cut"] > 0.1 and report["params_after"] < report["params_before"]
    pruned = torch.load(report["finetuned"], weights_only=True)
    head = (
        "score.weight" if model == "toy_seg" else "net.head.classification_head.cls_logits.weight"
    )
    assert (
        pruned["model"][head].shape[0]
        == torch.load(ckpt, weights_only=True)["model"][head].shape[0]
    )
    r = run_cli(["train", command, "--model", model, "--epochs", "1", "--out", tmp_path / "kd",
                 "--teacher", ckpt, "--kd-weight", "1", *tiny])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distilling from" in r.stdout
