"""Errors that say what was expected, what was found, and where."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input data. The message names the location, the expectation and what arrived."""

    def __init__(self, where: str, expected: str, got: str, fix: str | None = None):
        self.where, self.expected, self.got, self.fix = where, expected, got, fix
        msg = f"{where}: expected {expected}, got {got}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


@dataclass
class SkipLog:
    """Items skipped under lenient loading: counts by reason plus the first messages in full."""

    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    first: dict[str, str] = field(default_factory=dict)  # the first message of each reason
    keep: int = 50

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, message)
        if len(self.messages) < self.keep:
            self.messages.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "skipped 0 items"
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))
        return f"skipped {self.total} items: {parts}"

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.messages}


def handle(err: DataError, strict: bool, skips: SkipLog | None, reason: str) -> None:
    """Raise ``err`` when strict, otherwise record it in ``skips`` under ``reason``."""
    if strict or skips is None:
        raise err
    skips.add(reason, str(err))


class Unsupported(Exception):
    """This model has no such form (an export, a deployable variant): the message says why."""
