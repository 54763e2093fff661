"""Prepare ``mutants/`` for another ``mutmut run`` after tests or code changed.

    python dev/mutation_sync.py [--recheck]

mutmut 3 copies the project into ``mutants/`` once and afterwards re-creates only the mutated
files whose source changed (their changed functions' mutants become "not checked"); tests and
the files it does not mutate stay as first copied. This copies them again. ``--recheck`` also
marks every survivor and every mutant without a test "not checked" and drops the test-to-
function map, so the next run checks them against the current tests.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECHECK = {0, 5, 33}  # survived, no tests (mutmut's exit codes)


def main(argv: list[str]) -> int:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    mutated = {Path(p) for p in cfg["only_mutate"]}
    out = ROOT / "mutants"
    copied = 0
    for folder in ["tests", *cfg["source_paths"]]:
        for src in (ROOT / folder).rglob("*" if folder == "tests" else "*.py"):
            rel = src.relative_to(ROOT)
            if rel in mutated or "__pycache__" in rel.parts or not src.is_file():
                continue
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied += 1
    print(f"copied {copied} test and unmutated files into {out}")
    if "--recheck" in argv:
        import json

        reset = 0
        for meta in out.rglob("*.py.meta"):
            data = json.loads(meta.read_text())
            codes = data["exit_code_by_key"]
            for key, code in codes.items():
                if code in RECHECK:
                    codes[key] = None
                    reset += 1
            meta.write_text(json.dumps(data, indent=4))
        (out / "mutmut-stats.json").unlink(missing_ok=True)
        print(f"{reset} survivors and mutants without a test marked not checked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
