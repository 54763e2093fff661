#!/usr/bin/env bash
# Mutation testing of the evaluation suite, the service's request handling, the training
# engine's helpers, the data readers and pruning (not CI: it runs for a long while). mutmut 3
# (configuration: [tool.mutmut] in pyproject.toml) mutates inside functions and, for each
# mutant, runs only the tests that reach the mutated function.
#   bash dev/mutation.sh            (MUTATION_TIMEOUT=seconds bounds the run; default 2 h)
#   MUTATION_NAMES="vision.data.* vision.prune.*" bash dev/mutation.sh    (only those mutants)
# Output: bench/results/mutation/{results.txt,stats.json,survivors.diff,summary.md}; `mutmut
# show NAME` prints a mutant's diff. An interrupted run continues where it stopped; mutants of
# changed functions are checked again by themselves; after tests were added,
# `MUTATION_RECHECK=1 bash dev/mutation.sh` re-checks every survivor against them.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install -q -e '.[dev,mutation]' 2>&1 | grep -E "^ERROR" || true
export VISION_REAL_DATA="$(realpath ../shared/data/real)"
export VISION_HYPOTHESIS_EXAMPLES=60  # the VOC property test, once per mutant
# one OpenMP thread: a forked child of a process whose OpenMP team is running hangs in its
# first parallel torch op (each such mutant was a 15-minute "timeout" before)
export OMP_NUM_THREADS=1
OUT=bench/results/mutation
mkdir -p mutants/datasets  # mutmut copies single files into existing folders only
# the real sets' configs say {repo}/../shared, and the mutated copy's {repo} is mutants/: link
# ../shared beside it for the run (removed at exit unless it was there before)
if [ ! -e shared ]; then ln -s ../shared shared && trap 'rm -f shared' EXIT; fi
# tests and unmutated files as they are now (mutmut copies them once); MUTATION_RECHECK=1 also
# re-checks the survivors of the last run against the current tests
.venv/bin/python dev/mutation_sync.py ${MUTATION_RECHECK:+--recheck}
mkdir -p "$OUT"
# shellcheck disable=SC2086 # MUTATION_NAMES: glob patterns, passed to mutmut unexpanded
(set -f; timeout "${MUTATION_TIMEOUT:-7200}" .venv/bin/mutmut run --max-children 2 \
    ${MUTATION_NAMES:-} >"$OUT/run.log" 2>&1)
echo "mutmut run exit: $?"
.venv/bin/mutmut results --all true >"$OUT/results.txt" 2>&1
.venv/bin/mutmut export-cicd-stats >/dev/null 2>&1 && cp mutants/mutmut-cicd-stats.json "$OUT/stats.json"
# every survivor's diff, sorted by the summary into equivalent / text / real
show() { echo "## $1"; .venv/bin/mutmut show "$1" 2>/dev/null | grep "^[-+] "; }
export -f show
grep ": survived" "$OUT/results.txt" | cut -d: -f1 | tr -d ' ' |
    xargs -P 2 -I{} bash -c 'show "$1" >"$0/diff.$1"' "$OUT" {}
cat "$OUT"/diff.* >"$OUT/survivors.diff" 2>/dev/null && rm -f "$OUT"/diff.*
.venv/bin/python dev/mutation_summary.py "$OUT/results.txt" "$OUT/survivors.diff" |
    tee "$OUT/summary.md"
