"""How much of the library the mutation selection covers, in non-blank, non-comment lines.

    python dev/mutation_breadth.py [--missing]

Counts the Python lines of ``eval/``, ``service/`` and ``vision/`` (the library; the command
layer ``vision_cli/`` and the tests are not mutated) and those of the files in
``[tool.mutmut] only_mutate``; ``--missing`` lists the files left out, largest first.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("eval", "service", "vision")


def code_lines(path: Path) -> int:
    """Lines that are neither blank nor comments (docstrings count: they are statements)."""
    return sum(
        1 for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")
    )


def breadth() -> tuple[int, int, list[tuple[int, str]]]:
    """(lines in the selection, lines of the library, files left out with their lines)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    selected = set(cfg["only_mutate"])
    inside = total = 0
    missing = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            n = code_lines(path)
            total += n
            if rel in selected:
                inside += n
            else:
                missing.append((n, rel))
    return inside, total, sorted(missing, reverse=True)


def main(argv: list[str]) -> int:
    inside, total, missing = breadth()
    print(f"mutation selection: {inside} of {total} library lines ({100 * inside / total:.1f} %)")
    if "--missing" in argv:
        for n, rel in missing:
            print(f"{n:6d}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
