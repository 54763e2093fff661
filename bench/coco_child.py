"""One COCO evaluation as a whole process, for ``bench.eval_speed``: imports, reading the
files, evaluation; prints one JSON line with the 12 stats, the seconds and the peak RSS.

    python -m bench.coco_child ENGINE GT DT [--stages]

``ENGINE``: ``vision`` (``eval.coco.coco_evaluate`` on the files, numpy engine, and the result
JSON written, as ``vision eval coco`` does), ``faster-coco-eval``
or ``pycocotools``. ``--stages`` times each stage in the same process instead.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def run_vision(gt: str, dt: str, stages: dict | None) -> list[float]:
    if stages is None:  # what `vision eval coco` runs: the files scored, the result written
        from eval.base import nan_to_none
        from eval.coco import coco_evaluate

        r = coco_evaluate(gt, dt, "bbox")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "stats.json").write_text(json.dumps(nan_to_none(r)))
        return [r[k] for k in STATS]
    from eval.coco import evaluate_columns, summarize
    from eval.coco_columns import dt_columns
    from vision.data.coco import load_coco_json

    t = _lap(stages, "import", T0)
    g = load_coco_json(gt, evaluate="bbox")
    t = _lap(stages, "read ground truth", t)
    d = dt_columns(dt, g, "bbox")
    t = _lap(stages, "read detections", t)
    r = evaluate_columns(g, d)
    _lap(stages, "match + accumulate", t)
    s = summarize(r.precision, r.recall, r.iou_thrs, r.max_dets)
    return [s[k] for k in STATS]


def run_faster(gt: str, dt: str, stages: dict | None) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    t = _lap(stages, "import", T0)
    cgt = COCO(gt)
    t = _lap(stages, "read ground truth", t)
    cdt = cgt.loadRes(dt)
    t = _lap(stages, "read detections (loadRes)", t)
    ev = COCOeval_faster(cgt, cdt, "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    t = _lap(stages, "evaluate", t)
    ev.accumulate()
    ev.summarize()
    _lap(stages, "accumulate + summarize", t)
    return [float(v) for v in ev.stats[:12]]


def run_pycocotools(gt: str, dt: str, stages: dict | None) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        t = _lap(stages, "import", T0)
        cgt = COCO(gt)
        t = _lap(stages, "read ground truth", t)
        cdt = cgt.loadRes(dt)
        t = _lap(stages, "read detections (loadRes)", t)
        ev = COCOeval(cgt, cdt, "bbox")
        ev.evaluate()
        t = _lap(stages, "evaluate", t)
        ev.accumulate()
        ev.summarize()
        _lap(stages, "accumulate + summarize", t)
    return [float(v) for v in ev.stats]


def _lap(stages: dict | None, name: str, since: float) -> float:
    now = time.perf_counter()
    if stages is not None:
        stages[name] = now - since
    return now


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started running Python: ``VmHWM`` (per
    address space, so not the parent's pages that a forked child counts before ``exec``, as
    ``ru_maxrss`` does); ``ru_maxrss`` where there is no ``/proc``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ENGINES = {"vision": run_vision, "faster-coco-eval": run_faster, "pycocotools": run_pycocotools}


def main() -> None:
    engine, gt, dt = sys.argv[1:4]
    stages: dict | None = {} if "--stages" in sys.argv else None
    stats = ENGINES[engine](gt, dt, stages)
    print(
        json.dumps(
            {
                "engine": engine,
                "stats": stats,
                "seconds_in_process": time.perf_counter() - T0,
                "stages": stages or {},
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
