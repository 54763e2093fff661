"""The layering, read from the code: datasets (config) → vision → eval → service → vision_cli.

No module imports a layer above its own (imports inside functions included), the command
layer ``vision_cli`` is imported by nobody, and the service leaves task-specific output layouts to
the Predictor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("vision", "eval", "service", "vision_cli")  # lowest first


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def _files(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer):
    rank = LAYERS.index(layer)
    bad = [
        f"{f.relative_to(REPO)}:{line} imports {pkg}"
        for f in _files(layer)
        for line, pkg in _imports(f)
        if pkg in LAYERS and LAYERS.index(pkg) > rank
    ]
    assert not bad, bad


def test_only_the_command_layer_has_command_line_code():
    for layer in LAYERS[:-1]:
        clis = [f for f in _files(layer) if f.stem == "cli" or "argparse" in f.read_text()]
        assert not clis, f"command-line code outside vision_cli/: {clis}"
    # benchmark scripts build evaluators and predictors from the library, not from vision_cli
    bad = [
        f"{f.name}:{line}"
        for f in _files("bench")
        for line, pkg in _imports(f)
        if pkg == "vision_cli"
    ]
    assert not bad, bad


def test_service_has_no_task_output_branches():
    """Comparisons with a task name are the Predictor's business (``finish``/``render``)."""
    tasks = {"detection", "segmentation"}
    bad = []
    for f in _files("service"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare):
                consts = [
                    c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)
                ]
                if tasks & set(consts):
                    bad.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert not bad, bad


def test_the_layer_test_sees_violations(tmp_path):
    """The import reader is not blind: it finds a lazy import inside a function."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from service.promote import promote\n    import vision_cli.cli\n")
    assert _imports(f) == [(2, "service"), (3, "vision_cli")]
