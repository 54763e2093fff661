"""Carry an earlier run's verdicts into a new one, for mutants the new run did not check.

    python dev/mutation_merge.py OLD_DIR NEW_DIR OUT_DIR

Each folder holds ``results.txt`` (``mutmut results --all true``) and ``survivors.diff``
(``## name`` then its diff). A fresh ``mutants/`` knows nothing of earlier runs, so a session
that re-checks a few functions sees every other mutant as "not checked". The merge takes, per
mutant of the new run, its new status when the new run checked it, else the old one (with its
diff when it survived). Mutants only the old run knows are dropped: their function is gone. The
rule is only sound when every function whose source changed since the old run was re-checked
in full (its mutants are renumbered): the caller names those in the record's README.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mutation_summary import read_results

UNCHECKED = "not checked"


def read_diffs(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith("## "):
            name = line[3:].strip()
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out


def merge(old: Path, new: Path) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """The merged statuses, the survivors' diffs, and how many verdicts came from ``old``."""
    was, now = read_results(old / "results.txt"), read_results(new / "results.txt")
    old_diffs, new_diffs = read_diffs(old / "survivors.diff"), read_diffs(new / "survivors.diff")
    status, diffs, carried = {}, {}, 0
    for name, s in now.items():
        if s == UNCHECKED and was.get(name, UNCHECKED) != UNCHECKED:
            s, source, carried = was[name], old_diffs, carried + 1
        else:
            source = new_diffs
        status[name] = s
        if s == "survived":
            if name not in source:
                raise SystemExit(f"{name}: survived, but its diff is not in the survivors.diff")
            diffs[name] = source[name]
    return status, diffs, carried


def main(old: str, new: str, out: str) -> int:
    status, diffs, carried = merge(Path(old), Path(new))
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "results.txt").write_text("".join(f"    {n}: {s}\n" for n, s in status.items()))
    (dest / "survivors.diff").write_text(
        "".join(f"## {n}\n" + "".join(f"{ln}\n" for ln in d) for n, d in diffs.items())
    )
    print(f"{len(status)} mutants, {carried} verdicts carried from {old}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    sys.exit(main(*sys.argv[1:]))
