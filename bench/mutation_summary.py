"""Per-module counts of a ``mutmut results --all true`` listing (killed / survived / timed
out / other), and the survivors by name, as Markdown."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path


def main(path: str) -> int:
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.split(".x", 1)[0].split(".x_", 1)[0]
        module = ".".join(p for p in module.split(".") if not p.startswith("x"))
        counts[module][status] += 1
        if status == "survived":
            survivors[module].append(name)
    print("| module | killed | survived | timeout | other | survived % |")
    print("|---|---|---|---|---|---|")
    total = Counter()
    for module in sorted(counts):
        c = counts[module]
        other = sum(v for k, v in c.items() if k not in ("killed", "survived", "timeout"))
        n = sum(c.values())
        total.update(c)
        print(
            f"| {module} | {c['killed']} | {c['survived']} | {c['timeout']} | {other} | "
            f"{100 * c['survived'] / max(n, 1):.1f} |"
        )
    n = sum(total.values())
    print(f"| all | {total['killed']} | {total['survived']} | {total['timeout']} | "
          f"{n - total['killed'] - total['survived'] - total['timeout']} | "
          f"{100 * total['survived'] / max(n, 1):.1f} |")  # fmt: skip
    for module, names in sorted(survivors.items()):
        print(f"\n{module}: {', '.join(sorted(names))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
