"""Orchestration: the main job, running a benchmark suite (training what is missing, scoring
every pair, the report, promotion), and training one suite recipe.

``vision main``: dataset → train the defaults → benchmark report → promote → serve.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from vision.errors import DataError

# the main job's suite on a CPU, and on a machine with CUDA
MAIN_SUITES = ("default", "default_gpu")  # shipped suites (eval/suites/)


def add_commands(sub) -> None:
    m = sub.add_parser("main", help="run the main job on the built-in dataset")
    m.add_argument("--force", action="store_true", help="redo every step")
    m.add_argument("--no-serve", action="store_true", help="stop after promotion")
    m.add_argument("--port", type=int, default=3000)
    m.add_argument("--host", default="127.0.0.1")
    m.set_defaults(func=cmd_main)


def main_suite() -> str:
    """The suite the main job runs: the GPU recipes when torch sees a CUDA device."""
    import torch

    return MAIN_SUITES[1] if torch.cuda.is_available() else MAIN_SUITES[0]


def train_recipe(recipe: dict) -> None:
    """Train one suite recipe (``TrainConfig`` fields) with the evaluation suite's validation."""
    from eval.metrics import build_evaluator
    from vision.engine.train import train
    from vision.models import model_task
    from vision.recipe import validate

    train(validate({**recipe, "task": model_task(recipe["model"])}), build_evaluator)


def run_suite(
    suite_path: str,
    out: str | None = None,
    promote: bool = False,
    force: bool = False,
    train_fn: Callable[[dict], None] = train_recipe,
    log: Callable = print,
    engine: str = "local",
    address: str | None = None,
) -> dict:
    """Every (dataset, model) pair of a suite not already in ``OUT/pairs`` (training a model's
    recipe first when its checkpoint is missing), then the leaderboard report, then (with
    ``promote``) each task's best model into the BentoML store. ``engine="ray"`` scores the
    pairs as Ray tasks (one GPU each where the cluster has GPUs, a CPU otherwise) on the
    cluster at ``address`` (default: a local Ray); training stays here."""
    from eval.bench import load_suite, pair_key, run_pair
    from eval.leaderboard import write_suite_report
    from vision.config import load_config
    from vision.data.health import check_dataset

    suite = load_suite(suite_path)
    out_dir = Path(out or f"reports/{suite['name']}")
    if force and out_dir.exists():
        for sub in ("pairs", "runs"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    opts = suite["options"]
    results, todo = [], []
    for data in suite["datasets"]:
        cfg = load_config(data)
        for spec in suite["models"]:
            path = out_dir / "pairs" / f"{pair_key(data, spec['name'])}.json"
            if path.is_file():
                log(f"[bench] {cfg.name} × {spec['name']}: done earlier, reused")
                results.append(json.loads(path.read_text()))
                continue
            ckpt = checkpoint_for(spec, data, cfg.name, out_dir, train_fn, log)
            todo.append((cfg.name, spec["name"], str(ckpt), data))
    if engine == "ray":
        results += run_pairs_on_ray(todo, opts, out_dir, address, log)
    else:
        for dataset, name, ckpt, data in todo:
            log(f"[bench] {dataset} × {name}: evaluating")
            result = run_pair(ckpt, data, name, opts, str(out_dir))
            if result is None:
                log(f"[bench] {dataset} × {name}: no split of the model's task, skipped")
            else:
                results.append(result)
    health = {}
    for d in suite["datasets"]:
        rep = check_dataset(d, decode=False)
        health[rep["dataset"]] = rep
    report = write_suite_report(out_dir, suite, results, health)
    log(f"[bench] leaderboard: {out_dir / 'index.html'} ({out_dir / 'leaderboard.md'})")
    for task, by_data in report["boards"].items():
        for dataset, rows in by_data.items():
            for r in rows:
                log(
                    f"  {task:<13}{dataset:<10}#{r['rank']} {r['model']:<22}"
                    f"{r['primary_metric']} {r['primary']:.4f}  p50 {r['latency_ms_p50']:.1f} ms"
                )
    if promote:
        from service.promote import choose_best
        from service.promote import promote as do_promote

        tables = {}
        if "optimize" in opts:  # deployable variants of each winner; the chosen one is served
            from vision_cli.optimize import optimize

            o = opts["optimize"] or {}
            for task, best in choose_best(results).items():
                log(f"[bench] deployable variants of {best['model']} ({task})")
                tables[task] = optimize(
                    Path(best["checkpoint"]),
                    next(d for d in suite["datasets"] if load_config(d).name == best["dataset"]),
                    out_dir / "variants" / task,
                    split=opts.get("split", "val"),
                    variants=o.get("variants"),
                    budget=float(o.get("budget", 0.01)),
                    calibration=int(o.get("calibration", 64)),
                    rounds=int(o.get("rounds", 3)),
                    iters=int(o.get("iters", 10)),
                    limit=opts.get("limit"),
                    log=log,
                )
        report["promoted"] = do_promote(
            results, report_id=f"{suite['name']}@{out_dir}", variants=tables, log=log
        )
        (out_dir / "promoted.json").write_text(json.dumps(report["promoted"], indent=1))
    return report


def run_pairs_on_ray(todo: list[tuple], opts: dict, out: Path, address, log) -> list[dict]:
    """Every pending pair as a Ray task; the results in the order given. Paths travel
    absolute and the data root with them, so workers anywhere resolve them alike."""
    from eval.bench import run_pair
    from vision.batch.ray_engine import ensure_ray
    from vision.config import data_root, load_config

    ray, started = ensure_ray(address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
        task = ray.remote(run_pair).options(
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else 1,
            runtime_env={"env_vars": {"VISION_DATASETS": str(data_root().resolve())}},
        )
        log(f"[bench] {len(todo)} pairs as Ray tasks ({'a GPU' if gpus else 'a CPU'} each)")
        refs = [
            task.remote(
                str(Path(ckpt).resolve()),
                str(load_config(data).source.resolve()),
                name,
                opts,
                str(out.resolve()),
            )
            for _, name, ckpt, data in todo
        ]
        results = ray.get(refs)
    finally:
        if started:
            ray.shutdown()
    for (dataset, name, _, _), r in zip(todo, results, strict=True):
        log(f"[bench] {dataset} × {name}: " + ("done on Ray" if r else "no split, skipped"))
    return [r for r in results if r is not None]


def checkpoint_for(spec: dict, data: str, dataset: str, out: Path, train_fn, log) -> Path:
    """A suite model's checkpoint: given, trained earlier in this report, or trained now on
    ``data`` (the suite's dataset entry: a name or a YAML path)."""
    if "checkpoint" in spec and Path(spec["checkpoint"]).is_file():
        return Path(spec["checkpoint"])
    if "train" not in spec:
        raise DataError(
            f"suite model {spec['name']}",
            "an existing checkpoint file",
            repr(spec.get("checkpoint")),
            "or give a 'train' recipe",
        )
    run_dir = out / "runs" / f"{dataset}__{spec['name']}"
    done = epochs_done(run_dir / "last.pt")
    wanted = int(spec["train"].get("epochs", 1))
    if done >= wanted and (run_dir / "best.pt").is_file():
        return run_dir / "best.pt"
    recipe = {**spec["train"], "data": data, "out": str(run_dir)}
    if done:  # an interrupted run: continue it instead of mistaking its best.pt for the result
        log(f"[bench] resuming {spec['name']} on {dataset} at epoch {done}/{wanted}")
        recipe["resume"] = "auto"
    else:
        log(f"[bench] training {spec['name']} on {dataset} ({spec['train']})")
    train_fn(recipe)
    return run_dir / "best.pt"


def epochs_done(last: Path) -> int:
    """Epochs a run folder's ``last.pt`` has finished (0 when there is none)."""
    if not last.is_file():
        return 0
    from vision.engine.checkpoint import load_checkpoint

    return int(load_checkpoint(last, mmap=True).get("epoch", 0))  # tensors are not read


def cmd_main(a) -> int:
    """The main job: dataset → train the defaults → benchmark report → promote → serve."""
    from vision.config import load_config
    from vision.data.health import check_dataset, format_report
    from vision.data.shapes import ShapesSpec, generate

    t0 = time.perf_counter()
    cfg = load_config("shapes")
    out = cfg.root.parent
    if a.force or not (out / "spec.json").is_file():
        print(f"[main] 1/4 generating the built-in dataset under {out} ...", flush=True)
        print(f"[main] {generate(out, ShapesSpec(**cfg.extra.get('generate', {})))}", flush=True)
    else:
        print(f"[main] 1/4 reusing {out} (--force regenerates)", flush=True)
    report = check_dataset(cfg)
    print(format_report(report), flush=True)
    Path("reports").mkdir(exist_ok=True)
    Path("reports/shapes_health.json").write_text(json.dumps(report, indent=1))
    if not report["ok"]:
        return 1
    print(
        "[main] 2/4 training (or reusing) the default detector and segmenter, then "
        "benchmarking them",
        flush=True,
    )
    suite = main_suite()
    folder = Path("reports") / suite
    if suite != MAIN_SUITES[0]:
        print(f"[main] a CUDA device is present: {suite} (the 5-minute GPU recipes)", flush=True)

    def log(msg: str) -> None:  # each step with the job's clock, so its time shows
        print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", flush=True)

    run_suite(suite, str(folder), promote=True, force=a.force, log=log)
    print(f"[main] 3/4 report: {(folder / 'index.html').resolve()}", flush=True)
    print(f"[main] finished in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.no_serve:
        return 0
    print(
        f"[main] 4/4 serving the promoted models on http://127.0.0.1:{a.port} "
        f"(web page: http://127.0.0.1:{a.port}/ui/). Try:\n"
        f"  curl -F image=@datasets/shapes/VOC/JPEGImages/002000.jpg "
        f"http://127.0.0.1:{a.port}/detect",
        flush=True,
    )
    from vision_cli.serve import serve

    serve(a.host, a.port)
    return 0
