"""Commands that reach the service layer: ``vision bench run`` (with ``--promote``) and
``vision promote``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def add_service_commands(sub, bench_sub) -> None:
    r = bench_sub.add_parser("run", help="run a benchmark suite (datasets × models)")
    r.add_argument("suite", help="suite YAML, e.g. bench/suites/default.yaml")
    r.add_argument("--out", default=None, help="report folder (default reports/SUITE_NAME)")
    r.add_argument("--promote", action="store_true", help="promote each task's best model")
    r.add_argument("--force", action="store_true", help="recompute every pair and retrain")
    r.set_defaults(func=cmd_bench_run)
    p = sub.add_parser("promote", help="put a suite's best models into the BentoML store")
    p.add_argument("--report", required=True, help="a benchmark report folder")
    p.set_defaults(func=cmd_promote)


def train_recipe(recipe: dict) -> None:
    """Train one suite recipe with the evaluation suite's validation."""
    from vision.cli import make_evaluator
    from vision.engine.train import TrainConfig, train
    from vision.models import model_task

    train(TrainConfig(task=model_task(recipe["model"]), **recipe), make_evaluator)


def run(
    suite_path: str, out: str | None = None, promote: bool = False, force: bool = False
) -> dict:
    from eval.bench import load_suite, run_suite
    from eval.leaderboard import write_suite_report
    from vision.data.health import check_dataset

    suite = load_suite(suite_path)
    out_dir = Path(out or f"reports/{suite['name']}")
    if force and out_dir.exists():
        for sub in ("pairs", "runs"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    results = run_suite(suite, out_dir, train_recipe)
    health = {}
    for d in suite["datasets"]:
        rep = check_dataset(d, decode=False)
        health[rep["dataset"]] = rep
    data = write_suite_report(out_dir, suite, results, health)
    print(f"[bench] leaderboard: {out_dir / 'index.html'} ({out_dir / 'leaderboard.md'})")
    for task, by_data in data["boards"].items():
        for dataset, rows in by_data.items():
            for r in rows:
                print(
                    f"  {task:<13}{dataset:<10}#{r['rank']} {r['model']:<22}"
                    f"{r['primary_metric']} {r['primary']:.4f}  p50 {r['latency_ms_p50']:.1f} ms"
                )
    if promote:
        from service.promote import promote as do_promote

        data["promoted"] = do_promote(results, report_id=f"{suite['name']}@{out_dir}")
        (out_dir / "promoted.json").write_text(json.dumps(data["promoted"], indent=1))
    return data


def cmd_bench_run(a) -> int:
    run(a.suite, a.out, a.promote, a.force)
    return 0


def cmd_promote(a) -> int:
    from service.promote import promote

    report = Path(a.report)
    results = [json.loads(p.read_text()) for p in sorted((report / "pairs").glob("*.json"))]
    if not results:
        from vision.errors import DataError

        raise DataError(str(report / "pairs"), "benchmark pair results", "none")
    tags = promote(results, report_id=str(report))
    (report / "promoted.json").write_text(json.dumps(tags, indent=1))
    return 0
