"""The FPS protocol's bookkeeping on a clock the test drives, its environment record and its
text table, in process."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from eval import fps

# ---- eval.fps -------------------------------------------------------------------------------


def test_summary_and_synthetic_jpegs():
    s = fps._summary([1.0, 2.0, 3.0, 10.0])
    assert s == {"mean": 4.0, "p50": 2.5, "p95": pytest.approx(8.95)}
    imgs = fps.synthetic_jpegs(3, 24, seed=1)
    assert len(imgs) == 3 and len(set(imgs)) == 3 and imgs == fps.synthetic_jpegs(3, 24, seed=1)
    assert imgs != fps.synthetic_jpegs(3, 24, seed=2) and fps.synthetic_jpegs(
        1, 8
    ) == fps.synthetic_jpegs(1, 8, 0)
    im = Image.open(io.BytesIO(imgs[0]))
    assert im.format == "JPEG" and im.size == (24, 24)
    rng = np.random.default_rng(1)
    many = fps.synthetic_jpegs(20, 24, seed=1)
    for got in many:  # twenty: some pixel of the noise is 0
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((24, 24), Image.BICUBIC).save(buf, "JPEG", quality=90)
        assert got == buf.getvalue()


class _Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class _Timed:
    """A predictor whose stages take known times on the test's clock: decode 1 ms an image,
    preprocess 2 ms, inference 3 ms, postprocess 4 ms (+ 10 ms on its first call)."""

    def __init__(self, clock):
        import torch

        from vision.models.common import ModelMeta

        self.clock, self.device, self.task, self.size, self.half = (
            clock,
            torch.device("cpu"),
            "detection",
            32,
            True,
        )
        self.meta = ModelMeta("m", "detection", ["a"], 32)
        self.decoded, self.posts = [], 0

    def decode(self, x):
        self.clock.now += 0.001
        self.decoded.append(x)
        return x

    def preprocess(self, decoded):
        self.clock.now += 0.002
        return ("x", len(decoded)), {"info": len(decoded)}

    def infer(self, x):
        assert x[0] == "x"
        self.clock.now += 0.003
        return ("raw", x[1])

    def postprocess(self, raw, info):
        assert raw[0] == "raw" and info == {"info": raw[1]}
        self.clock.now += 0.004 + (0.010 if self.posts == 0 else 0.0)
        self.posts += 1


def test_measure_times_each_stage_after_the_warm_up(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(fps, "time", clock)
    p = _Timed(clock)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB
    r = fps.measure(p, [b"a", b"b", b"c"], batch_sizes=(1, 2), warmup=1, iters=3)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a, b, c = b"a", b"b", b"c"  # cycled; each batch size starts over
    assert p.decoded == [a, b, c, a] + [a, b, c, a, b, c, a, b]
    assert {k: r[k] for k in ("model", "task", "input_size", "warmup", "iters")} == {
        "model": "m",
        "task": "detection",
        "input_size": 32,
        "warmup": 1,
        "iters": 3,
    }
    assert r["environment"] == fps.environment(p) and r["environment"]["dtype"] == "float16"
    one, two = r["runs"]
    assert one["batch"] == 1 and two["batch"] == 2
    for run, b in ((one, 1), (two, 2)):
        st = run["stages_ms"]
        assert list(st) == list(fps.STAGES)
        assert st["decode"]["mean"] == pytest.approx(b) and st["preprocess"][
            "p50"
        ] == pytest.approx(2)
        assert st["inference"]["p95"] == pytest.approx(3) and st["postprocess"][
            "mean"
        ] == pytest.approx(4)
        assert run["total_ms"]["mean"] == pytest.approx(9 + b)  # the first call was warm-up
        assert run["images_per_s"] == pytest.approx(b * 1000 / (9 + b))
        assert before <= run["peak_memory_mb"] <= after  # the process's peak RSS, in MiB
    r = fps.measure(_Timed(clock), [b"a"], batch_sizes=(1,), warmup=0, iters=2)
    assert r["runs"][0]["stages_ms"]["postprocess"]["mean"] == pytest.approx(9)
    assert r["runs"][0]["stages_ms"]["postprocess"]["p95"] == pytest.approx(13.5)


def test_measure_defaults(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(fps, "time", clock)
    p = _Timed(clock)
    r = fps.measure(p, [b"a"])
    assert [run["batch"] for run in r["runs"]] == [1, 8] and (r["warmup"], r["iters"]) == (5, 30)
    assert len(p.decoded) == 35 * 1 + 35 * 8  # 5 warm-up and 30 timed batches of each size


def test_environment_and_format():
    import platform

    import torch
    import torchvision

    env = fps.environment()
    assert env == {
        "device": platform.processor() or platform.machine(),
        "device_type": "cpu",
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "memory_note": "process peak RSS",
    }

    class Half:
        device, half = torch.device("cpu"), True

    assert fps.environment(Half())["dtype"] == "float16"

    class Meta:
        device, half = torch.device("meta"), False

    assert fps.environment(Meta())["device_type"] == "meta"  # the predictor's device
    cell = {"mean": 1.25, "p50": 2.0, "p95": 30.06}
    run = {
        "batch": 8,
        "stages_ms": {s: cell for s in fps.STAGES},
        "total_ms": cell,
        "images_per_s": 123.45,
    }
    r = {
        "model": "m",
        "task": "detection",
        "input_size": 32,
        "warmup": 5,
        "iters": 30,
        "environment": {"device_type": "cpu", "threads": 2, "dtype": "float32"},
        "runs": [run],
    }
    lines = fps.format_fps(r).split("\n")
    assert lines[0] == (
        "FPS protocol: m (detection), 32 px, warm-up 5, 30 timed iterations, cpu 2 threads float32"
    )
    assert (
        lines[1]
        == f"{'batch':>5}" + "".join(f"{s:>22}" for s in (*fps.STAGES, "total")) + f"{'img/s':>9}"
    )
    assert (
        lines[2]
        == " " * 5 + " " * 3 + "mean / p50 / p95 ms" + (" " * 3 + "mean / p50 / p95 ms") * 4
    )
    assert lines[3] == "    8" + "     1.2    2.0   30.1" * 5 + "    123.5"
    assert len(lines) == 4
