"""Docs that build and run: the MkDocs site builds with --strict (a broken link, anchor or API
reference fails), every command of the quickstart page runs on tiny data (train → eval →
optimize → serve → predict), and the README stays a short guide that starts with the two
commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from service.launch import free_port

from .conftest import REPO

# what makes the quickstart's commands tiny here; each left side must stay on the page, so an
# edit of the page that this test no longer follows fails it
TINY = [
    ("--train 400 --val 100", "--train 16 --val 8"),
    ("000400.jpg", "000016.jpg"),
    ("--epochs 4 --img-size 160", "--epochs 1 --img-size 64"),
    ("--out reports/mydet/variants", "--out reports/mydet/variants --rounds 1 --iters 2"),
    ("source .venv/bin/activate", f"source {Path(sys.executable).parent / 'activate'}"),
]


def quickstart_script(port: int) -> str:
    text = (REPO / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    script = "\n".join(blocks)
    for old, new in [*TINY, (":3000", f":{port}"), ("--port 3000", f"--port {port}")]:
        assert old in script, f"the quickstart no longer has {old!r}: update TINY"
        script = script.replace(old, new)
    return script


def test_the_docs_site_builds_strict(tmp_path):
    # (not -q: MkDocs then stops counting the warnings that --strict turns into a failure)
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("Predictor", "build_model", "list_models", "build_evaluator", "VOCDataset"):
        assert name in api, name
    assert (tmp_path / "site" / "results" / "index.html").is_file()


def test_every_quickstart_command_runs(tmp_path):
    """The page's commands, in order, in an empty folder (the data root its ./datasets), with
    the model store in the test's folder and tiny sizes."""
    port = free_port()
    script = quickstart_script(port)
    env = {k: v for k, v in os.environ.items() if k != "VISION_DATASETS"}
    env.update(BENTOML_HOME=str(tmp_path / "bentoml"), VISION_ACCESS_LOG="0")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    answer = re.search(r'\{"model":.*"detections".*\}', r.stdout)
    assert answer, r.stdout[-2000:]
    summary = (work / "predictions" / "mydata" / "summary.json").read_text()
    assert '"images": 24' in summary and '"errors": 0' in summary
    assert (work / "reports" / "mydet" / "report.html").is_file()
    assert (work / "reports" / "mydet" / "variants" / "variants.json").is_file()


def test_the_readme_is_a_short_guide():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    head = "\n".join(lines[:12])
    assert "bash run.sh\n" in head + "\n" or "bash run.sh " in head
    assert "bash run.sh test" in head
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash run.sh test" in ci
    text = "\n".join(lines)
    for page in ("quickstart", "datasets", "training", "evaluation", "service", "predict"):
        assert f"docs/{page}.md" in text, page
