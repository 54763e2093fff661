"""Per-module counts of a mutmut run, and its survivors sorted into kinds, as Markdown.

    python dev/mutation_summary.py RESULTS [SURVIVORS_DIFF]

``RESULTS``: ``mutmut results --all true``; ``SURVIVORS_DIFF``: each survivor's ``mutmut show``
(``## name`` then its diff). A survivor is **equivalent** when the mutated program behaves the
same for every input the code can receive (the rule that says why is named per kind below),
**text** when only the wording of a message, label or page changes (tests check the meaning of
messages, not every word), **CUDA only** when it changes a branch that runs only on a GPU
(listed with that reason in ``mutation_equivalent.txt``: not equivalent, not checkable without
a GPU, left out of the percentage and reported apart), and otherwise **real**: a missing test,
listed by name.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

# (kind, why, test on the removed and the added line)
EQUIVALENT = [
    (
        "zip-strict",
        "zip(strict=True) over sequences built with equal lengths: strict only "
        "guards against a programming error",
        lambda a, b: "strict=True" in a and "strict=True" not in b,
    ),
    ("nan-spelling", 'float("NAN") is float("nan")', lambda a, b: '"NAN"' in b and '"nan"' in a),
    (
        "numpy-unknown-dim",
        "numpy reads any negative size as the one unknown dimension",
        lambda a, b: (
            "np." in a and "reshape" in a and b.replace("-2)", "-1)").replace("(-2", "(-1") == a
        ),
    ),
    ("numpy-sort-kind", "numpy accepts the sort kind in any case", lambda a, b: '"STABLE"' in b),
    (
        "float64-default",
        "numpy's default dtype is float64",
        lambda a, b: "astype(np.float64)" in a and "astype(None)" in b,
    ),
    (
        "errstate",
        "np.errstate only silences warnings; the values are the same",
        lambda a, b: "np.errstate(" in a,
    ),
    ("default-arg", 'searchsorted side="left" is the default', lambda a, b: 'side="left"' in a),
    (
        "weights-only-default",
        "torch.load's weights_only defaults to True since torch 2.6",
        lambda a, b: "weights_only=True" in a and "weights_only=False" not in b,
    ),
]


STRING = re.compile(r"\"[^\"]*\"|'[^']*'")  # a quoted literal on one line


def _text_only(a: str, b: str) -> bool:
    """Only a string literal with words in it (a space, or markup) changed."""
    sa, sb = STRING.findall(a), STRING.findall(b)
    if len(sa) != len(sb) or STRING.sub("S", a) != STRING.sub("S", b):
        return False
    changed = [(x, y) for x, y in zip(sa, sb, strict=True) if x != y]
    return bool(changed) and all((" " in x or "<" in x) for x, _ in changed)


def classify(diff_lines: list[str]) -> str:
    minus = [ln[2:].strip() for ln in diff_lines if ln.startswith("- ")]
    plus = [ln[2:].strip() for ln in diff_lines if ln.startswith("+ ")]
    a, b = " ".join(minus), " ".join(plus)
    for kind, _, test in EQUIVALENT:
        try:
            if test(a, b):
                return kind
        except Exception:  # noqa: BLE001 - a rule that does not apply
            continue
    if (
        len(minus) == len(plus)
        and minus
        and all(_text_only(x, y) for x, y in zip(minus, plus, strict=True) if x != y)
    ):
        return "text"
    return "real"


def read_results(path: Path) -> dict[str, str]:
    """Each mutant's status in ``mutmut results --all true`` output."""
    out = {}
    for line in path.read_text().splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            out[name] = status
    return out


def module_of(name: str) -> str:
    module = name.split(".x", 1)[0].split(".x_", 1)[0]
    return ".".join(p for p in module.split(".") if not p.startswith("x"))


REVIEWED = Path(__file__).with_name("mutation_equivalent.txt")


def reviewed() -> dict[str, str]:
    """Survivors read one by one and found equivalent: ``NAME  reason`` per line."""
    out = {}
    for line in REVIEWED.read_text().splitlines() if REVIEWED.is_file() else []:
        if line.strip() and not line.startswith("#"):
            name, _, why = line.strip().partition(" ")
            out[name] = why.strip()
    return out


BY_HAND = Path(__file__).with_name("mutation_by_hand.txt")


def killed_by_hand() -> set[str]:
    """Mutants only a test running a child process can reach, checked one at a time."""
    lines = BY_HAND.read_text().splitlines() if BY_HAND.is_file() else []
    return {ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")}


def main(results: str, diffs: str | None = None) -> int:
    counts: dict[str, Counter] = defaultdict(Counter)
    by_hand = killed_by_hand()
    for name, status in read_results(Path(results)).items():
        counts[module_of(name)]["killed" if name in by_hand else status] += 1
    kinds: dict[str, str] = {}
    equivalent_by_hand = reviewed()
    if diffs:
        block: list[str] = []
        name = None
        for line in [*Path(diffs).read_text().splitlines(), "## end"]:
            if line.startswith("## "):
                if name and name not in by_hand:
                    why = equivalent_by_hand.get(name)
                    kinds[name] = (
                        classify(block)
                        if why is None
                        else "cuda-only"
                        if why.startswith("CUDA only")
                        else "reviewed"
                    )
                name, block = line[3:].strip(), []
            else:
                block.append(line)
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, kind in kinds.items():
        by_module[module_of(name)][kind] += 1
    print("| module | mutants | not checked | killed | timeout | no tests | survived | "
          "equivalent | CUDA only | text | real | "
          "survived % of checked non-equivalent |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    total, tk = Counter(), Counter()
    for module in sorted(counts):
        c, k = counts[module], by_module[module]
        total.update(c)
        tk.update(k)
        print(_row(module, c, k))
    print(_row("**all**", total, tk))
    if kinds:
        print("\nEquivalent kinds: " + "; ".join(
            f"**{kind}** ({sum(1 for v in kinds.values() if v == kind)}): {why}"
            for kind, why, _ in [*EQUIVALENT, ("reviewed", f"read one by one, {REVIEWED.name}",
                                                None)]  # "cuda-only": not equivalent, see below
            if any(v == kind for v in kinds.values())
        ))  # fmt: skip
        cuda = sorted(n for n, v in kinds.items() if v == "cuda-only")
        if cuda:
            print(f"\nCUDA only ({len(cuda)}): branches that run only on a GPU (none on this "
                  "machine); not counted as checked, listed in " + REVIEWED.name)  # fmt: skip
        real = sorted(n for n, v in kinds.items() if v == "real")
        print(f"\nReal survivors ({len(real)}):")
        for n in real:
            print(f"- {n}")
    return 0


def _row(module: str, c: Counter, k: Counter) -> str:
    n = sum(c.values())
    unchecked = c["not checked"]
    equivalent = sum(v for kind, v in k.items() if kind not in ("text", "real", "cuda-only"))
    checked_non_eq = n - unchecked - equivalent - k["cuda-only"]
    left = k["real"] + k["text"] + c["no tests"]
    return (
        f"| {module} | {n} | {unchecked} | {c['killed']} | {c['timeout']} | {c['no tests']} | "
        f"{c['survived']} | {equivalent} | {k['cuda-only']} | {k['text']} | {k['real']} | "
        f"{100 * left / max(checked_non_eq, 1):.1f} |"
    )


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
