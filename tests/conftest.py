"""Shared fixtures: paths to the real data and a small synthetic dataset made once per session."""

from __future__ import annotations

import io
import os
import shutil
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from vision.config import parse_config
from vision.data.shapes import ShapesSpec, generate

REPO = Path(__file__).resolve().parents[1]
# the real data ships beside the checkout; VISION_REAL_DATA points elsewhere (mutation testing
# runs the tests in a copy of the sources)
REAL = Path(os.environ.get("VISION_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
CLASSES = ["circle", "square", "triangle", "star"]


def run_cli(args: list[str]) -> SimpleNamespace:
    """``vision ARGS`` in this process (argument parsing, errors and exit code as the console
    script has them): ``returncode``, ``stdout``, ``stderr``. In-process so that coverage and
    mutation testing see the code it runs."""
    from vision_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in args])
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="session")
def real() -> Path:
    assert REAL.is_dir(), f"expected the real test data at {REAL}"
    return REAL


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate(out, ShapesSpec(train=48, val=16, seed=3), workers=1)
    return out


@pytest.fixture(scope="session")
def shapes_cfg(shapes_dir):
    raw = yaml.safe_load((REPO / "datasets" / "shapes.yaml").read_text())
    raw["root"] = str(shapes_dir / "VOC")
    return parse_config(raw, source=REPO / "datasets" / "shapes.yaml")


@pytest.fixture(scope="session")
def shapes_yaml(shapes_dir, tmp_path_factory) -> Path:
    raw = yaml.safe_load((REPO / "datasets" / "shapes.yaml").read_text())
    raw["root"] = str(shapes_dir / "VOC")
    p = tmp_path_factory.mktemp("cfg") / "shapes_small.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="session")
def photos(shapes_dir, tmp_path_factory):
    """Ten shapes images in two folders, plus a truncated JPEG, an empty PNG, a text file and
    a hidden file."""
    root = tmp_path_factory.mktemp("photos")
    jpegs = sorted((shapes_dir / "VOC" / "JPEGImages").glob("*.jpg"))[:10]
    for i, f in enumerate(jpegs):
        (root / ("a" if i < 6 else "b")).mkdir(exist_ok=True)
        shutil.copy(f, root / ("a" if i < 6 else "b") / f.name)
    (root / "a" / "truncated.jpg").write_bytes(jpegs[0].read_bytes()[:2000])
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image\n")
    (root / "a" / ".hidden.jpg").write_bytes(jpegs[1].read_bytes())
    return root


@pytest.fixture(scope="session")
def tiny_checkpoints(shapes_yaml, tmp_path_factory) -> dict[str, Path]:
    """A briefly trained detector and segmenter (real training, tiny budget)."""
    from eval.metrics import build_evaluator as make_evaluator
    from vision.engine.train import TrainConfig, train

    out = {}
    for task, model in (("detection", "fcos_r18"), ("segmentation", "fcn8s_slim")):
        d = tmp_path_factory.mktemp(f"ckpt_{model}")
        train(
            TrainConfig(
                task=task,
                data=str(shapes_yaml),
                model=model,
                out=str(d),
                epochs=3,
                img_size=96,
                batch=4,
                workers=0,
                limit_train=16,
                limit_val=4,
                warmup_iters=0,
                threads=2,
                lr=2e-3,
                backbone_lr_mult=0.5,  # not the default: recipes travel whole
            ),
            make_evaluator,
            log=lambda *a: None,
        )
        out[task] = d / "last.pt"
    return out


@contextmanager
def chromium_page():
    """A page of Debian's chromium, headless, driven by Playwright (its own browser download
    fails here); console errors and failed requests are collected in ``page.problems``."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is required (run.sh installs it)"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=args)
        try:
            page = browser.new_page()
            page.problems = []
            page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
            page.on("pageerror", lambda e: page.problems.append(str(e)))
            page.on("requestfailed", lambda r: page.problems.append(f"failed: {r.url}"))
            yield page
        finally:
            browser.close()


@contextmanager
def serving(home: Path, env: dict[str, str]):
    """A real `bentoml serve` on 127.0.0.1 with ``env`` (its log in ``home``); yields
    ``(url, process)`` and stops it afterwards. A server that never gets ready fails the test
    with the end of its log."""
    from service.launch import start_server, stop_server

    with (home / "serve.log").open("w") as log:
        try:
            proc, url = start_server({"BENTOML_HOME": str(home), **env}, log=log)
        except RuntimeError as e:
            pytest.fail(f"{e}: {(home / 'serve.log').read_text()[-3000:]}")
        try:
            yield url, proc
        finally:
            import psutil

            try:  # (a test may have ended the server already)
                workers = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                workers = []
            stop_server(proc)
            left = [w.pid for w in workers if w.is_running() and w.status() != "zombie"]
            assert not left, f"server processes left running: {left}"


@pytest.fixture
def seen(monkeypatch):
    """Report plots return their figure's description (``tests/figure_data.describe``, as JSON
    bytes) instead of PNG bytes, drawn under ``tests/figure_data.STYLE``."""
    import json

    import matplotlib

    from eval import plots

    from .figure_data import STYLE, describe

    monkeypatch.setattr(plots, "_png", lambda fig: json.dumps(describe(fig)).encode())
    with matplotlib.rc_context(STYLE):
        yield lambda png: json.loads(png)
