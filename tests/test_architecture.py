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


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(root: Path, packages=LAYERS) -> dict[str, list[tuple[int, str, str]]]:
    """Per project module: (line, imported module, imported name or "") of every absolute
    import of a project module, inside functions too; ``from pkg import mod`` counts as an
    import of ``pkg.mod`` when that is a module."""
    files = {_module(f, root): f for p in packages for f in sorted((root / p).rglob("*.py"))}
    out: dict[str, list[tuple[int, str, str]]] = {}
    for mod, f in files.items():
        found = []
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name, "") for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.append((node.lineno, sub if sub in files else node.module, a.name))
        out[mod] = [(ln, m, n) for ln, m, n in found if m.split(".")[0] in packages]
    return out


def import_cycles(imports: dict[str, list[tuple[int, str, str]]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as sorted lists."""
    graph = {m: {t for _, t, _ in deps if t in imports and t != m} for m, deps in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def private_imports(imports: dict[str, list[tuple[int, str, str]]]) -> list[str]:
    """A private name (``_x``, not a dunder) imported from another project module."""
    return [
        f"{mod}:{line} imports {name} from {target}"
        for mod, deps in imports.items()
        for line, target, name in deps
        if name.startswith("_") and not name.startswith("__") and target != mod
    ]


def test_no_import_cycle_inside_the_project():
    """Imports inside functions count: a cycle hidden in function bodies is still a cycle."""
    assert import_cycles(project_imports(REPO)) == []


def test_no_private_name_crosses_modules():
    assert private_imports(project_imports(REPO)) == []


def test_the_cycle_and_private_name_checks_see_violations(tmp_path):
    """On a copy of the library with one cycle (hidden in a function) and one private import
    added, both checks fail, naming them."""
    import shutil

    for p in LAYERS:
        shutil.copytree(REPO / p, tmp_path / p)
    with open(tmp_path / "vision" / "errors.py", "a") as f:
        f.write("\n\ndef _late():\n    from vision.config import load_config\n")
    with open(tmp_path / "eval" / "iou.py", "a") as f:
        f.write("\n\nfrom eval.coco import _mean  # noqa\n")
    imports = project_imports(tmp_path)
    cycles = import_cycles(imports)
    assert any({"vision.errors", "vision.config"} <= set(c) for c in cycles), cycles
    bad = private_imports(imports)
    assert len(bad) == 1 and bad[0].startswith("eval.iou:") and "_mean from eval.coco" in bad[0]


def test_the_engine_is_small_pieces():
    """No function of the training engine over 60 lines, no call with more than 5 positional
    arguments (a loop with 18 positional arguments is what the Trainer replaced)."""
    long, wide = [], []
    for f in _files("vision/engine"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 60:
                long.append(f"{f.name}:{node.name}")
            positional = node.args if isinstance(node, ast.Call) else []
            if sum(not isinstance(a, ast.Starred) for a in positional) > 5:
                wide.append(f"{f.name}:{node.lineno}")
    assert long == [] and wide == [], (long, wide)
