"""COCO protocol (bbox and segm): the 12 standard stats and per-class AP.

Three engines compute the per-image matching and accumulation: ``numpy`` (the default, this
project's vectorized engine on columns, :mod:`eval.coco_engine`), ``faster`` (faster-coco-eval,
C++) and ``pycocotools`` (the reference). All return identical arrays on the official cocoapi
fake results (tests check 1e-9 against pycocotools' published numbers) and on random cases
with crowds, ties and every area range (tests compare the arrays with pycocotools').
The summary is computed here from the accumulated ``precision``/``recall`` arrays rather than
by ``COCOeval.summarize``: that one looks up ``maxDets=100`` literally and prints -1 when
``maxDets`` is changed. Here AP and the area breakdowns use the largest ``maxDets``, AR is
reported for every ``maxDets`` value (``AR1, AR10, AR100`` by default), and an undefined
value is NaN, not -1. AP is the 101-point interpolated precision averaged over IoU
0.50:0.05:0.95 (``AP``), at 0.50 (``AP50``) and 0.75 (``AP75``); areas small < 32² ≤ medium
< 96² ≤ large.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from eval import coco_engine
from eval.base import Evaluator, gather
from eval.coco_columns import checked_columns, dt_columns, gt_columns, read_json
from vision.data.coco import load_coco_json
from vision.errors import DataError

ENGINES = ("numpy", "faster", "pycocotools")
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def _mean(x: np.ndarray) -> float:
    x = x[x > -1]
    return float(np.mean(x)) if x.size else float("nan")


def summarize(
    precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray, max_dets: list[int]
) -> dict[str, float]:
    """The standard stats from ``precision[T, R, K, A, M]`` and ``recall[T, K, A, M]``
    (areas ordered all, small, medium, large; ``max_dets`` ascending)."""
    t50 = np.flatnonzero(np.isclose(iou_thrs, 0.5))
    t75 = np.flatnonzero(np.isclose(iou_thrs, 0.75))
    top = len(max_dets) - 1
    out = {
        "AP": _mean(precision[:, :, :, 0, top]),
        # NaN when the thresholds lack 0.5 (or 0.75): the mean of nothing
        "AP50": _mean(precision[t50][:, :, :, 0, top]),
        "AP75": _mean(precision[t75][:, :, :, 0, top]),
        "APs": _mean(precision[:, :, :, 1, top]),
        "APm": _mean(precision[:, :, :, 2, top]),
        "APl": _mean(precision[:, :, :, 3, top]),
    }
    for m, md in enumerate(max_dets):
        out[f"AR{md}"] = _mean(recall[:, :, 0, m])
    out["ARs"] = _mean(recall[:, :, 1, top])
    out["ARm"] = _mean(recall[:, :, 2, top])
    out["ARl"] = _mean(recall[:, :, 3, top])
    return out


def _load_gt(gt: dict | str | Path, iou_type: str) -> dict:
    """The GT dict, read and checked when given as a path."""
    return load_coco_json(gt, evaluate=iou_type) if isinstance(gt, (str, Path)) else gt


def _load_dt(dt: list | str | Path, gt: dict, iou_type: str) -> list:
    """The detections for the faster/pycocotools engines, checked as the numpy engine checks
    them (a bad one is named, never passed on to crash an engine)."""
    where, owned = "predictions", False
    if isinstance(dt, (str, Path)):
        where, owned = str(dt), True
        dt = read_json(Path(dt))
    boxes = checked_columns(dt, gt, iou_type, where).boxes
    if owned:
        return dt
    if boxes is None:
        return [dict(d) for d in dt]  # the engines add fields in place: copies
    # boxes as lists of floats: pycocotools compares the first with [] (a NumPy box fails)
    return [{**d, "bbox": b} for d, b in zip(dt, boxes.tolist(), strict=True)]


def _exact_as_double(gt: dict) -> None:
    """faster-coco-eval holds ids as doubles: two ids beyond 2**53 can merge, so they are
    refused for that engine (the numpy and pycocotools engines keep them exact)."""
    for key in ("images", "categories"):
        big = [x["id"] for x in gt[key] if abs(x["id"]) > 2**53]
        if big:
            want = "ids within ±2**53 for engine 'faster' (it holds ids as doubles)"
            raise DataError(f"ground truth {key}", f"{want}; fix: engine 'numpy'", f"id {big[0]}")


def _run_engine(gt: dict, dt: list, iou_type: str, engine: str, img_ids, max_dets):
    if engine == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        cgt = COCO(gt)
        cdt = _fast_results(cgt, dt, iou_type, COCO) if dt else COCO()
        ev = COCOeval_faster(cgt, cdt, iou_type, print_function=lambda *a, **k: None)
    elif engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            cgt = COCO()
            cgt.dataset = gt
            cgt.createIndex()
            cdt = cgt.loadRes(dt) if dt else COCO()
        ev = COCOeval(cgt, cdt, iou_type)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    if max_dets is not None:
        ev.params.maxDets = sorted(int(m) for m in max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _fast_results(cgt, dt: list, iou_type: str, coco_cls):
    """The results object ``loadRes`` would build, minus its per-box polygons (bbox evaluation
    never reads them): ids, areas and ``iscrowd`` set in one pass."""
    if iou_type != "bbox":
        return cgt.loadRes(dt)
    for i, d in enumerate(dt, 1):
        b = d["bbox"]
        d["area"], d["id"], d["iscrowd"] = b[2] * b[3], i, 0
    res = coco_cls()
    res.dataset = {
        "images": list(cgt.dataset["images"]),
        "annotations": dt,
        "categories": list(cgt.dataset["categories"]),
    }
    res.createIndex()
    return res


def coco_evaluate(
    gt: dict | str | Path,
    dt: list | str | Path,
    iou_type: str = "bbox",
    engine: str = "numpy",
    img_ids=None,
    max_dets=None,
) -> dict[str, Any]:
    """COCO stats of detections ``dt`` against ``gt`` (dicts/lists or JSON paths).

    Returns the stats (``AP``... as fractions, NaN when undefined) plus ``per_class``
    ``{class name: AP}`` and ``protocol``, a label of what was computed.
    """
    if iou_type not in ("bbox", "segm"):
        raise DataError("iou_type", "'bbox' or 'segm'", repr(iou_type))
    if engine not in ENGINES:
        raise ValueError(f"COCO engine: expected one of {ENGINES}, got {engine!r}")
    gt = _load_gt(gt, iou_type)
    if engine == "numpy":
        cols = dt_columns(dt, gt, iou_type)
        if not len(cols.scores):
            return _empty_result(gt, max_dets)
        r = evaluate_columns(gt, cols, iou_type, img_ids, max_dets)
    else:
        # shallow copies (the engines only add keys to annotations); pycocotools reads every
        # annotation's iscrowd: an absent one is 0, as the numpy engine reads it
        gt = {**gt, "annotations": [{"iscrowd": 0, **a} for a in gt["annotations"]]}
        if engine == "faster":
            _exact_as_double(gt)
        dt = _load_dt(dt, gt, iou_type)
        if not dt:  # every engine chokes on an empty result set; the answer is well defined
            return _empty_result(gt, max_dets)
        ev = _run_engine(gt, dt, iou_type, engine, img_ids, max_dets)
        p = ev.params
        r = coco_engine.Result(np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"]),
                               np.asarray(p.iouThrs), np.asarray(p.recThrs), list(p.maxDets),
                               list(p.catIds))  # fmt: skip
    precision = r.precision
    stats = summarize(precision, r.recall, r.iou_thrs, r.max_dets)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    stats["per_class"] = {
        names[c]: _mean(precision[:, :, k, 0, -1]) for k, c in enumerate(r.cat_ids)
    }
    stats["pr_curves"] = pr_curves(precision, r.iou_thrs, r.rec_thrs,
                                   [names[c] for c in r.cat_ids])  # fmt: skip
    stats["protocol"] = (
        f"COCO {iou_type} AP@[.50:.05:.95], 101-point, maxDets={r.max_dets}, engine={engine}"
    )
    return stats


def evaluate_columns(
    gt: dict, cols: coco_engine.Columns, iou_type: str = "bbox", img_ids=None, max_dets=None
) -> coco_engine.Result:
    """The numpy engine's arrays for detections already read into columns (``dt_columns``,
    at least one detection) against the ground-truth dict ``gt``."""
    if img_ids is None:
        img_ids = [im["id"] for im in gt["images"]]
    md = sorted(int(m) for m in max_dets) if max_dets is not None else [1, 10, 100]
    cat_ids = [c["id"] for c in gt["categories"]]
    return coco_engine.evaluate(gt_columns(gt, iou_type), cols, np.asarray(img_ids, np.int64),
                                np.asarray(cat_ids, np.int64), md)  # fmt: skip


def pr_curves(precision: np.ndarray, iou_thrs: np.ndarray, rec_thrs: np.ndarray, names) -> dict:
    """Each class's interpolated precision at the 101 recall points (all areas, the largest
    ``maxDets``): at IoU 0.5 (``iou50``) and averaged over IoU .50:.95 (``iou50_95``); None
    where the COCO arrays leave it undefined (-1)."""
    pr = precision[:, :, :, 0, -1]  # (T, R, K)
    t50 = np.flatnonzero(np.isclose(iou_thrs, 0.5))
    valid = pr > -1
    mean = np.where(valid.any(0), np.where(valid, pr, 0).sum(0) / np.maximum(valid.sum(0), 1), -1)

    def curve(values: np.ndarray) -> list[float | None]:
        return [None if v < 0 else float(v) for v in values]

    return {
        "recall": rec_thrs.tolist(),
        "iou50": {n: curve(pr[t50[0], :, k]) for k, n in enumerate(names)} if t50.size else {},
        "iou50_95": {n: curve(mean[:, k]) for k, n in enumerate(names)},
    }


AREAS = {"": (0, 1e10), "s": (0, 32**2), "m": (32**2, 96**2), "l": (96**2, 1e10)}


def _empty_result(gt: dict, max_dets) -> dict[str, Any]:
    """The stats of an empty result set as the COCO API defines them: 0 where ground truth
    exists (per area range, ends included, crowd regions ignored), NaN where none does."""
    md = sorted(max_dets) if max_dets else [1, 10, 100]
    real = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    val = {
        r: 0.0 if any(lo <= a["area"] <= hi for a in real) else float("nan")
        for r, (lo, hi) in AREAS.items()
    }
    out: dict[str, Any] = {k: val[""] for k in ("AP", "AP50", "AP75")}
    out.update({f"AP{r}": val[r] for r in "sml"})
    out.update({f"AR{m}": val[""] for m in md})
    out.update({f"AR{r}": val[r] for r in "sml"})
    present = {a["category_id"] for a in real}
    out["per_class"] = {
        c["name"]: (0.0 if c["id"] in present else float("nan")) for c in gt["categories"]
    }
    out["pr_curves"] = {"recall": [], "iou50": {}, "iou50_95": {}}
    out["protocol"] = "COCO AP@[.50:.05:.95], 101-point (no detections)"
    return out


KEY = {"bbox": "coco", "segm": "coco_segm"}  # the result key of each IoU type


class COCOEvaluator(Evaluator):
    """COCO bbox (and optionally segm) evaluation of a model's outputs, reported under
    ``coco`` (bbox) and ``coco_segm``.

    ``gt`` is the COCO dict of the evaluated split (see ``coco_gt_from_dataset``); ``cat_ids[k]``
    is the category id of contiguous label ``k``. ``process`` takes ``inputs`` with
    ``image_id`` and ``outputs`` with ``boxes`` (x1y1x2y2, original image pixels), ``scores``,
    ``labels`` and optionally ``masks`` (``(N, H, W)`` bool) for ``segm``.
    """

    def __init__(
        self,
        gt: dict,
        cat_ids: list[int] | None = None,
        iou_types=("bbox",),
        engine: str = "numpy",
        max_dets=None,
        id_map: dict | None = None,
    ):
        self.gt, self.iou_types, self.engine, self.max_dets = gt, tuple(iou_types), engine, max_dets
        self.primary = f"{KEY[self.iou_types[0]]}/AP"
        self.cat_ids = cat_ids or sorted(c["id"] for c in gt["categories"])
        self.id_map = id_map or {}
        self.reset()

    @classmethod
    def from_dataset(cls, ds, names: list[str], **kw) -> COCOEvaluator:
        """An evaluator whose ground truth is a reader's samples (string ids are mapped)."""
        gt = coco_gt_from_dataset(ds, names, masks="segm" in kw.get("iou_types", ()))
        id_map = {s.image_id: im["id"] for s, im in zip(ds.samples, gt["images"], strict=True)}
        return cls(gt, id_map=id_map, **kw)

    def reset(self) -> None:
        self._dets: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        from pycocotools import mask as mask_utils

        for inp, out in zip(inputs, outputs, strict=True):
            boxes = np.asarray(_np(out["boxes"]), np.float64).reshape(-1, 4)
            scores = np.asarray(_np(out["scores"]), np.float64).reshape(-1)
            labels = np.asarray(_np(out["labels"]), np.int64).reshape(-1)
            masks = _np(out["masks"]) if "masks" in out and "segm" in self.iou_types else None
            for j in range(len(boxes)):
                x1, y1, x2, y2 = boxes[j].tolist()
                d = {
                    "image_id": self.id_map.get(inp["image_id"], inp["image_id"]),
                    "category_id": self.cat_ids[labels[j]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(scores[j]),
                }
                if masks is not None:
                    rle = mask_utils.encode(np.asfortranarray(masks[j].astype(np.uint8)))
                    d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                self._dets.append(d)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        dets = [d for part in gather(self._dets) for d in part]
        return {
            KEY[t]: coco_evaluate(self.gt, dets, t, self.engine, max_dets=self.max_dets)
            for t in self.iou_types
        }


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def coco_gt_from_dataset(ds, names: list[str], masks: bool = False) -> dict:
    """A COCO ground-truth dict of a reader's samples (original pixel coordinates); image ids
    are the samples' own when they are integers, else 1..N in order."""
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for i, s in enumerate(ds.samples):
        img_id = s.image_id if isinstance(s.image_id, int) else i + 1
        images.append(
            {"id": img_id, "width": s.width, "height": s.height, "file_name": s.path.name}
        )
        inst = ds.instance_masks(i) if masks else None
        for j in range(s.num_objects):
            x1, y1, x2, y2 = s.boxes[j].tolist()
            a = {
                "id": len(anns) + 1,
                "image_id": img_id,
                "category_id": int(s.labels[j]) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(s.crowd[j]),
            }
            if inst is not None:
                rle = mask_utils.encode(np.asfortranarray(inst[j].astype(np.uint8)))
                a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                a["area"] = float(mask_utils.area(rle))
            anns.append(a)
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
    }
