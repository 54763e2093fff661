"""Who may call the service, and how often: optional API keys and per-client rate limits.

**Keys.** ``VISION_API_KEYS_FILE`` names a file of ``name:sha256-of-key`` lines (``vision keys
create NAME`` writes one and prints the key once); with it set, the guarded routes need
``Authorization: Bearer <key>`` or ``x-api-key: <key>``. The key is hashed and compared with
every stored hash in constant time (``hmac.compare_digest``); a missing and a wrong key get the
same 401 with ``WWW-Authenticate``. Only a key's *name* is ever logged or counted. The file is
read again when it changes (checked at most once a second), so a key removed from it is
refused from the next second on, without a restart.

**Rate.** ``VISION_RATE`` (``20/s,burst=40``; ``/s``, ``/min`` or ``/h``) gives every client a
token bucket: a key's name when keys are on, else the client's address. A request over the
rate gets 429 with ``Retry-After`` (the seconds until a token is back) before its body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import prometheus_client

from vision.errors import DataError

KEYS_ENV, RATE_ENV = "VISION_API_KEYS_FILE", "VISION_RATE"
KEY_PREFIX = "vk_"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
UNAUTHORIZED = "a valid API key is required: Authorization: Bearer <key>, or x-api-key: <key>"

AUTH_REFUSED = prometheus_client.Counter(
    name="vision_auth_refused",
    documentation="Requests refused with 401, by the key name given (missing / unknown)",
    labelnames=["key"],
)
RATE_LIMITED = prometheus_client.Counter(
    name="vision_rate_limited",
    documentation="Requests refused with 429, by key name (or 'address' without keys)",
    labelnames=["key"],
)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str, where: str) -> dict[str, str]:
    """``{name: sha256 hex}`` from a keys file's text (``#`` comments and blank lines
    skipped); a malformed line is an error naming it."""
    keys: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, hashed = line.partition(":")
        if not NAME.match(name) or not re.fullmatch(r"[0-9a-f]{64}", hashed):
            raise DataError(f"{where}:{n}", "name:sha256-hex (64 lowercase hex digits)",
                            repr(line[:20] + ("…" if len(line) > 20 else "")))  # fmt: skip
        if name in keys:
            raise DataError(f"{where}:{n}", "each key name once", f"{name!r} again")
        keys[name] = hashed
    return keys


def create_key(path: Path | str, name: str) -> str:
    """A new key for ``name``, its hash appended to the keys file; returns the key (shown
    once: only its hash is kept)."""
    path = Path(path)
    if not NAME.match(name):
        raise DataError("key name", "1-64 letters, digits, '_', '-' or '.'", repr(name))
    existing = parse_keys(path.read_text(), str(path)) if path.is_file() else {}
    if name in existing:
        raise DataError(str(path), "a new key name", f"{name!r} already there (revoke it first)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{name}:{digest(key)}\n")
    os.chmod(path, 0o600)
    return key


def revoke_key(path: Path | str, name: str) -> None:
    """Remove ``name``'s line from the keys file (a running service stops accepting the key
    within a second)."""
    path = Path(path)
    keys = parse_keys(path.read_text(), str(path)) if path.is_file() else {}
    if name not in keys:
        raise DataError(str(path), f"a key named {name!r}", f"names {sorted(keys)}")
    del keys[name]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{n}:{h}\n" for n, h in keys.items()))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class KeyRing:
    """The keys file as the service reads it, re-read when it changes."""

    def __init__(self, path: Path | str, check_every_s: float = 1.0):
        self.path, self.check_every_s = Path(path), check_every_s
        self.keys = parse_keys(self.path.read_text(), str(self.path))  # fail at start-up
        self._mtime, self._checked = self._stat(), time.monotonic()

    def _stat(self) -> tuple:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return
        self._checked = now
        try:
            stamp = self._stat()
            if stamp != self._mtime:
                self.keys = parse_keys(self.path.read_text(), str(self.path))
                self._mtime = stamp
        except (OSError, DataError):
            self.keys = {}  # a file gone or broken: every key refused until it is fixed

    def name_of(self, key: str | None) -> str | None:
        """The name of a presented key, or None; every stored hash is compared, in constant
        time each, whether or not an earlier one matched."""
        self._refresh()
        if not key:
            return None
        given, found = digest(key), None
        for name, hashed in self.keys.items():
            if hmac.compare_digest(given, hashed):
                found = name
        return found


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key") or None


@dataclass
class Rate:
    per_s: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``20/s,burst=40``, ``600/min``, ``1000/h`` (burst: the per-period count, at least
        1, unless given)."""
        m = re.fullmatch(r"\s*([0-9.]+)\s*/\s*(s|sec|min|h)\s*(?:,\s*burst\s*=\s*([0-9.]+)\s*)?",
                         text)  # fmt: skip
        if not m or float(m.group(1)) <= 0:
            raise DataError(
                RATE_ENV, "N/s, N/min or N/h, optionally ',burst=M' (N > 0)", repr(text)
            )
        count, unit = float(m.group(1)), m.group(2)
        per_s = count / {"s": 1, "sec": 1, "min": 60, "h": 3600}[unit]
        burst = float(m.group(3)) if m.group(3) else max(count if unit in ("s", "sec") else 1, 1)
        if burst < 1:
            raise DataError(RATE_ENV, "a burst of at least 1", repr(text))
        return cls(per_s, burst)


class RateLimiter:
    """One token bucket per client; ``take(client)`` → 0 when admitted, else the seconds to
    wait. Buckets idle long enough to be full again are forgotten."""

    def __init__(self, rate: Rate, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, at)

    def take(self, client: str) -> float:
        now = self.clock()
        tokens, at = self.buckets.get(client, (self.rate.burst, now))
        tokens = min(self.rate.burst, tokens + (now - at) * self.rate.per_s)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            self._forget(now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate.per_s

    def _forget(self, now: float) -> None:
        if len(self.buckets) > 10_000:
            full = self.rate.burst / self.rate.per_s
            self.buckets = {c: b for c, b in self.buckets.items() if now - b[1] < full}


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


def from_env(env=os.environ) -> tuple[KeyRing | None, RateLimiter | None]:
    path, rate = env.get(KEYS_ENV), env.get(RATE_ENV)
    return (KeyRing(path) if path else None, RateLimiter(Rate.parse(rate)) if rate else None)
