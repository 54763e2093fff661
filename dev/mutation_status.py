"""Each module of the mutation selection with its latest record that checked all its mutants.

    python dev/mutation_status.py [--over PERCENT]

Reads every ``bench/records/*/*/summary.md`` (``dev/mutation_summary.py``'s table) and, per
module of ``[tool.mutmut] only_mutate``, keeps the newest record (records sort by folder name,
which starts with the date) in which no mutant of it was left "not checked". Prints one
Markdown row per module: mutants, real survivors, their share of the checked non-equivalent
mutants, and the record; modules no record checked in full are listed as such. ``--over``:
only the modules above that share (or never checked in full).
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "bench" / "records"


def selection() -> list[tuple[str, str]]:
    """(module, file) of each entry of ``only_mutate``."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    out = []
    for path in cfg["only_mutate"]:
        module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        out.append((module, path))
    return out


def no_mutants(path: str) -> bool:
    """mutmut wrote no mutant for the file (nothing inside a function): ``mutants/`` says."""
    meta = ROOT / "mutants" / f"{path}.meta"
    return meta.is_file() and not json.loads(meta.read_text())["exit_code_by_key"]


def rows(summary: Path) -> dict[str, dict[str, str]]:
    """A summary's module rows, by column name (older summaries have fewer columns)."""
    out, header = {}, None
    for line in summary.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "module":
            header = cells
        elif header and len(cells) == len(header) and cells[1].isdigit():
            out[cells[0]] = dict(zip(header, cells, strict=True))
    return out


def latest() -> dict[str, tuple[str, dict[str, str]]]:
    """Module → (record folder, its row) of the newest summary that checked it in full."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for summary in sorted(RECORDS.glob("*/*/summary.md")):
        record = str(summary.parent.relative_to(RECORDS))
        for module, cells in rows(summary).items():
            if cells["not checked"] == "0":
                found[module] = (record, cells)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--over", type=float, default=None, help="only modules above this %%")
    args = ap.parse_args(argv)
    found = latest()
    print("| module | mutants | real | real % of checked non-equivalent | record |")
    print("|---|---|---|---|---|")
    for module, path in selection():
        none = "no mutants" if no_mutants(path) else "not checked in full"
        record, cells = found.get(module, (none, None))
        if cells is None:
            if args.over is None or record != "no mutants":
                print(f"| {module} | | | | {record} |")
            continue
        share = float(list(cells.values())[-1])
        if args.over is None or share > args.over:
            row = f"| {module} | {cells['mutants']} | {cells['real']} | {share:.1f} |"
            print(f"{row} `{record}/` |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
