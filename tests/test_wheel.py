"""The wheel a user installs: built from this tree, installed into a fresh virtual environment
(its dependencies seen from the project's, so nothing is downloaded), and run from an empty
folder: the version, the shipped suites found by name, the built-in dataset generated and
checked through the shipped config. It claims only the project's four top-level packages."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile

from .conftest import REPO


def run(args: list, cwd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r


def test_the_wheel_installs_and_runs_from_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", dist, REPO], cwd=tmp_path, timeout=300)  # fmt: skip
    (wheel,) = dist.glob("vision_suite-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"vision", "eval", "service", "vision_cli"}, top
    for shipped in ("eval/suites/default.yaml", "vision/dataset_configs/shapes.yaml",
                    "service/web/index.html", "vision/batch/ray_engine.py"):  # fmt: skip
        assert shipped in names, shipped
    venv = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path,
        timeout=300)  # fmt: skip
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=tmp_path).stdout.strip()  # fmt: skip
    # the dependencies from the project's environment, after the wheel's own packages
    (venv / site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    vision = venv / "bin" / "vision"
    assert run([vision, "--version"], cwd=empty).stdout.strip() == "vision 0.3.0"
    where = run([py, "-c", "import vision, eval, vision_cli; print(vision.__file__)"], cwd=empty)
    assert where.stdout.startswith(str(venv)), where.stdout
    assert "default " in run([vision, "bench", "list"], cwd=empty).stdout
    shown = run([vision, "bench", "show", "default"], cwd=empty).stdout
    assert "name: default" in shown and str(venv) in shown.splitlines()[0]
    suite = run([py, "-c", "from vision_cli.orchestrate import main_suite; "
                 "from eval.bench import load_suite; print(load_suite(main_suite())['name'])"],
                cwd=empty)  # fmt: skip
    assert suite.stdout.strip() in ("default", "default_gpu")
    run([vision, "data", "shapes", "--out", "datasets/shapes", "--train", "8", "--val", "4"],
        cwd=empty)  # fmt: skip
    check = run([vision, "data", "check", "shapes"], cwd=empty)
    assert check.stdout.splitlines()[-1] == "OK: no errors"
    assert "detection/train                8" in check.stdout
