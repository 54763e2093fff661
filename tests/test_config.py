"""Dataset configs are found by name without the source tree: the data root first, then the
configs shipped inside the package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vision.config import config_search_path, known_datasets, load_config, shipped_config_dir
from vision.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_search_order_data_root_first(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    assert config_search_path() == [tmp_path, shipped_config_dir()]
    assert load_config("shapes").source.parent == shipped_config_dir()
    (tmp_path / "shapes.yaml").write_text(
        "name: my_shapes\nformat: voc\nroot: mine\nnames: [a, b]\ndetection: {val: v.txt}\n"
    )
    (tmp_path / "extra.yaml").write_text("name: extra\nformat: coco\nroot: x\nnames: [a]\n")
    mine = load_config("shapes")
    assert mine.name == "my_shapes" and mine.root == tmp_path / "mine"
    assert {"extra", "shapes", "voc2007"} <= set(known_datasets())
    with pytest.raises(DataError, match="looked in"):
        load_config("nope")


def test_an_installed_wheel_finds_the_shipped_configs(tmp_path):
    """Built and installed elsewhere, run from a folder without the checkout."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    r = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)])
    assert r.returncode == 0
    code = (
        "import vision.config as c; print(c.__file__); "
        "print(c.load_config('shapes').source); print(sorted(c.known_datasets()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "VISION_DATASETS": str(tmp_path / "data")}
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    module, source, names = r.stdout.splitlines()
    assert module.startswith(str(target)) and source.startswith(str(target))
    assert source.endswith("vision/dataset_configs/shapes.yaml")
    assert {"shapes", "voc2007", "voc2012", "coco2017"} <= set(ast.literal_eval(names))
