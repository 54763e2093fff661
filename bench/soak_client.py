"""The soak's load generator: raw HTTP/1.1 requests (good and malformed, pre-built) sent from
many concurrent keep-alive clients on one asyncio loop, overload refusals retried politely, and
the answers counted by kind (used by ``bench/service_soak.py``)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter

import numpy as np
from PIL import Image

BOUNDARY = "soak-boundary"
MAX_BYTES = 1_000_000  # the server's image limit in the soak (VISION_MAX_BYTES)


def form(fields: dict[str, str], files: dict[str, bytes]) -> bytes:
    parts = []
    for k, v in fields.items():
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n')
    out = "".join(parts).encode()
    for k, data in files.items():
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"; filename="x"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def request(path: str, body: bytes, ctype: str | None = None) -> bytes:
    ctype = ctype or f"multipart/form-data; boundary={BOUNDARY}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def cases(jpgs: list[bytes]) -> tuple[list, list]:
    """(good, bad) request lists of (kind, raw HTTP request, expected status or None)."""
    good = []
    for j in jpgs:
        good.append(
            ("detect", request("/detect", form({"score_threshold": "0.3"}, {"image": j})), 200)
        )
        good.append(
            ("segment", request("/segment", form({"mask_format": "rle"}, {"image": j})), 200)
        )
    j = jpgs[0]
    bad = [
        ("empty", request("/detect", form({}, {"image": b""})), 400),
        ("truncated", request("/detect", form({}, {"image": j[: len(j) // 3]})), 400),
        ("text", request("/segment", form({}, {"image": b"hello " * 50})), 415),
        ("gif", request("/detect", form({}, {"image": b"GIF89a" + b"\0" * 64})), 415),
        ("pixels", request("/detect", form({}, {"image": png(Image.new("L", (9000, 9000)))})), 413),
        ("bytes", request("/detect", form({}, {"image": os.urandom(MAX_BYTES + 100_000)})), 413),
        ("url", request("/detect", form({"image": "http://127.0.0.1:9/x.jpg"}, {})), 422),
        ("json", request("/detect", b'"http://127.0.0.1:9/x.jpg"', "application/json"), 415),
        ("inf", request("/detect", form({"max_detections": "Infinity"}, {"image": j})), 422),
        ("range", request("/detect", form({"score_threshold": "7"}, {"image": j})), 422),
        (
            "fields",
            request("/detect", form({f"f{i}": "x" for i in range(1500)}, {"image": j})),
            413,
        ),
        ("field", request("/detect", form({"mask_format": "p" * 5000}, {"image": j})), 413),
        ("thin", request("/segment", form({}, {"image": png(Image.new("RGB", (3000, 1)))})), 422),
        ("mask", request("/segment", form({"mask_format": "svg"}, {"image": j})), 422),
    ]
    return good, bad


async def send(
    host: str, port: int, raw: bytes, conn: dict, retry: bool = True
) -> tuple[int | None, float]:
    """One request on the client's keep-alive connection; returns (status or None when the
    connection failed, seconds). With ``retry``, a request whose reused connection turns out
    closed (the server closes a connection after refusing an unread body) is sent once more
    on a new one, and counted in ``conn["reconnects"]``."""
    t0 = time.perf_counter()
    for attempt in range(2 if retry else 1):
        try:
            if conn.get("w") is None:
                conn["r"], conn["w"] = await asyncio.open_connection(host, port)
            conn["w"].write(raw)
            await conn["w"].drain()
            line = await conn["r"].readline()
            if not line:
                raise ConnectionError("closed")
            status = int(line.split()[1])
            length, close = 0, False
            while True:
                h = await conn["r"].readline()
                if h in (b"\r\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                if k.lower() == "content-length":
                    length = int(v)
                elif k.lower() == "connection" and "close" in v.lower():
                    close = True
            await conn["r"].readexactly(length)
            if close:
                conn["w"].close()
                conn["w"] = None
            return status, time.perf_counter() - t0
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            if conn.get("w") is not None:
                conn["w"].close()
            conn["w"] = None
            conn["reconnects"] = conn.get("reconnects", 0) + 1
            if attempt == 1 or not retry:
                return None, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def with_key(raw: bytes, key: str | None) -> bytes:
    """The request with an ``Authorization: Bearer`` header (none for ``None``)."""
    if key is None:
        return raw
    return raw.replace(
        b"Host: 127.0.0.1\r\n", f"Host: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n".encode(), 1
    )


async def load(
    url: str,
    jobs: list,
    clients: int,
    on_progress=None,
    retry=True,
    patience: int = 60,
    roles: list[tuple[str, str | None]] | None = None,
) -> list:
    """Run ``jobs`` (kind, raw, expected) from ``clients`` concurrent connections. A request
    refused for overload (503/429) is sent again after the ``Retry-After`` second (with
    jitter), up to ``patience`` times; ``load.refusals`` counts those refusals. ``roles``:
    per client (role, API key): a ``wrong`` client's every request expects 401 and is not
    retried; results then carry the role."""
    host, port = url.split("//")[1].split(":")
    # without roles the clients share one queue; with roles each has its own share (job i to
    # client i mod clients): a wrong key's instant 401s would otherwise drain the queue
    queues = [asyncio.Queue() for _ in range(clients if roles else 1)]
    for i, job in enumerate(jobs):
        queues[i % len(queues)].put_nowait((i, job))
    results: list = [None] * len(jobs)
    reconnects, refusals = [], []

    async def client(c: int):
        conn: dict = {}
        rng = np.random.default_rng(len(results))
        role, key = roles[c] if roles else ("valid", None)
        queue = queues[c % len(queues)]
        while not queue.empty():
            i, (kind, raw, want) = queue.get_nowait()
            want = 401 if role == "wrong" else want
            raw = with_key(raw, key)
            t0 = time.perf_counter()
            for _ in range(patience + 1):  # a polite client: overload refusals are retried
                status, _ = await send(host, int(port), raw, conn, retry)
                if status not in (429, 503) or not patience:
                    break
                refusals.append(i)
                await asyncio.sleep(rng.uniform(0.5, 1.5))  # Retry-After: 1, with jitter
            results[i] = (kind, want, status, time.perf_counter() - t0) + ((role,) if roles else ())
            if on_progress:
                on_progress(i, status)
        if conn.get("w") is not None:
            conn["w"].close()
        reconnects.append(conn.get("reconnects", 0))

    await asyncio.gather(*[client(c) for c in range(clients)])
    load.reconnects = sum(reconnects)  # the last run's counts
    load.refusals = len(refusals)
    return results


async def greedy(url: str, key: str, stop: asyncio.Event, pace_s: float = 0.0) -> Counter:
    """A client over its rate: ``/info`` as fast as answers come, until ``stop``; the
    statuses it got."""
    host, port = url.split("//")[1].split(":")
    raw, conn, got = with_key(request("/info", b"", "application/json"), key), {}, Counter()
    while not stop.is_set():
        status, _ = await send(host, int(port), raw, conn)
        got[str(status)] += 1
        await asyncio.sleep(pace_s)
    return got


def summarize_roles(results: list) -> dict:
    """Per role: statuses; and what must never happen: a wrong key answered anything but 401,
    a valid client refused by key or rate (401/429)."""
    by_role: dict[str, Counter] = {}
    for *_, status, _, role in results:
        by_role.setdefault(role, Counter())[str(status)] += 1
    return {
        "status_by_role": {r: dict(c) for r, c in by_role.items()},
        "wrong_key_not_401": sum(1 for _, _, s, _, r in results if r == "wrong" and s != 401),
        "valid_refused_by_key_or_rate": sum(
            1 for _, _, s, _, r in results if r == "valid" and s in (401, 429)
        ),
    }


def summarize(results: list) -> dict:
    by_kind: dict[str, Counter] = {}
    for kind, _, status, *_ in results:
        by_kind.setdefault(kind, Counter())[str(status)] += 1
    overload = {503, 429}
    bad_answers = [
        (k, w, s)
        for k, w, s, *_ in results
        if s is not None and w != 200 and s != w and s not in overload
    ]
    good_lat = sorted(t for k, w, st, t, *_ in results if w == 200 and st == 200)
    return {
        "requests": len(results),
        "status_by_kind": {k: dict(v) for k, v in by_kind.items()},
        "server_errors": sum(
            1 for _, _, s, *_ in results if s is not None and s >= 500 and s not in overload
        ),
        "overload_refusals": sum(1 for _, _, s, *_ in results if s in overload),
        "dropped_connections": sum(1 for _, _, s, *_ in results if s is None),
        "malformed_not_refused_as_expected": len(bad_answers),
        "malformed_examples": bad_answers[:5],
        "ok_latency_s_p50": float(np.percentile(good_lat, 50)) if good_lat else None,
        "ok_latency_s_p95": float(np.percentile(good_lat, 95)) if good_lat else None,
    }


def mix(good: list, bad: list, n: int, bad_share: float, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [
        bad[rng.integers(len(bad))] if rng.random() < bad_share else good[rng.integers(len(good))]
        for _ in range(n)
    ]
