"""A batch prediction job: which model, which options, where; one image's line and files
(``vision.batch.run`` runs a job on an engine)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vision.batch.outputs import atomic_write, index_png
from vision.batch.sources import Item
from vision.data.io import DecodeLimits, ImageError
from vision.errors import DataError

ENGINES = ("local", "ray")
# fault drill for tests: after this many batches the local engine's process exits at once (as
# if killed), or on Ray the first model actor to get there does
KILL_ENV = "VISION_PREDICT_KILL_AFTER"


@dataclass(frozen=True)
class ModelSpec:
    """A model to load where the work runs: a checkpoint and one of its deployable variants
    (``file``: the variant's ONNX model for ``onnx``/``int8``). ``name`` is what the user gave
    (a store tag, a path), for the summary."""

    checkpoint: str
    variant: str = "eager"
    file: str | None = None
    name: str = ""

    def load(self, device: str = "auto"):
        """The predictor: for an exported variant with NumPy decoding, a torch-free
        ``RuntimePredictor`` (on both engines, so their answers are the same), else the
        ``Predictor`` the service builds."""
        runtime = self.runtime()
        if runtime is not None:
            import torch

            return runtime_predictor(self, runtime, torch.get_num_threads())
        from vision.deploy import variant_predictor

        return variant_predictor(self.checkpoint, self.variant, self.file, device=device)

    def runtime(self) -> dict | None:
        """The torch-free predictor's spec (``vision.deploy.runtime_spec``; made with torch,
        once per job), or None when this model runs on torch."""
        if self.file is None:
            return None
        from vision.deploy import runtime_spec

        return runtime_spec(self.checkpoint, self.variant)

    def describe(self) -> dict:
        """What the outputs need of the model, read from its checkpoint without building it:
        ``task``, ``size`` (input), ``classes`` (what a segmenter's class map indexes, or the
        detector's classes)."""
        from vision.data.sample import mask_classes
        from vision.engine.checkpoint import load_checkpoint

        meta = load_checkpoint(self.checkpoint, mmap=True)["meta"]
        names = list(meta["class_names"])
        if meta["task"] == "segmentation":
            names = mask_classes(names, meta.get("background", True))
        return {"task": meta["task"], "size": int(meta["input_size"]), "classes": names}

    @classmethod
    def from_path(cls, path: str | Path) -> ModelSpec:
        """A checkpoint (``.pt``), or an exported variant (``.onnx`` written by ``vision
        optimize``, found again through the ``variants.json`` beside it)."""
        path = Path(path)
        if path.suffix != ".onnx":
            return cls(str(path), name=str(path))
        table = path.parent / "variants.json"
        if not table.is_file():
            raise DataError(
                str(path),
                "an ONNX variant written by `vision optimize`, with its variants.json beside it",
                "no variants.json in its folder",
                "or give the checkpoint and --variant",
            )
        data = json.loads(table.read_text())
        rows = [r for r in data.get("rows", []) if Path(str(r.get("file"))).name == path.name]
        kind = rows[0]["variant"] if rows and "variant" in rows[0] else None
        kind = kind or ("int8" if path.name.endswith(".int8.onnx") else "onnx")
        return cls(str(data["checkpoint"]), kind, str(path), str(path))


def runtime_predictor(spec: ModelSpec, runtime: dict, threads: int):
    """``spec``'s exported variant on NumPy (no torch import): ``threads`` runtime threads."""
    from vision.runtime_predictor import RuntimePredictor

    return RuntimePredictor(runtime, str(spec.file), spec.variant, threads)


@dataclass(frozen=True)
class PredictOptions:
    """The service's options, plus what to write besides the lines."""

    score_threshold: float = 0.25
    max_detections: int = 100
    agnostic_nms: bool = False
    mask_format: str = "png"  # png: index PNG files under masks/; rle: COCO RLE in the line
    save_color: bool = False  # masks with the dataset's colours as their palette
    save_drawn: bool = False  # overlays under drawn/

    def finish(self) -> dict:
        return {
            "score_threshold": self.score_threshold,
            "max_detections": self.max_detections,
            "agnostic_nms": self.agnostic_nms,
        }


@dataclass
class PredictJob:
    model: ModelSpec
    out: Path
    options: PredictOptions = field(default_factory=PredictOptions)
    batch: int = 8
    device: str = "auto"
    workers: int = 2  # decode threads (local engine)
    retry_errors: bool = False
    threads: int | None = None  # torch threads of the model (None: torch's own choice)
    # what an image may be (bytes, pixels, formats): the service's limits, from the environment
    limits: DecodeLimits | None = field(default_factory=DecodeLimits.from_env)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.batch < 1 or self.workers < 1:
            raise ValueError(f"batch and workers: expected >= 1, got {self.batch}, {self.workers}")
        if self.options.mask_format not in ("png", "rle"):
            raise ValueError(f"mask_format: expected png or rle, got {self.options.mask_format!r}")


def read_and_prepare(item: Item, letterbox, limits, keep_image: bool):
    """One item's file → ``(array, info, image or None, decode ms)``, or an ``ImageError``
    (the file missing or unreadable included) for its error line."""
    from vision.data.io import decode_image

    t0 = time.perf_counter()
    try:
        data = Path(item.path).read_bytes()
    except FileNotFoundError:
        return ImageError("missing", item.path, "an image file", "no such file")
    except OSError as e:
        return ImageError("unreadable", item.path, "a readable file", f"{type(e).__name__}: {e}")
    try:
        image = decode_image(data, limits, where=item.path)
        (array,), (info,) = letterbox([image])
    except ImageError as e:
        return e
    return array, info, image if keep_image else None, (time.perf_counter() - t0) * 1e3


def error_line(item: Item, e: ImageError) -> dict:
    """An image that could not be used: its reason and the message the service would give."""
    return {
        "path": item.path,
        "image_id": item.image_id,
        "reason": e.reason,
        "error": f"expected {e.expected}, got {e.got}",
    }


class Recorder:
    """One image's result → its line (and its mask or overlay file under the job folder)."""

    def __init__(self, predictor, options: PredictOptions, out: Path):
        from vision.data.colormap import mask_colors

        self.pred, self.options, self.out = predictor, options, Path(out)
        self.task = predictor.task
        labels = predictor.labels()
        self.names = labels["classes"]
        self.classes = labels.get("mask_classes", self.names)
        self.colors = mask_colors(len(self.classes), labels.get("colors"))

    def record(self, item: Item, image, raw, info: dict, timing: dict) -> dict:
        t0 = time.perf_counter()
        result = self.pred.finish(raw, info, **self.options.finish())
        h, w = info["orig_size"]
        line = {"path": item.path, "image_id": item.image_id, "width": w, "height": h}
        if self.task == "detection":
            line["detections"] = [
                {"box": b, "score": s, "label": self.names[k], "class_id": k}
                for b, s, k in zip(
                    result["boxes"].tolist(),
                    result["scores"].tolist(),
                    result["labels"].tolist(),
                    strict=True,
                )
            ]
        else:
            line.update(self._mask(item, result))
        if self.options.save_drawn and image is not None:
            self._drawn(item, image, result)
        timing["postprocess"] = (time.perf_counter() - t0) * 1e3
        line["timing_ms"] = {k: round(v, 3) for k, v in timing.items()}
        return line

    def _mask(self, item: Item, result: dict) -> dict:
        mask = np.asarray(result["mask"], np.uint8)  # a CPU tensor or an array
        counts = np.bincount(mask.ravel(), minlength=len(self.classes))
        out: dict = {"pixel_counts": {c: int(n) for c, n in zip(self.classes, counts, strict=True)}}
        if self.options.mask_format == "rle":
            out["mask"] = self.pred.render(result, "rle")["mask"]
            return out
        rel = f"masks/{item.rel}.png"
        palette = self.colors if self.options.save_color else None
        atomic_write(self.out / rel, index_png(mask, palette))
        out["mask"] = rel
        return out

    def _drawn(self, item: Item, image: np.ndarray, result: dict) -> None:
        from vision.draw import draw_prediction

        drawn = draw_prediction(
            image,
            result,
            self.names,
            mask_names=self.classes,
            colors=self.colors,
            background=self.classes[:1] == ["background"],
        )
        buf = io.BytesIO()
        Image.fromarray(drawn).save(buf, "JPEG", quality=90)
        atomic_write(self.out / f"drawn/{item.rel}.jpg", buf.getvalue())


def category_ids(names: list[str], categories: list[dict] | None, where: str) -> list[int]:
    """The COCO category id of each class: a COCO source's own ids, matched by name, or
    ``index + 1``."""
    if categories is None:
        return list(range(1, len(names) + 1))
    by_name = {str(c.get("name")): int(c["id"]) for c in categories if "id" in c}
    missing = [n for n in names if n not in by_name and n != "background"]
    if missing:
        raise DataError(
            where,
            f"categories named like the model's classes {names}",
            f"none for {missing}; the JSON has {sorted(by_name)[:20]}",
        )
    return [by_name.get(n, 0) for n in names]
