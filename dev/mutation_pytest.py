"""Check mutmut's mutants with plain pytest runs, instead of mutmut's forked children.

    python dev/mutation_pytest.py "vision.prune.*" --tests tests/test_prune.py [--recheck]

Why: tests that run torch models are ~10x slower in the children mutmut forks from its
forkserver than in a fresh interpreter (the pruning tests: ~18 s a mutant there). Here each
worker is a fresh interpreter (``spawn``) that imports the tests once and runs ``pytest -x``
over them for one mutant after another, in process: mutmut's trampolines read
``MUTANT_UNDER_TEST`` at every call, so switching mutants needs no new process. The same marker
filter as mutmut's keeps the tests that train out. A mutant that runs past ``--timeout`` (or
kills its worker) costs that worker, and a fresh one takes its place; workers are also renewed
every ``--renew`` mutants. ``--fresh``: one new ``python -m pytest`` per mutant instead (for
code that keeps state between calls: a mutant could leave it behind for the next one).

Exit codes go into mutmut's records (``mutants/**/*.py.meta``), so ``mutmut results`` and
``dev/mutation_summary.py`` read them as if mutmut had run them. Needs ``mutants/`` from a
``bash dev/mutation.sh`` run (mutmut writes the mutants there; this only checks them).
Mutants not yet checked are run; ``--recheck`` also re-runs the survivors. ``--generate``
first (re)writes the mutated copy as ``mutmut run`` starts by doing (files added to
``only_mutate`` or changed since), without its test runs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
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


PYTEST_ARGS = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-m", "not trains"]
CRASH_CODE = -11  # mutmut's "segfault": the worker died under the mutant


def _environment() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: two workers, two cores
    os.environ.setdefault("VISION_REAL_DATA", str((ROOT.parent / "shared/data/real").resolve()))


def run_fresh(name: str, tests: list[str], timeout: float) -> int:
    """pytest's exit code with ``name`` active, in a new interpreter (1: a test failed)."""
    env = dict(os.environ, MUTANT_UNDER_TEST=name, PYTHONPATH=str(MUTANTS))
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS, *_absolute(tests)]
    with tempfile.TemporaryDirectory(prefix="mutant-") as work:
        try:
            done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return TIMEOUT_CODE
    return done.returncode


def _absolute(tests: list[str]) -> list[str]:
    """Test paths (``tests/x.py`` or ``tests/x.py::name``) inside the mutated copy."""
    return [str(MUTANTS / t) for t in tests]


def _serve(conn, tests: list[str]) -> None:
    """A worker: the mutated copy first on the path, then one pytest session per name sent,
    each in an empty folder of its own: what a mutant writes into its working folder (a file
    named ``None`` where a path became ``str(None)``) must not be there for the next one,
    nor for the other worker's mutants, which would find it and pass."""
    import contextlib

    sys.path.insert(0, str(MUTANTS))
    import pytest

    args = [*PYTEST_ARGS, *_absolute(tests)]
    with open(os.devnull, "w") as quiet:
        while (name := conn.recv()) is not None:
            os.environ["MUTANT_UNDER_TEST"] = name
            with tempfile.TemporaryDirectory(prefix="mutant-", ignore_cleanup_errors=True) as work:
                os.chdir(work)
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    code = pytest.main(args)
                os.chdir(MUTANTS)
            conn.send(int(code))


class Worker:
    """One spawned interpreter that runs the tests for mutant after mutant."""

    def __init__(self, tests: list[str], renew: int):
        self.tests, self.renew, self.proc, self.used = tests, renew, None, 0

    def run(self, name: str, timeout: float) -> int:
        import multiprocessing as mp

        if self.proc is None or self.used >= self.renew:
            self.close()
            spawn = mp.get_context("spawn")
            self.conn, child = spawn.Pipe()
            self.proc = spawn.Process(target=_serve, args=(child, self.tests))
            self.proc.start()
            self.used = 0
        self.used += 1
        self.conn.send(name)
        try:
            if self.conn.poll(timeout):
                return self.conn.recv()
            code = TIMEOUT_CODE
        except EOFError:  # the worker died (the mutant crashed the interpreter)
            code = CRASH_CODE
        self.proc.kill()
        self.proc.join()
        self.proc = None
        return code

    def close(self) -> None:
        if self.proc is not None:
            self.conn.send(None)
            self.proc.join(30)
            self.proc.kill()
            self.proc = None


def generate() -> None:
    """mutmut's own first step: copy the sources and write the mutants of the files in
    ``only_mutate`` that are new or changed (mutmut 3.8's internal functions: check them on an
    upgrade)."""
    from mutmut import __main__ as mm
    from mutmut.configuration import config

    os.chdir(ROOT)
    mm.set_mutant_under_test("mutant_generation")
    (ROOT / "mutants").mkdir(exist_ok=True)
    # a file newly added to only_mutate may sit there as an unmutated copy with its source's
    # time (dev/mutation_sync.py copies those): mutmut would take it as up to date
    for rel in config().only_mutate:
        if not (MUTANTS / f"{rel}.meta").exists():
            (MUTANTS / rel).unlink(missing_ok=True)
    mm.copy_src_dir()
    mm.copy_also_copy_files()
    mm.setup_source_paths()
    stats = mm.create_mutants(2)
    print(f"mutants: {stats.mutated} files mutated, {stats.unmodified} unchanged", flush=True)


def baseline_twice(tests: list[str], timeout: float) -> None:
    """The unmutated code, twice in one worker: both runs must pass, or a test leaves state
    behind (a parametrized object it changes, say) and later mutants would fail for it."""
    worker = Worker(tests, renew=2)
    codes = [worker.run("", timeout) for _ in range(2)]  # no mutant name: the original code
    worker.close()
    if codes != [0, 0]:
        raise SystemExit(
            f"the tests on unmutated code, run twice in one process: expected exit codes "
            f"[0, 0], got {codes}; fix: make the tests independent of earlier runs (or --fresh)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patterns", nargs="+", help="mutant name patterns, e.g. 'vision.prune.*'")
    ap.add_argument("--tests", nargs="+", required=True, help="test files, run in this order")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a mutant may take")
    ap.add_argument("--renew", type=int, default=50, help="mutants a worker runs, then a new one")
    ap.add_argument("--fresh", action="store_true", help="a new interpreter for each mutant")
    ap.add_argument("--recheck", action="store_true", help="also re-run the survivors")
    ap.add_argument("--generate", action="store_true", help="write new or changed mutants first")
    args = ap.parse_args(argv)
    if args.generate:
        generate()
    if not MUTANTS.is_dir():
        raise SystemExit(f"{MUTANTS}: expected mutmut's mutants folder; run dev/mutation.sh")
    _environment()
    todo = pending(args.patterns, args.recheck)
    jobs = [(meta, name) for meta, names in todo.items() for name in names]
    print(f"{len(jobs)} mutants to run over {' '.join(args.tests)}", flush=True)
    if jobs and not args.fresh:
        baseline_twice(args.tests, args.timeout)
    lock, start, counts = threading.Lock(), time.monotonic(), {}
    local = threading.local()

    def work(job: tuple[Path, str]) -> None:
        meta, name = job
        if args.fresh:
            code = run_fresh(name, args.tests, args.timeout)
        else:
            if not hasattr(local, "worker"):
                local.worker = Worker(args.tests, args.renew)
                with lock:
                    workers.append(local.worker)
            code = local.worker.run(name, args.timeout)
        with lock:  # read-modify-write of the shared record, one thread at a time
            data = json.loads(meta.read_text())
            data["exit_code_by_key"][name] = code
            meta.write_text(json.dumps(data, indent=4))
            counts[code] = counts.get(code, 0) + 1
            n = sum(counts.values())
            print(f"[{n}/{len(jobs)} {time.monotonic() - start:.0f}s] {code} {name}", flush=True)

    workers: list[Worker] = []
    try:
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(work, jobs))
    finally:
        for w in workers:
            w.close()
    print(f"exit codes: {dict(sorted(counts.items(), key=str))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
