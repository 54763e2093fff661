"""Cached teacher logits for segmentation distillation (``--kd-cache``,
``vision.engine.soft_labels``): the cache holds the teacher's answer for each image and its
mirror image, each training view gets the logits of its own orientation, the distillation loss
uses them in place of a teacher pass, and training runs with them."""

from __future__ import annotations

import pytest
import torch

from eval.metrics import build_evaluator as make_evaluator
from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.transforms import SegmentationTransform
from vision.engine.distill import Distiller, channel_kd
from vision.engine.soft_labels import CachedTeacherDataset, teacher_logits
from vision.engine.train import TrainConfig, train
from vision.predictor import Predictor

SIZE = 96  # the tiny segmenter's training size


@pytest.fixture(scope="module")
def setup(tiny_checkpoints, shapes_yaml):
    teacher = Predictor.from_checkpoint(tiny_checkpoints["segmentation"], "cpu").model.eval()
    reader = build_dataset(load_config(str(shapes_yaml)), "segmentation", "train")
    reader.limit(6)
    return teacher, reader, teacher_logits(teacher, reader, SIZE, torch.device("cpu"), batch=4)


def test_cache_holds_the_teachers_logits_of_each_image_and_its_mirror(setup):
    teacher, reader, cache = setup
    tf = SegmentationTransform(SIZE)
    x = torch.stack([tf(reader[i])[0] for i in range(6)])
    with torch.no_grad():
        plain, mirror = teacher(x), teacher(x.flip(-1))
    k = plain.shape[1]  # the classes and background
    assert cache.shape == (6, 2, k, SIZE, SIZE) and cache.dtype == torch.float16
    tol = {"atol": 2e-2, "rtol": 2e-3}  # float16 storage
    torch.testing.assert_close(cache[:, 0].float(), plain, **tol)
    torch.testing.assert_close(cache[:, 1].float(), mirror, **tol)
    assert not torch.allclose(cache[:, 0].float(), cache[:, 1].float(), **tol)


def test_each_training_view_gets_the_logits_of_its_orientation(setup):
    _, reader, cache = setup
    ds = CachedTeacherDataset(reader, SegmentationTransform(SIZE, train=True), cache, seed=3)
    plain = [SegmentationTransform(SIZE)(reader[i])[1] for i in range(6)]
    seen = set()
    for epoch in range(4):
        ds.epoch = epoch
        for i in range(6):
            image, mask, logits = ds[i]
            assert not torch.equal(plain[i], plain[i].flip(-1))  # the check can tell
            side = 0 if torch.equal(mask, plain[i]) else 1
            if side:
                assert torch.equal(mask, plain[i].flip(-1))
            assert torch.equal(logits, cache[i, side]), (epoch, i, side)
            assert image.shape == (3, SIZE, SIZE)
            seen.add(side)
    assert seen == {0, 1}
    with pytest.raises(ValueError, match="expected logits for each of 6 images, got 5"):
        CachedTeacherDataset(reader, SegmentationTransform(SIZE, train=True), cache[:5])


@pytest.mark.parametrize("mode", ["pixel", "channel"])
def test_distiller_uses_cached_logits_instead_of_the_teacher(setup, mode):
    teacher, _, _ = setup
    from vision.models import build_model

    student = build_model("fcn8s_slim", len(teacher.meta.class_names), input_size=SIZE)
    d = Distiller(student, teacher, weight=2.0, temperature=3.0, mode=mode)
    x = torch.rand(2, 3, SIZE, SIZE)
    out = student(x)
    cached = torch.randn(out.shape)
    with torch.no_grad():
        live = teacher(x)
    if mode == "channel":
        want, live_want = channel_kd(out, cached, 3.0), channel_kd(out, live, 3.0)
    else:
        from vision.engine.distill import pixel_kd

        want, live_want = pixel_kd(out, cached, 3.0), pixel_kd(out, live, 3.0)
    torch.testing.assert_close(d(x, None, out, cached), 2.0 * want)
    torch.testing.assert_close(d(x, None, out), 2.0 * live_want)


def test_training_with_kd_cache_runs_on_the_cached_logits(
    tiny_checkpoints, shapes_yaml, tmp_path, monkeypatch
):
    calls: list[bool] = []
    forward = Distiller.forward

    def spy(self, images, targets=None, outputs=None, cached=None):
        calls.append(cached is not None)
        return forward(self, images, targets, outputs, cached)

    monkeypatch.setattr(Distiller, "forward", spy)
    base = dict(data=str(shapes_yaml), model="fcn8s_slim", epochs=1, img_size=64, batch=4,
                workers=1, limit_train=8, limit_val=4, warmup_iters=0, threads=2, max_iters=2,
                teacher=str(tiny_checkpoints["segmentation"]), kd_mode="channel")  # fmt: skip
    logs: list[str] = []
    cfg = TrainConfig(task="segmentation", out=str(tmp_path / "run"), kd_cache=True, **base)
    summary = train(cfg, make_evaluator, log=logs.append)
    assert any("--kd-cache: teacher logits of 8 training images" in m for m in logs)
    assert calls == [True, True] and summary["epoch"] == 1
    for task, teacher in (("detection", base["teacher"]), ("segmentation", None)):
        bad = TrainConfig(task=task, out=str(tmp_path / "bad"), kd_cache=True,
                          **{**base, "teacher": teacher})  # fmt: skip
        with pytest.raises(ValueError, match="--kd-cache: expected a segmentation run with"):
            train(bad, make_evaluator, log=logs.append)
