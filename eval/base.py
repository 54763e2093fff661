"""The evaluator protocol, a composite, and gathering across ``torch.distributed`` ranks."""

from __future__ import annotations

import math
from typing import Any

import torch.distributed as dist


class Evaluator:
    """Base class: ``reset()``, ``process(inputs, outputs)`` per batch, ``evaluate()``.

    ``evaluate`` returns ``{task: {metric: value}}`` with NaN for undefined metrics, and is
    collective under ``torch.distributed``: every rank must call it and gets the same result.
    """

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError


class Evaluators(Evaluator):
    """Runs several evaluators; refuses two that report the same task key."""

    def __init__(self, evaluators: list[Evaluator]):
        self.evaluators = list(evaluators)

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
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def nan_to_none(x: Any) -> Any:
    """Recursively replace NaN floats with ``None`` (JSON ``null``)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    return x
