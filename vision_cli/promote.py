"""``vision promote``: a benchmark report's best model of each task → the BentoML store."""

from __future__ import annotations

import json
from pathlib import Path

from vision.errors import DataError


def add_commands(sub) -> None:
    p = sub.add_parser("promote", help="put a suite's best models into the BentoML store")
    p.add_argument("--report", required=True, help="a benchmark report folder")
    p.set_defaults(func=cmd_promote)


def cmd_promote(a) -> int:
    from service.promote import promote

    report = Path(a.report)
    results = [json.loads(p.read_text()) for p in sorted((report / "pairs").glob("*.json"))]
    if not results:
        raise DataError(str(report / "pairs"), "benchmark pair results", "none")
    tags = promote(results, report_id=str(report))
    (report / "promoted.json").write_text(json.dumps(tags, indent=1))
    return 0
