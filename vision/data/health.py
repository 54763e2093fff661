"""Dataset health report: counts per class and split, size buckets, flags, and every problem.

Problems that make a dataset unusable (unreadable or missing files, invalid boxes, unknown
classes, masks of the wrong size or with unknown values, the same image in two splits) are
*errors*; duplicates inside one split, and items a config's ``skip_invalid: true`` skips on
purpose, are *warnings* (with their count).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from vision.config import DatasetConfig, load_config
from vision.data.build import build_dataset
from vision.data.io import check_labels, decode_image, read_mask
from vision.data.sample import mask_classes
from vision.errors import DataError

SIZE_BUCKETS = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))


def size_bucket_counts(areas: np.ndarray) -> dict[str, int]:
    """COCO area buckets: small < 32², medium < 96², large ≥ 96² (pixels)."""
    return {name: int(((areas >= lo) & (areas < hi)).sum()) for name, lo, hi in SIZE_BUCKETS}


# box size = sqrt(area) in pixels; the last bin is open (None: no upper edge)
SIZE_EDGES = (0, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def box_size_histogram(areas: np.ndarray) -> dict:
    """Objects per box size (the square root of the area, px): ``edges`` (the last bin open,
    its upper edge None) and ``counts``."""
    sizes = np.sqrt(np.asarray(areas, np.float64))
    bins = np.searchsorted(np.asarray(SIZE_EDGES, np.float64), sizes, side="right") - 1
    counts = np.bincount(np.clip(bins, 0, None), minlength=len(SIZE_EDGES))
    return {"edges": [*SIZE_EDGES, None], "counts": counts[: len(SIZE_EDGES)].tolist()}


def check_dataset(cfg: DatasetConfig | str | Path, decode: bool = True) -> dict:
    """Build the health report of every task and split of a dataset config."""
    if not isinstance(cfg, DatasetConfig):
        cfg = load_config(cfg)
    report: dict = {
        "dataset": cfg.name,
        "root": str(cfg.root),
        "classes": cfg.names,
        "splits": {},
        "errors": [],
        "warnings": [],
    }
    digests: dict[str, set[tuple[str, str]]] = defaultdict(set)
    decoded: dict[Path, str | None] = {}
    for task in ("detection", "segmentation"):
        if not getattr(cfg, task):
            continue
        for split in getattr(cfg, task):
            key = f"{task}/{split}"
            try:
                ds = build_dataset(cfg, task, split, strict=False)
            except DataError as e:
                report["errors"].append(f"{key}: {e}")
                continue
            report["splits"][key] = _split_report(
                cfg, ds, task, key, decode, decoded, digests, report
            )
    for digest, places in digests.items():
        splits = {s for s, _ in places}
        files = sorted(p for _, p in places)
        if len({p for p in files}) < 2:
            continue
        msg = f"duplicate image content {digest[:12]}: {files}"
        split_names = {s.split("/")[1] for s in splits}
        (report["errors"] if len(split_names) > 1 else report["warnings"]).append(msg)
    report["ok"] = not report["errors"]
    return report


def _split_report(cfg, ds, task, key, decode, decoded, digests, report) -> dict:
    per_class = Counter()
    images_per_class = Counter()
    areas = []
    difficult = crowd = 0
    unreadable = bad_masks = 0
    pixels = np.zeros(256, np.int64)  # label-map values over the split (segmentation)
    for i, s in enumerate(ds.samples):
        for k in s.labels.tolist():
            per_class[cfg.names[k]] += 1
        for k in set(s.labels.tolist()):
            images_per_class[cfg.names[k]] += 1
        areas.append(s.areas())
        difficult += int(s.difficult.sum())
        crowd += int(s.crowd.sum())
        if decode:
            if s.path not in decoded:
                decoded[s.path] = _decode_problem(s.path, digests, key)
            if decoded[s.path]:
                unreadable += 1
                report["errors"].append(f"{key}: {decoded[s.path]}")
        if task == "segmentation" and decode:
            problem = _mask_problem(ds, i, s, len(mask_classes(cfg.names, cfg.background)), pixels)
            if problem:
                bad_masks += 1
                report["errors"].append(f"{key}: {problem}")
    # items the config chose to skip (``skip_invalid: true``) are warnings, counted; otherwise
    # every item the reader could not use is an error
    lenient = bool(cfg.extra.get("skip_invalid", False))
    sink = report["warnings"] if lenient else report["errors"]
    if lenient and ds.skips.total:
        sink.append(f"{key}: {ds.skips.total} items skipped (skip_invalid: true in the config)")
    for msg in ds.skips.messages:
        sink.append(f"{key}: {msg}")
    if ds.skips.total > len(ds.skips.messages):
        sink.append(f"{key}: ... and {ds.skips.total - len(ds.skips.messages)} more")
    all_areas = np.concatenate(areas) if areas else np.zeros(0)
    extra = {}
    if task == "segmentation" and decode:  # class balance of the label maps, void apart
        extra["pixels_per_class"] = {
            c: int(pixels[k]) for k, c in enumerate(mask_classes(cfg.names, cfg.background))
        } | {"void": int(pixels[255])}
    return {
        "images": len(ds),
        "objects": int(sum(per_class.values())),
        "objects_per_class": {n: per_class.get(n, 0) for n in cfg.names},
        "images_per_class": {n: images_per_class.get(n, 0) for n in cfg.names},
        "size_buckets": size_bucket_counts(all_areas),
        "box_sizes": box_size_histogram(all_areas),
        "difficult": difficult,
        "crowd": crowd,
        "skipped": ds.skips.as_dict(),
        "unreadable_images": unreadable,
        "bad_masks": bad_masks,
        **extra,
    }


def _decode_problem(path: Path, digests, key: str) -> str | None:
    try:
        data = path.read_bytes()  # read once: hashed for duplicates, then decoded
        digests[hashlib.sha1(data).hexdigest()].add((key, str(path)))
        decode_image(data, exif=False, where=str(path))
    except (DataError, OSError) as e:
        return str(e)
    return None


def _mask_problem(ds, i: int, s, num_indices: int, pixels: np.ndarray) -> str | None:
    """What is wrong with sample ``i``'s label map: size, or values outside
    ``0..num_indices - 1`` and the ignore index; its values are added to ``pixels``."""
    try:
        m = ds.semantic_mask(i) if hasattr(ds, "semantic_mask") else read_mask(s.mask_path)
    except DataError as e:
        return str(e)
    counts = np.bincount(m.ravel(), minlength=256)
    pixels += counts
    if m.shape != (s.height, s.width) and s.height:
        return f"{s.mask_path}: expected a {s.width}x{s.height} mask, got {m.shape[1]}x{m.shape[0]}"
    try:  # (one histogram for the pixel counts and the value check)
        check_labels(m, num_indices, str(s.mask_path), counts=counts)
    except DataError as e:
        return str(e)
    return None


def format_report(report: dict) -> str:
    """A terminal table of a health report."""
    names = report["classes"]
    lines = [f"Dataset {report['dataset']} ({report['root']})"]
    head = (
        f"{'split':<24}{'images':>8}{'objects':>9}{'small':>7}{'medium':>8}{'large':>7}"
        f"{'diff':>6}{'crowd':>7}{'skipped':>9}"
    )
    lines += [head, "-" * len(head)]
    for key, r in report["splits"].items():
        b = r["size_buckets"]
        lines.append(
            f"{key:<24}{r['images']:>8}{r['objects']:>9}{b['small']:>7}{b['medium']:>8}"
            f"{b['large']:>7}{r['difficult']:>6}{r['crowd']:>7}{r['skipped']['total']:>9}"
        )
    lines.append("")
    seg = {k: r["pixels_per_class"] for k, r in report["splits"].items() if "pixels_per_class" in r}
    boxes = {k: r for k, r in report["splits"].items() if k.startswith("detection/")}
    labels = [*names, *(c for p in seg.values() for c in p)]  # label maps add background, void
    width = max([len(n) for n in labels] + [len("pixels")])
    if boxes or not seg:  # objects per class (a set with no split read still lists its classes)
        lines.append(f"{'class':<{width}}  " + "  ".join(f"{k:>20}" for k in boxes))
        for n in names:
            cells = "  ".join(
                f"{r['objects_per_class'][n]:>10} obj {r['images_per_class'][n]:>5} im"
                for r in boxes.values()
            )
            lines.append(f"{n:<{width}}  {cells}")
        lines.append("")
    if seg:  # label-map class balance: share of the split's pixels
        lines.append(f"{'pixels':<{width}}  " + "  ".join(f"{k:>20}" for k in seg))
        for c in next(iter(seg.values())):
            cells = "  ".join(
                f"{100 * p[c] / max(1, sum(p.values())):>19.2f}%" for p in seg.values()
            )
            lines.append(f"{c:<{width}}  {cells}")
        lines.append("")
    for w in report["warnings"]:
        lines.append(f"WARNING {w}")
    for e in report["errors"][:30]:
        lines.append(f"ERROR {e}")
    if len(report["errors"]) > 30:
        lines.append(f"... {len(report['errors']) - 30} more errors in the JSON report")
    lines.append("OK: no errors" if report["ok"] else f"FAILED: {len(report['errors'])} errors")
    return "\n".join(line.rstrip() for line in lines)
