"""One image's model output → original pixels → a JSON-ready answer.

``info`` (made by ``Predictor.resize``) holds ``orig_size`` (h, w) and ``scale`` (longest-side
resize, padding at the bottom/right). Results are dicts of CPU tensors: detection ``boxes``
(x1y1x2y2, original pixels), ``scores``, ``labels``; segmentation ``mask`` (uint8 class map,
``0`` = background, ``k + 1`` = class ``k``, or ``k`` = class ``k`` for a model trained
without a background class, see ``ModelMeta.background``).
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np
from PIL import Image

from vision.data.colormap import mask_colors
from vision.data.sample import mask_classes

MASK_FORMATS = ("png", "rle")


def detections_to_original(
    out: dict,
    info: dict,
    score_threshold: float = 0.0,
    max_detections: int | None = None,
    agnostic_iou: float | None = None,
) -> dict:
    """Boxes above ``score_threshold`` in original pixels, best first, at most
    ``max_detections``; ``agnostic_iou``: also suppress overlaps across classes at that IoU."""
    h, w = info["orig_size"]
    keep = (out["scores"] >= score_threshold).nonzero().flatten()
    if agnostic_iou is not None and len(keep):
        from torchvision.ops import nms

        kept = nms(out["boxes"][keep].float(), out["scores"][keep].float(), agnostic_iou)
        keep = keep[kept]
    boxes = (out["boxes"][keep].float() / info["scale"]).cpu()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    scores, labels = out["scores"][keep].float().cpu(), out["labels"][keep].cpu()
    n = max_detections
    return {"boxes": boxes[:n], "scores": scores[:n], "labels": labels[:n]}


def valid_size(info: dict) -> tuple[int, int]:
    """The image's part ``(rows, cols)`` of a letterboxed input (the rest is padding)."""
    h, w = info["orig_size"]
    return max(1, round(h * info["scale"])), max(1, round(w * info["scale"]))


def mask_to_original(logits, info: dict) -> dict:
    """The class map at the original size from one image's ``(K, S, S)`` padded logits."""
    import torch

    h, w = info["orig_size"]
    rh, rw = valid_size(info)
    crop = np.ascontiguousarray(logits[:, :rh, :rw].float().cpu().numpy())
    return {"mask": torch.from_numpy(upsample_argmax(crop, h, w))}


# the class map is made in strips of at most this many output pixels (bounded memory)
STRIP_ELEMENTS = 1 << 22


def upsample_argmax(logits: np.ndarray, h: int, w: int) -> np.ndarray:
    """Class map ``(h, w)`` uint8: the argmax of ``(K, rh, rw)`` float32 logits upsampled
    bilinearly (``align_corners=False``, as ``F.interpolate``), without upsampling every logit.

    A bilinear output pixel mixes four source pixels with non-negative weights; where those
    four have the same argmax class, the mixture's argmax is that class too (a convex
    combination keeps the maximum, and the first-index rule for ties). So the class is read
    from the low-resolution argmax, and only pixels whose four taps disagree (class edges)
    get their K logits interpolated. Rows are done in strips of ``STRIP_ELEMENTS`` pixels,
    so memory stays bounded whatever the image size (a 40-megapixel upload). NumPy, one
    thread: a few dozen small array operations, where torch's per-operation dispatch (and its
    OpenMP team, when other work shares the cores) cost several times more."""
    k, rh, rw = logits.shape
    low = channel_argmax(logits)
    flat = logits.reshape(k, rh * rw)
    # uniform[i, j]: the 2x2 source block at (i, j) has one class (borders clamp as the taps do)
    nxt_r = np.concatenate([low[1:], low[-1:]], 0)
    uniform = (low == nxt_r) & (low == np.concatenate([low[:, 1:], low[:, -1:]], 1))
    uniform &= low == np.concatenate([nxt_r[:, 1:], nxt_r[:, -1:]], 1)
    y0, y1, wy = _bilinear_taps(rh, h)
    x0, x1, wx = _bilinear_taps(rw, w)
    out = np.empty((h, w), dtype=np.uint8)
    step = max(1, STRIP_ELEMENTS // w)
    for s in range(0, h, step):
        rows = slice(s, min(s + step, h))
        ya = y0[rows]
        strip = low[ya][:, x0]
        edge = np.flatnonzero(~uniform[ya][:, x0])  # faster than a 2-D nonzero
        if edge.size:
            r, c = np.divmod(edge, w)
            a, b = wy[rows][r], wx[c]
            ta, tb, ca, cb = ya[r] * rw, y1[rows][r] * rw, x0[c], x1[c]
            tap = lambda i: np.take(flat, i, axis=1)  # noqa: E731 - (K, n) logits at flat i
            top = tap(ta + ca) * (1 - b) + tap(ta + cb) * b
            bot = tap(tb + ca) * (1 - b) + tap(tb + cb) * b
            strip[r, c] = channel_argmax(top * (1 - a) + bot * a)
        out[rows] = strip
    return out


def channel_argmax(logits: np.ndarray) -> np.ndarray:
    """``logits.argmax(0)`` as uint8 (first index on ties), one pass per class: faster than a
    reduction over the leading (strided) axis for the few classes here."""
    best, idx = logits[0].copy(), np.zeros(logits.shape[1:], dtype=np.uint8)
    for c in range(1, logits.shape[0]):
        idx[logits[c] > best] = c
        np.maximum(best, logits[c], out=best)
    return idx


@lru_cache(maxsize=256)  # at most 256 x 12 bytes x the longest side (~25 MB at 8k px)
def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """Source indices and float32 weights of bilinear resizing ``n_in`` → ``n_out`` as torch
    computes them with ``align_corners=False`` (scale ``n_in / n_out`` in float32,
    negative source coordinates clamp to 0). Cached: a dataset's images share a few sizes."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - 0.5, 0)
    lo = np.minimum(src.astype(np.int32), n_in - 1)  # src >= 0: truncation is the floor
    hi = np.minimum(lo + 1, n_in - 1)
    taps = lo, hi, src - lo.astype(np.float32)
    for t in taps:
        t.flags.writeable = False
    return taps


def render_detections(res: dict, names: list[str]) -> dict:
    """``{detections: [{box, score, label, class_id}]}``, boxes rounded to 1e-3 px."""
    return {
        "detections": [
            {
                "box": [round(float(v), 3) for v in b],
                "score": round(float(s), 5),
                "label": names[int(k)],
                "class_id": int(k),
            }
            for b, s, k in zip(
                res["boxes"].tolist(), res["scores"].tolist(), res["labels"].tolist(), strict=True
            )
        ]
    }


def render_mask(
    res: dict, classes: list[str], mask_format: str = "png", colors: list | None = None
) -> dict:
    """Classes (the class of each map index), their colours, per-class pixel counts, and the
    class map as a PNG (base64) or per-class COCO RLE."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format: expected one of {MASK_FORMATS}, got {mask_format!r}")
    mask = np.asarray(res["mask"])  # a CPU tensor or an array
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    if len(counts) > len(classes):
        raise ValueError(
            f"mask: expected class indices below {len(classes)} (one per class name), got "
            f"{len(counts) - 1}; fix: pass the class list the model was trained with"
        )
    out = {
        "classes": classes,
        "colors": {
            c: list(rgb) for c, rgb in zip(classes, mask_colors(len(classes), colors), strict=True)
        },
        "pixel_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
    }
    if mask_format == "png":
        buf = io.BytesIO()
        Image.fromarray(mask).save(
            buf, "PNG", compress_level=1
        )  # 1: fast, masks still compress well
        out["mask"] = {"format": "png", "data": base64.b64encode(buf.getvalue()).decode()}
        return out
    from pycocotools import mask as mask_utils

    rles = {}
    for k in np.flatnonzero(counts):
        rle = mask_utils.encode(np.asfortranarray((mask == k).astype(np.uint8)))
        rles[classes[k]] = {"size": rle["size"], "counts": rle["counts"].decode()}
    out["mask"] = {"format": "rle", "per_class": rles}
    return out


def result_labels(meta) -> dict:
    """What a model's answers index: ``classes``; for a segmenter also ``mask_classes`` (the
    class of each class-map index) and ``colors`` (its RGB, the dataset's when it has them)."""
    if meta.task == "detection":
        return {"classes": meta.class_names}
    classes = mask_classes(meta.class_names, meta.background)
    rgb = mask_colors(len(classes), meta.colors)
    return {"classes": meta.class_names, "mask_classes": classes, "colors": [list(c) for c in rgb]}


def render_result(meta, result: dict, mask_format: str = "png") -> dict:
    """A result as JSON-ready data (detections, or class counts and the mask)."""
    if meta.task == "detection":
        return render_detections(result, meta.class_names)
    classes = mask_classes(meta.class_names, meta.background)
    return render_mask(result, classes, mask_format, meta.colors)
