"""Dataset configs are found by name without the source tree: the data root first, then the
configs shipped inside the package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vision.config import (
    config_search_path,
    data_root,
    find_config,
    known_datasets,
    load_config,
    parse_config,
    shipped_config_dir,
)
from vision.data.sample import mask_classes
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


@pytest.mark.packaging
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


COLORS = r"colors: expected 3 \[R, G, B\] triples of 0..255"
PAIRS = r"void=None \(label maps with other conventions are read by format: pairs\)$"


def _raw(**change) -> dict:
    raw = {"name": "t", "format": "voc", "root": "data/t", "names": ["cat", "dog"]}
    return {**raw, "detection": {"train": "a.txt"}, **change}


def test_parse_config_reads_fields_roots_and_extras(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path / "root"))
    cfg = parse_config(_raw(skip_invalid=True, names=["cat", "dog"]))
    assert (cfg.name, cfg.format, cfg.names) == ("t", "voc", ["cat", "dog"])
    assert cfg.root == tmp_path / "root" / "data" / "t"  # relative: under the data root
    assert cfg.detection == {"train": "a.txt"} and cfg.segmentation == {}
    assert cfg.extra == {"skip_invalid": True} and cfg.source is None
    assert cfg.background is True and cfg.void is None and cfg.colors == []
    assert mask_classes(cfg.names, cfg.background) == ["background", "cat", "dog"]
    assert parse_config(_raw(root=str(tmp_path / "abs"))).root == tmp_path / "abs"
    home = parse_config(_raw(root="~/x")).root
    assert home == Path("~/x").expanduser() and home.is_absolute()
    # {repo}: the folder above the config's own folder
    src = tmp_path / "repo" / "datasets" / "t.yaml"
    assert parse_config(_raw(root="{repo}/data"), source=src).root == tmp_path / "repo" / "data"
    seg = _raw(format="pairs", background=False, void=0, colors=[[1, 2, 3], [4, 5, 6]])
    seg = parse_config({**seg, "detection": None, "segmentation": {"val": "v.txt"}})
    assert (seg.background, seg.void) == (False, 0)
    assert mask_classes(seg.names, seg.background) == ["cat", "dog"]
    assert seg.colors == [[1, 2, 3], [4, 5, 6]] and seg.segmentation == {"val": "v.txt"}
    # the edges of the ranges are accepted
    parse_config({k: v for k, v in _raw(void=255, format="pairs").items() if k != "detection"})
    parse_config(_raw(colors=[[255, 255, 255]] * 3))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": None}, r"^x\.yaml: expected field 'name', got fields \['detection', 'format'"),
        ({"format": "yolo"}, r"^x\.yaml: format: expected one of \('voc', 'coco', 'pairs'\), got"),
        ({"names": []}, r"^x\.yaml: names: expected a non-empty list of class names, got \[\]$"),
        ({"names": "cat"}, r"names: expected a non-empty list of class names, got 'cat'$"),
        ({"names": ["cat", 1]}, r"names: expected a non-empty list of class names, got \['cat', 1"),
        ({"void": -1}, r"void: expected a label value 0..255, got -1$"),
        ({"void": 256}, r"void: expected a label value 0..255, got 256$"),
        ({"void": "255"}, r"void: expected a label value 0..255, got '255'$"),
        ({"colors": [[0, 0, 0]] * 2 + [[0, 0]]}, COLORS + r" \(one per mask index, background"),
        ({"colors": [[0, 0, -1]] * 3}, COLORS),
        ({"colors": [[0, 0, 0.5]] * 3}, COLORS),
        ({"colors": [(0, 0, 0)] * 3}, COLORS),
        ({"background": False}, r"background/void: expected the format's own .*" + PAIRS),
        ({"void": 0}, r"got background=True, void=0"),
        ({"format": "pairs"}, r"^x\.yaml: detection: expected no detection section for a 'pairs'"),
    ],
)  # fmt: skip
def test_parse_config_errors_say_what_was_expected_where(change, message):
    raw = {k: v for k, v in _raw(**change).items() if v is not None}
    with pytest.raises(DataError, match=message):
        parse_config(raw, source=Path("x.yaml"))


def test_splits_name_the_task_and_the_sections_a_dataset_has(tmp_path, monkeypatch):
    cfg = parse_config(_raw(), source=Path("x.yaml"))
    assert cfg.splits("detection") == {"train": "a.txt"}
    task = r"^dataset t: expected a task in \('detection', 'segmentation'\), got 'pose'$"
    with pytest.raises(DataError, match=task):
        cfg.splits("pose")
    none = r"^x\.yaml: expected a 'segmentation' section with splits, got none "
    with pytest.raises(DataError, match=none + r"\(this dataset supports: \['detection'\]\)$"):
        cfg.splits("segmentation")
    with pytest.raises(DataError, match=r"^t: expected a 'segmentation' section"):
        parse_config(_raw()).splits("segmentation")
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    (tmp_path / "mine.yaml").write_text("name: mine\nformat: coco\nroot: r\nnames: [a]\n")
    assert find_config("mine") == tmp_path / "mine.yaml" and find_config("absent") is None
    yml = tmp_path / "other.yml"
    yml.write_text("name: other\nformat: coco\nroot: r\nnames: [a]\n")
    assert load_config(yml).name == "other" and load_config(str(yml)).source == yml
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(DataError, match=r"empty\.yaml: expected field 'name', got fields \[\]$"):
        load_config("empty")
    with pytest.raises(
        DataError, match=r"expected a YAML file or one of the known datasets \[.*'mine'"
    ):
        load_config(tmp_path / "gone.yaml")


def _message(raw: dict, source: Path | None = None) -> str:
    with pytest.raises(DataError) as err:
        parse_config(raw, source)
    return str(err.value)


def test_config_messages_in_full(tmp_path, monkeypatch):
    monkeypatch.delenv("VISION_DATASETS", raising=False)
    assert data_root() == Path("datasets")
    assert _message(_raw(format="yolo")) == (
        "dataset config: format: expected one of ('voc', 'coco', 'pairs'), got 'yolo'"
    )
    assert _message(_raw(background="no")).endswith("background: expected true or false, got 'no'")
    four = [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]
    assert _message(_raw(colors=four)).endswith(
        "(one per mask index, background first), got 4 entries: [[1, 1, 1], [2, 2, 2], "
        "[3, 3, 3]]..."
    )
    pairs = _raw(format="pairs", background=False, detection=None, colors=four)
    assert "2 [R, G, B] triples of 0..255 (one per mask index), got 4 entries" in _message(pairs)
    assert _message(_raw(void=0), Path("x.yaml")) == (
        "x.yaml: background/void: expected the format's own convention for a 'voc' or 'coco' "
        "dataset (0 = background, 255 = void), got background=True, void=0 (label maps with "
        "other conventions are read by format: pairs)"
    )
    assert _message(_raw(format="pairs")) == (
        "dataset config: detection: expected no detection section for a 'pairs' dataset, got one"
    )
    cfg = parse_config({**pairs, "void": 11, "colors": four[:2], "segmentation": {"v": "v"}})
    assert cfg.extra == {}  # background, void and colors are fields, not extras
    monkeypatch.setenv("VISION_DATASETS", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_config(tmp_path / "gone.yaml")
    folders = [str(tmp_path), str(shipped_config_dir())]
    assert str(err.value).startswith("dataset config: expected a YAML file or one of the known")
    assert str(err.value).endswith(f", got '{tmp_path / 'gone.yaml'}' (looked in {folders})")
