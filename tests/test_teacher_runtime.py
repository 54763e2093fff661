"""A distillation teacher run by ONNX Runtime (``--kd-teacher-runtime``,
``vision.engine.teacher_runtime``): the exported teacher gives the eager teacher's logits (float32)
or close ones (int8), training uses it in every step in place of the torch module, and a teacher
whose loss it cannot serve (a detector) is refused with what to use instead."""

from __future__ import annotations

import pytest
import torch

from eval.metrics import build_evaluator as make_evaluator
from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.transforms import SegmentationTransform
from vision.deploy import OrtBackend
from vision.engine.distill import Distiller
from vision.engine.teacher_runtime import ort_teacher
from vision.engine.train import TrainConfig, train
from vision.models import build_model
from vision.predictor import Predictor


@pytest.fixture(scope="module")
def images(shapes_yaml) -> torch.Tensor:
    reader = build_dataset(load_config(str(shapes_yaml)), "segmentation", "train")
    tf = SegmentationTransform(96, train=True)  # jittered views, as training feeds them
    return torch.stack([tf(reader[i])[0] for i in range(4)])


def test_onnx_teacher_gives_the_eager_teachers_logits_and_int8_close_ones(
    tiny_checkpoints, images, tmp_path
):
    teacher = Predictor.from_checkpoint(tiny_checkpoints["segmentation"], "cpu").model.eval()
    student = build_model("fcn8s_slim", len(teacher.meta.class_names), input_size=96)
    d = Distiller(student, teacher, mode="channel", temperature=4.0)
    eager = d.teacher_outputs(images)[0]
    logs: list[str] = []
    d.runtime = ort_teacher(teacher, "onnx", tmp_path, log=logs.append)
    fp32 = d.teacher_outputs(images)[0]
    torch.testing.assert_close(fp32, eager, atol=1e-4, rtol=1e-4)
    assert logs == [f"[train] teacher runs in ONNX Runtime (onnx): {tmp_path / 'teacher.onnx'}"]
    calib = [images[:2].numpy(), images[2:].numpy()]
    d.runtime = ort_teacher(teacher, "int8", tmp_path, lambda: calib, log=logs.append)
    assert (tmp_path / "teacher.int8.onnx").is_file()
    int8 = d.teacher_outputs(images)[0]
    assert not torch.equal(int8, fp32)  # the quantized graph ran
    agree = (int8.argmax(1) == eager.argmax(1)).float().mean().item()
    assert agree > 0.9, agree
    with torch.no_grad():
        out = student.eval()(images)
        d.runtime = None
        loss = d(images, None, out).item()
    d.runtime = ort_teacher(teacher, "onnx", tmp_path / "again", log=logs.append)
    with torch.no_grad():
        assert d(images, None, out).item() == pytest.approx(loss, rel=1e-4)


def test_teachers_the_runtime_cannot_serve_are_refused(tiny_checkpoints, tmp_path):
    det = Predictor.from_checkpoint(tiny_checkpoints["detection"], "cpu").model
    with pytest.raises(ValueError) as e:
        ort_teacher(det, "onnx", tmp_path)
    assert str(e.value) == (
        "--kd-teacher-runtime onnx: expected a segmentation teacher (a detector's KD reads FPN "
        "features its ONNX graph does not return), got a detection one; use --kd-cache for "
        "detectors"
    )
    seg = Predictor.from_checkpoint(tiny_checkpoints["segmentation"], "cpu").model
    with pytest.raises(ValueError, match=r"expected one of \('torch', 'onnx', 'int8'\), got 'tvm'"):
        ort_teacher(seg, "tvm", tmp_path)
    assert not list(tmp_path.iterdir())  # refused before exporting anything


@pytest.mark.parametrize("runtime", ["onnx", "int8"])
def test_training_runs_the_teacher_in_onnx_runtime_every_step(
    runtime, tiny_checkpoints, shapes_yaml, tmp_path, monkeypatch
):
    calls: list[tuple] = []
    run = OrtBackend.__call__

    def spy(self, x):
        calls.append((self.path.name, tuple(x.shape)))
        return run(self, x)

    monkeypatch.setattr(OrtBackend, "__call__", spy)
    # img_size 64: the teacher was built for 96 px, so its graph is exported for 64
    cfg = TrainConfig(task="segmentation", data=str(shapes_yaml), model="fcn8s_slim", epochs=1,
                      img_size=64, batch=4, workers=1, limit_train=8, limit_val=4,
                      warmup_iters=0, threads=2, max_iters=2, out=str(tmp_path / "run"),
                      teacher=str(tiny_checkpoints["segmentation"]), kd_mode="channel",
                      kd_teacher_runtime=runtime)  # fmt: skip
    logs: list[str] = []
    summary = train(cfg, make_evaluator, log=logs.append)
    name = "teacher.onnx" if runtime == "onnx" else "teacher.int8.onnx"
    assert calls == [(name, (4, 3, 64, 64))] * 2 and summary["epoch"] == 1
    assert (tmp_path / "run/teacher" / name).is_file()
    assert any(f"teacher runs in ONNX Runtime ({runtime})" in m for m in logs)
