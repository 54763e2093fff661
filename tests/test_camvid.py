"""CamVid and datasets without a background class: reader, config, health, training, scoring,
rendering. Data: the real CamVid set shipped in ../shared, linked where ``camvid.yaml`` looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vision.config import load_config, parse_config
from vision.data.build import build_dataset
from vision.data.pairs import read_pairs
from vision.data.sample import mask_classes
from vision.errors import DataError

NAMES = ["sky", "building", "pole", "road", "pavement", "tree"]
NAMES += ["sign_symbol", "fence", "car", "pedestrian", "bicyclist"]


@pytest.fixture
def camvid_root(real, tmp_path, monkeypatch):
    """$VISION_DATASETS with camvid linked in, as datasets/README.md tells users to."""
    (tmp_path / "camvid").symlink_to(real / "seg_camvid")
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    return tmp_path / "camvid"


def test_camvid_reader_counts_classes_and_void(camvid_root):
    cfg = load_config("camvid")
    assert cfg.names == NAMES and not cfg.background and cfg.void == 11
    assert mask_classes(cfg.names, cfg.background) == NAMES  # no background index added
    train = build_dataset(cfg, "segmentation", "train")
    val = build_dataset(cfg, "segmentation", "val")
    assert (len(train), len(val)) == (367, 101)
    assert not train.background
    seen = set()
    for i in (0, 50, 200):
        s = train[i]
        raw = np.asarray(Image.open(train.samples[i].mask_path))
        assert s.image.shape == (360, 480, 3) and s.mask.shape == (360, 480)
        assert (s.mask[raw == 11] == 255).all()  # void → ignore
        assert (s.mask[raw != 11] == raw[raw != 11]).all()  # classes keep their index
        seen |= set(np.unique(s.mask).tolist())
    assert seen <= set(range(11)) | {255} and {0, 1, 3} <= seen  # sky, building, road


def test_health_report_counts_pixels_per_class(camvid_root):
    from vision.data.health import check_dataset, format_report

    rep = check_dataset("camvid")
    assert rep["ok"], rep["errors"]
    px = rep["splits"]["segmentation/val"]["pixels_per_class"]
    assert list(px) == [*NAMES, "void"]
    assert sum(px.values()) == 101 * 480 * 360
    assert px["road"] > px["pole"] > 0 and px["void"] > 0
    assert "background" not in format_report(rep)


def test_a_label_value_past_the_classes_is_reported(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.full((6, 8), 12, np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "list.txt").write_text("/SegNet/CamVid/img/a.jpg /SegNet/CamVid/img/a.png\n")
    raw = {"name": "t", "format": "pairs", "root": str(tmp_path), "names": NAMES}
    raw |= {"background": False, "void": 11, "segmentation": {"train": "list.txt"}}
    from vision.data.health import check_dataset

    rep = check_dataset(parse_config(raw))  # upstream's absolute prefix read relative to root
    assert rep["splits"]["segmentation/train"]["images"] == 1
    assert any("expected values 0..10 or 255, got [12]" in e for e in rep["errors"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"background": "no"}, "background: expected true or false"),
        ({"void": 300}, "void: expected a label value 0..255"),
        ({"colors": [[0, 0, 0]]}, "colors: expected 11 [R, G, B] triples"),
        ({"colors": [[0, 0, 256]] * 11}, "colors: expected 11 [R, G, B] triples"),
        ({"detection": {"train": "x"}}, "expected no detection section"),
        ({"format": "voc"}, "background/void: expected the format's own convention"),
    ],
)
def test_config_errors_name_the_field(change, message):
    raw = {"name": "t", "format": "pairs", "root": "/x", "names": NAMES, "background": False}
    raw |= {"void": 11, "segmentation": {"train": "a.txt"}}
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config({**raw, **change})


def test_a_malformed_pairs_line_names_the_line(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg a.png\nonly-one\n")
    with pytest.raises(DataError, match=r"l.txt:2: expected two paths"):
        read_pairs(tmp_path, "l.txt")


@pytest.mark.trains
def test_training_scoring_and_rendering_without_background(camvid_root, tmp_path):
    """One training step on two CamVid images; the checkpoint, the evaluator, the rendered
    answer and the drawings all index the 11 classes directly."""
    from eval.draw import sample_images
    from eval.metrics import build_evaluator, score
    from vision.engine.train import TrainConfig, train
    from vision.predictor import Predictor

    out = tmp_path / "run"
    cfg = TrainConfig(
        task="segmentation",
        data="camvid",
        model="fcn8s_lite0",  # ImageNet backbone + a new 11-class head
        out=str(out),
        epochs=1,
        img_size=96,
        batch=2,
        limit_train=2,
        limit_val=2,
        workers=0,
    )
    summary = train(cfg, build_evaluator, log=lambda *a: None)
    assert 0 <= summary["seg/mIoU"] <= 1
    pred = Predictor.from_checkpoint(out / "last.pt")
    assert not pred.meta.background and pred.meta.class_names == NAMES
    assert pred.meta.colors[3] == [128, 64, 128]  # road, the dataset's colour
    reader = build_dataset("camvid", "segmentation", "val").limit(2)
    raw = pred.model(torch.rand(1, 3, 96, 96))
    assert raw.shape[1] == 11  # a logit per class, none for a background
    metrics, kept = score(pred, reader, NAMES, keep=2)
    assert list(metrics["seg"]["per_class_iou"]) == NAMES
    answer = pred.render(kept[0])
    assert answer["classes"] == NAMES and answer["colors"]["road"] == [128, 64, 128]
    assert sum(answer["pixel_counts"].values()) == 480 * 360
    # a class map of one class, drawn on black: that class's colour at alpha 0.55
    black = type("R", (), {"__len__": lambda s: 1, "__getitem__": lambda s, i: _black()})()
    drawn = sample_images(
        black,
        [{"mask": np.full((4, 4), 3, np.uint8)}],
        NAMES,
        "segmentation",
        background=False,
        colors=pred.meta.colors,
    )[0]
    assert drawn[0, 0].tolist() == [round(0.55 * c) for c in (128, 64, 128)]


def _black():
    from vision.data.sample import Sample

    return Sample(image_id=0, path=None, width=4, height=4, image=np.zeros((4, 4, 3), np.uint8))


def test_a_background_model_is_refused_on_labels_without_background(camvid_root):
    from eval.metrics import score
    from vision.models.registry import build_model
    from vision.predictor import Predictor

    names = ["circle", "square", "triangle", "star"]  # the shapes set's: index 0 = background
    pred = Predictor(build_model("fcn8s_slim", 4, class_names=names, input_size=96))
    assert pred.meta.background
    reader = build_dataset("camvid", "segmentation", "val").limit(1)
    with pytest.raises(ValueError, match="expected class maps laid out as the dataset's"):
        score(pred, reader, NAMES)
