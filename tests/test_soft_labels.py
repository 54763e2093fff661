"""Cached teacher outputs for distillation (``--kd-cache``, ``vision.engine.soft_labels``): the
cache holds the teacher's answer for each image and its mirror image, each training view gets
those of its own orientation, the distillation loss uses them in place of a teacher pass, and
training runs with them, for segmenters and detectors."""

from __future__ import annotations

import pytest
import torch

from eval.metrics import build_evaluator as make_evaluator
from vision.config import load_config
from vision.data.build import build_dataset
from vision.data.transforms import (
    DetectionTransform,
    SegmentationTransform,
    TransformedDataset,
    collate_detection,
    collate_segmentation,
)
from vision.engine.distill import Distiller
from vision.engine.soft_labels import (
    CachedTeacherDataset,
    cached_teacher_dataset,
    collate_cached,
    teacher_outputs,
    view_batches,
)
from vision.engine.train import TrainConfig, train
from vision.models import build_model

TASKS = {  # task: (student, transform, training size of the tiny teacher)
    "segmentation": ("fcn8s_slim", SegmentationTransform, 96),
    "detection": ("fcos_slim", DetectionTransform, 96),
}
TEACHERS = {"segmentation": "fcn8s_slim", "detection": "fcos_r18"}  # the tiny checkpoints' kinds


@pytest.fixture(scope="module", params=list(TASKS))
def setup(request, shapes_yaml):
    task = request.param
    name, tf, size = TASKS[task]
    torch.manual_seed(0)  # an untrained teacher: any fixed weights do
    teacher = build_model(TEACHERS[task], 4, input_size=size).eval()
    reader = build_dataset(load_config(str(shapes_yaml)), task, "train")
    reader.limit(6)
    student = build_model(name, len(teacher.meta.class_names), input_size=size)
    d = Distiller(student, teacher, weight=2.0, temperature=3.0, mode="channel")
    cache = teacher_outputs(d, reader, tf(size), torch.device("cpu"), batch=4)
    d.student = [student]  # for the tests below (a list: not a submodule)
    return task, d, reader, cache


def _eval_images(setup) -> torch.Tensor:
    task, _, reader, _ = setup
    _, tf, size = TASKS[task]
    return torch.stack([tf(size)(reader[i])[0] for i in range(len(reader))])


def test_cache_holds_the_teachers_outputs_for_each_image_and_its_mirror(setup):
    task, d, _, cache = setup
    x = _eval_images(setup)
    plain, mirror = d.teacher_outputs(x), d.teacher_outputs(x.flip(-1))
    assert len(cache) == len(plain) == (1 if task == "segmentation" else 6)  # 5 FPN levels
    tol = {"atol": 2e-2, "rtol": 2e-3}  # float16 storage
    for c, p, m in zip(cache, plain, mirror, strict=True):
        assert c.shape == (6, 2, *p.shape[1:]) and c.dtype == torch.float16
        torch.testing.assert_close(c[:, 0].float(), p, **tol)
        torch.testing.assert_close(c[:, 1].float(), m, **tol)
    assert not torch.allclose(cache[0][:, 0].float(), cache[0][:, 1].float(), **tol)


def _side(task, target, plain, size) -> int:
    """0 when a training view's target is the evaluation view's, 1 when it is its mirror."""
    if task == "segmentation":
        assert not torch.equal(plain, plain.flip(-1))  # the check can tell
        if torch.equal(target, plain):
            return 0
        assert torch.equal(target, plain.flip(-1))
        return 1
    boxes, want = target["boxes"], plain["boxes"]
    mirrored = torch.stack([size - want[:, 2], want[:, 1], size - want[:, 0], want[:, 3]], 1)
    assert not torch.allclose(want, mirrored, atol=0.01)
    if torch.allclose(boxes, want, atol=0.01):
        return 0
    torch.testing.assert_close(boxes, mirrored, atol=0.01, rtol=0)
    return 1


def test_each_training_view_gets_the_outputs_of_its_orientation(setup):
    task, _, reader, cache = setup
    _, tf, size = TASKS[task]
    ds = CachedTeacherDataset(reader, tf(size, train=True), cache, seed=3)
    plain = [tf(size)(reader[i])[1] for i in range(6)]
    seen = set()
    for epoch in range(4):
        ds.epoch = epoch
        for i in range(6):
            image, target, outs = ds[i]
            side = _side(task, target, plain[i], size)
            assert all(torch.equal(o, c[i, side]) for o, c in zip(outs, cache, strict=True))
            assert image.shape == (3, size, size)
            seen.add(side)
    assert seen == {0, 1}
    collate = collate_segmentation if task == "segmentation" else collate_detection
    images, targets, outs = collate_cached(collate)([ds[0], ds[1], ds[2]])
    assert images.shape[0] == len(targets) == 3
    assert [o.shape for o in outs] == [(3, *c.shape[2:]) for c in cache]
    with pytest.raises(ValueError, match=r"expected teacher outputs for each of 6 images, got"):
        CachedTeacherDataset(reader, tf(size, train=True), [c[:5] for c in cache])


def test_distiller_uses_cached_outputs_instead_of_the_teacher(setup):
    task, d, _, _ = setup
    x, s = _eval_images(setup)[:2], d.student[0]

    def loss(cached):
        if task == "segmentation":
            return d(x, None, s.eval()(x), cached)  # eval: no dropout, the same logits
        s.train()
        tg = [{"boxes": torch.tensor([[5.0, 5, 30, 30]]), "labels": torch.tensor([1])}] * 2
        s(x, tg)  # the distiller reads the student's features through hooks
        return d(x, None, None, cached)

    live = d.teacher_outputs(x)
    torch.testing.assert_close(loss(None), loss(live))
    g = torch.Generator().manual_seed(1)  # (noise that happened to cancel out would pass)
    other = [t + 3 * torch.randn(t.shape, generator=g) for t in live]
    assert (loss(other) - loss(live)).abs() > 0.05


@pytest.mark.trains
@pytest.mark.parametrize("task", list(TASKS))
def test_training_with_kd_cache_runs_on_the_cached_outputs(
    task, tiny_checkpoints, shapes_yaml, tmp_path, monkeypatch
):
    calls: list[bool] = []
    shapes: list[tuple] = []
    scales: list[float] = []
    forward = Distiller.forward

    def spy(self, images, targets=None, outputs=None, cached=None):
        calls.append(cached is not None)
        shapes.append(tuple(cached[-1].shape[2:]))
        scales.append(self.scale)
        return forward(self, images, targets, outputs, cached)

    monkeypatch.setattr(Distiller, "forward", spy)
    base = dict(data=str(shapes_yaml), model=TASKS[task][0], epochs=2, img_size=96, batch=4,
                workers=1, limit_train=8, limit_val=4, warmup_iters=0, threads=2, max_iters=2,
                teacher=str(tiny_checkpoints[task]), kd_mode="channel", kd_decay="cosine",
                val_every=2)  # fmt: skip
    logs: list[str] = []
    seg = task == "segmentation"  # a segmenter's cache holds pooled logits; a detector's boxes
    kd = dict(kd_stride=2) if seg else dict(kd_box_weight=0.1, kd_logit_loss="focal")
    cfg = TrainConfig(task=task, out=str(tmp_path / "run"), kd_cache=True, **kd, **base)
    summary = train(cfg, make_evaluator, log=logs.append)
    assert any("--kd-cache: teacher outputs of 8 training images" in m for m in logs)
    assert calls == [True] * 4 and summary["epoch"] == 2
    assert scales == [1.0, 1.0, pytest.approx(0.5), pytest.approx(0.5)]  # cos(pi/2) in epoch 2
    if task == "segmentation":
        assert shapes == [(48, 48)] * 4  # (batch, classes) at 96 px / 2
        assert any(m.endswith("(fcn8s_slim, channel KD, stride 2, cosine decay)") for m in logs)
    else:  # the last cached output: the teacher's centerness, (batch, positions, 1)
        assert [s[-1] for s in shapes] == [1] * 4
        want = "focal logit KD, box imitation x0.1, cosine decay)"
        assert any(m.endswith(want) for m in logs)
    wrong = TrainConfig(task=task, out=str(tmp_path / "wrong"), **{**base, "kd_decay": "step"})
    with pytest.raises(ValueError, match=r"KD decay: expected one of .*got 'step'"):
        train(wrong, make_evaluator, log=logs.append)
    assert not (tmp_path / "wrong" / "args.json").exists()  # refused before any work
    bad = TrainConfig(task=task, out=str(tmp_path / "bad"), kd_cache=True,
                      **{**base, "teacher": None})  # fmt: skip
    with pytest.raises(ValueError, match="--kd-cache: expected --teacher CKPT"):
        train(bad, make_evaluator, log=logs.append)


def test_view_batches_cover_the_first_n_items_in_order():
    reader = [torch.full((1,), float(i)) for i in range(10)]
    tf = lambda item: (item * 2, None)  # noqa: E731 - a transform returns (image, target)
    got = [(list(idx), x.flatten().tolist()) for idx, x in view_batches(reader, tf, 5, batch=2)]
    assert got == [([0, 1], [0, 2]), ([2, 3], [4, 6]), ([4], [8])]
    assert [list(idx) for idx, _ in view_batches(reader, tf, 50, batch=4)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert [len(idx) for idx, _ in view_batches(reader, tf)] == [8, 2]  # all, 8 at a time


def test_cached_items_collate_through_the_tasks_collate():
    def pairs_only(items):
        assert all(len(it) == 2 for it in items), "the task's collate sees (image, target)"
        return torch.stack([it[0] for it in items]), [it[1] for it in items]

    item = lambda k, n: (torch.zeros(3), k, [torch.full((2,), k)] * n)  # noqa: E731
    images, targets, outs = collate_cached(pairs_only)([item(1.0, 2), item(2.0, 2)])
    assert images.shape == (2, 3) and targets == [1.0, 2.0]
    assert [o.tolist() for o in outs] == [[[1, 1], [2, 2]]] * 2
    with pytest.raises(ValueError, match=r"zip\(\) argument 2 is shorter"):  # unequal outputs
        collate_cached(pairs_only)([item(1.0, 2), item(2.0, 1)])


def test_cached_dataset_keeps_the_augmentation_seed(setup):
    task, _, reader, cache = setup
    _, tf, size = TASKS[task]
    assert CachedTeacherDataset(reader, tf(size, train=True), cache, seed=7).seed == 7


def test_cached_teacher_dataset_wraps_a_training_set(setup):
    task, d, reader, cache = setup
    _, tf, size = TASKS[task]
    logs: list[str] = []
    train_set = TransformedDataset(reader, tf(size, train=True), seed=5)
    cpu = torch.device("cpu")
    ds = cached_teacher_dataset(train_set, d, cpu, log=logs.append)
    assert (
        isinstance(ds, CachedTeacherDataset)
        and ds.seed == 5
        and ds.transform is train_set.transform
    )
    assert len(ds.cache) == len(cache)
    for got, want in zip(ds.cache, cache, strict=True):  # the evaluation view, batch size aside
        torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)
    head = "[train] --kd-cache: teacher outputs of 6 training images and their mirror images in "
    assert len(logs) == 1 and logs[0].startswith(head)
    seconds, rest = logs[0][len(head) :].split(" s (")
    mib = sum(c.nbytes for c in cache) / 2**20
    assert 0 <= float(seconds) < 60 and rest == f"{mib:.1f} MiB float16)" and mib > 0.05
    bf16 = cached_teacher_dataset(train_set, d, cpu, torch.bfloat16, log=logs.append).cache
    want = teacher_outputs(d, reader, tf(size), cpu, torch.bfloat16)  # the amp it was given
    assert all(torch.equal(a, b) for a, b in zip(bf16, want, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(bf16, ds.cache, strict=True))


@pytest.mark.parametrize(
    "nbytes, text",
    [(0, "0.0 MiB"), (3 * 2**19, "1.5 MiB"), (2**30 - 2**20, "1023.0 MiB"), (2**30, "1.00 GiB"),
     (3 * 2**29, "1.50 GiB"), (100 * 2**30, "100.00 GiB")],
)  # fmt: skip
def test_cache_sizes_read_in_mib_below_one_gib_and_in_gib_from_it(nbytes, text):
    from vision.engine.soft_labels import memory_text

    assert memory_text(nbytes) == text
