"""The evaluator protocol, a composite, and gathering across ``torch.distributed`` ranks."""

from __future__ import annotations

import math
from typing import Any


class Evaluator:
    """Base class: ``reset()``, ``process(inputs, outputs)`` per batch, ``evaluate()``.

    ``evaluate`` returns ``{task: {metric: value}}`` with NaN for undefined metrics, and is
    collective under ``torch.distributed``: every rank must call it and gets the same result.
    ``primary`` names the metric that ranks models (``"task/metric"``, e.g. ``coco/AP``);
    ``scalars(results)`` is the flat ``{"task/metric": number}`` view logs and checkpoints keep.
    """

    primary: str = ""

    def scalars(self, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        return flatten(results)

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError


class Evaluators(Evaluator):
    """Runs several evaluators; refuses two that report the same task key."""

    def __init__(self, evaluators: list[Evaluator], primary: str | None = None):
        self.evaluators = list(evaluators)
        self.primary = primary or next((e.primary for e in self.evaluators if e.primary), "")

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, inputs, outputs) -> None:
        for e in self.evaluators:
            e.process(inputs, outputs)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for e in self.evaluators:
            for task, metrics in e.evaluate().items():
                if task in results:
                    raise ValueError(
                        f"two evaluators report task '{task}': expected unique task "
                        f"keys, got {type(e).__name__} repeating it"
                    )
                results[task] = metrics
        return results


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one element outside a distributed run)."""
    import torch.distributed as dist  # here: scoring files needs no torch at import

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def flatten(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{task: {metric: value}}`` → ``{"task/metric": value}`` for the scalar values (numbers,
    and ``None``, the JSON form of NaN); nested tables such as per-class results and curves
    are left out."""
    return {
        f"{task}/{k}": v
        for task, m in results.items()
        for k, v in m.items()
        if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
    }


def nan_to_none(x: Any) -> Any:
    """Recursively replace NaN floats with ``None`` (JSON ``null``)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    return x
