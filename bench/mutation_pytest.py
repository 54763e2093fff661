"""Check mutmut's mutants with one plain pytest process each, instead of mutmut's forked children.

    python bench/mutation_pytest.py "vision.prune.*" --tests tests/test_prune.py [--recheck]

Why: tests that run torch models are ~10x slower in the children mutmut forks from its
forkserver than in a fresh interpreter (measured on the pruning tests: ~18 s a mutant there,
~5-20 s here with pytest's start-up). Each mutant runs ``pytest -x`` over the given tests (the
same marker filter as mutmut's, so the tests that train stay out) with ``MUTANT_UNDER_TEST`` set,
and its exit code goes into mutmut's records (``mutants/**/*.py.meta``), so ``mutmut results``
and ``bench/mutation_summary.py`` read them as if mutmut had run them. Needs ``mutants/`` from a
``bash bench/mutation.sh`` run (mutmut writes the mutants there; this only checks them).
Mutants not yet checked are run; ``--recheck`` also re-runs the survivors.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
TIMEOUT_CODE = 36  # mutmut's "timeout"


def pending(patterns: list[str], recheck: bool) -> dict[Path, list[str]]:
    """Mutant names to run, by the ``.meta`` file that records them."""
    todo: dict[Path, list[str]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names = [
            k
            for k, code in codes.items()
            if any(fnmatch.fnmatch(k, p) for p in patterns)
            and (code is None or (recheck and code == 0))
        ]
        if names:
            todo[meta] = names
    return todo


def run_one(name: str, tests: list[str], timeout: float) -> int:
    """pytest's exit code with ``name`` active (1: a test failed, so the mutant is killed)."""
    env = dict(os.environ, MUTANT_UNDER_TEST=name, OMP_NUM_THREADS="1")
    env.setdefault("VISION_REAL_DATA", str((ROOT.parent / "shared/data/real").resolve()))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    cmd += ["-m", "not trains", *tests]
    try:
        done = subprocess.run(cmd, cwd=MUTANTS, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return TIMEOUT_CODE
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patterns", nargs="+", help="mutant name patterns, e.g. 'vision.prune.*'")
    ap.add_argument("--tests", nargs="+", required=True, help="test files, run in this order")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a mutant may take")
    ap.add_argument("--recheck", action="store_true", help="also re-run the survivors")
    args = ap.parse_args(argv)
    if not MUTANTS.is_dir():
        raise SystemExit(f"{MUTANTS}: expected mutmut's mutants folder; run bench/mutation.sh")
    todo = pending(args.patterns, args.recheck)
    jobs = [(meta, name) for meta, names in todo.items() for name in names]
    print(f"{len(jobs)} mutants to run over {' '.join(args.tests)}", flush=True)
    lock, start, counts = threading.Lock(), time.monotonic(), {}

    def work(job: tuple[Path, str]) -> None:
        meta, name = job
        code = run_one(name, args.tests, args.timeout)
        with lock:  # read-modify-write of the shared record, one thread at a time
            data = json.loads(meta.read_text())
            data["exit_code_by_key"][name] = code
            meta.write_text(json.dumps(data, indent=4))
            counts[code] = counts.get(code, 0) + 1
            n = sum(counts.values())
            print(f"[{n}/{len(jobs)} {time.monotonic() - start:.0f}s] {code} {name}", flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(work, jobs))
    print(f"exit codes: {dict(sorted(counts.items(), key=str))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
