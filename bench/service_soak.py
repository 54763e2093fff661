"""Soak and fault benchmark of the REST service (loopback only; bounded count and time).

    .venv/bin/python bench/service_soak.py --detector CKPT --segmenter CKPT
        [--requests 10000] [--clients 32 600] [--bad 0.2] [--out bench/results/soak.json]

1. **Soak**: for each client count, ``--requests`` requests from that many concurrent
   keep-alive clients (one asyncio load generator, pre-built bodies), ``--bad`` of them
   malformed in every way the service must refuse (empty, truncated, text, GIF, too many
   pixels, too many bytes, a URL in the image field, a JSON body, non-finite and out-of-range
   numbers, 1,500 fields, an oversized field, an image that resizes to nothing, an unknown
   mask format). Counted: status codes by kind; 5xx other than overload refusals (503/429);
   malformed requests answered anything but their 4xx; dropped connections; the server's RSS
   after warm-up and at the end.
2. **SIGKILL** of the worker process mid-load: the seconds until ``/readyz`` answers 200
   again, the requests in flight at the kill, and the requests lost (no answer or 5xx).
3. **SIGTERM** of the server under load: how many requests in flight at the signal got their
   200, what requests sent during the drain got (503 while the worker drains, see
   ``service/drain.py``; a refused connection once it has exited), and when the server exited.

JSON in ``--out``; a summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.launch import start_server, stop_server  # noqa: E402

BOUNDARY = "soak-boundary"
MAX_BYTES = 1_000_000
IDLE_WAIT_S = 6  # three looks of the service's idle trim (VISION_TRIM_IDLE_S, 2 s)


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


async def load(
    url: str, jobs: list, clients: int, on_progress=None, retry=True, patience: int = 60
) -> list:
    """Run ``jobs`` (kind, raw, expected) from ``clients`` concurrent connections. A request
    refused for overload (503/429) is sent again after the ``Retry-After`` second (with
    jitter), up to ``patience`` times; ``load.refusals`` counts those refusals."""
    host, port = url.split("//")[1].split(":")
    queue: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        queue.put_nowait((i, job))
    results: list = [None] * len(jobs)
    reconnects, refusals = [], []

    async def client():
        conn: dict = {}
        rng = np.random.default_rng(len(results))
        while not queue.empty():
            i, (kind, raw, want) = queue.get_nowait()
            t0 = time.perf_counter()
            for _ in range(patience + 1):  # a polite client: overload refusals are retried
                status, _ = await send(host, int(port), raw, conn, retry)
                if status not in (429, 503) or not patience:
                    break
                refusals.append(i)
                await asyncio.sleep(rng.uniform(0.5, 1.5))  # Retry-After: 1, with jitter
            results[i] = (kind, want, status, time.perf_counter() - t0)
            if on_progress:
                on_progress(i, status)
        if conn.get("w") is not None:
            conn["w"].close()
        reconnects.append(conn.get("reconnects", 0))

    await asyncio.gather(*[client() for _ in range(clients)])
    load.reconnects = sum(reconnects)  # the last run's counts
    load.refusals = len(refusals)
    return results


def rss(pid: int) -> int:
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])


def rss_parts(pid: int) -> dict[str, float]:
    """The process tree's resident MB by kind of mapping: ``heap`` (the main arena: what the
    main thread's malloc holds), ``anon`` (other anonymous mappings: thread arenas, large
    mmap-ed buffers, torch's and ONNX Runtime's own), ``file`` (code and data of mapped files,
    which grows as code paths are first touched)."""
    p, parts = psutil.Process(pid), Counter()
    for q in [p, *p.children(recursive=True)]:
        try:
            for m in q.memory_maps(grouped=True):
                kind = (
                    "heap" if m.path == "[heap]" else "file" if m.path.startswith("/") else "anon"
                )
                parts[kind] += m.rss
        except psutil.Error:
            continue
    return {k: round(v / 2**20, 1) for k, v in sorted(parts.items())}


def summarize(results: list) -> dict:
    by_kind: dict[str, Counter] = {}
    for kind, _, status, _ in results:
        by_kind.setdefault(kind, Counter())[str(status)] += 1
    overload = {503, 429}
    bad_answers = [
        (k, w, s)
        for k, w, s, _ in results
        if s is not None and w != 200 and s != w and s not in overload
    ]
    good_lat = sorted(s for k, w, st, s in results if w == 200 and st == 200)
    return {
        "requests": len(results),
        "status_by_kind": {k: dict(v) for k, v in by_kind.items()},
        "server_errors": sum(
            1 for *_, s, _ in results if s is not None and s >= 500 and s not in overload
        ),
        "overload_refusals": sum(1 for *_, s, _ in results if s in overload),
        "dropped_connections": sum(1 for *_, s, _ in results if s is None),
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


def worker_pid(server_pid: int) -> int | None:
    """The service worker: the descendant process that loaded the model (largest RSS)."""
    kids = psutil.Process(server_pid).children(recursive=True)
    return max(kids, key=lambda p: p.memory_info().rss).pid if kids else None


def wait_ready(url: str, timeout: float) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return None


def kill_test(url: str, pid: int, good: list, clients: int, n: int) -> dict:
    """SIGKILL the worker once a third of ``n`` requests are answered."""
    state = {"done": 0, "killed_at": None, "in_flight": None}
    victim = worker_pid(pid)

    def progress(i, status):
        state["done"] += 1
        if state["killed_at"] is None and state["done"] >= n // 3 and victim:
            state["in_flight"] = clients  # every client had a request out
            os.kill(victim, signal.SIGKILL)
            state["killed_at"] = time.perf_counter()

    jobs = mix(good, [], n, 0.0, 1)
    results = asyncio.run(load(url, jobs, clients, progress, retry=False, patience=0))
    back = wait_ready(url, 180)
    lost = [r for r in results if r[2] is None or r[2] >= 500]
    return {
        "worker_pid": victim,
        "requests": n,
        "clients": clients,
        "ready_again_s_after_load": back,
        "ready_again_s_after_kill": None
        if back is None
        else time.perf_counter() - state["killed_at"],
        "in_flight_at_kill": state["in_flight"],
        "lost": len(lost),
        "lost_statuses": dict(Counter(str(r[2]) for r in lost)),
        "ok": sum(1 for r in results if r[2] == 200),
    }


def term_test(proc, url: str, good: list, clients: int) -> dict:
    """SIGTERM the server with ``clients`` requests in flight, then keep sending until it exits."""

    async def run():
        host, port = url.split("//")[1].split(":")
        convs = [dict() for _ in range(clients)]
        first = [
            asyncio.create_task(send(host, int(port), good[i % len(good)][1], convs[i]))
            for i in range(clients)
        ]
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        t0 = time.perf_counter()
        later = []
        while proc.poll() is None and time.perf_counter() - t0 < 60:
            status, _ = await send(host, int(port), good[0][1], {})
            later.append((round(time.perf_counter() - t0, 2), status))
            await asyncio.sleep(0.1)
        return await asyncio.gather(*first), later, time.perf_counter() - t0

    first, later, exited = asyncio.run(run())
    proc.wait(timeout=120)
    return {
        "in_flight_at_term": clients,
        "in_flight_answered_200": sum(1 for s, _ in first if s == 200),
        "in_flight_statuses": dict(Counter(str(s) for s, _ in first)),
        # new requests sent until the server exited: (seconds after SIGTERM, status)
        "after_term_statuses": dict(Counter(str(s) for _, s in later)),
        "after_term_timeline": later,
        "exited_after_s": round(exited, 2),
        "exit_code": proc.returncode,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", required=True)
    ap.add_argument("--segmenter", required=True)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--clients", type=int, nargs="+", default=[32, 600])
    ap.add_argument("--bad", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/soak.json")
    ap.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-faults", action="store_true", help="soak only (no SIGKILL/SIGTERM)")
    ap.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="requests at each soak's own client count before its RSS baseline (0: only the "
        "light warm-up; a working set that grows with concurrency then counts as growth)",
    )
    a = ap.parse_args()
    jpgs = [
        p.read_bytes() for p in sorted(Path("datasets/shapes/VOC/JPEGImages").glob("*.jpg"))[-16:]
    ]
    good, bad = cases(jpgs)
    env = {
        "VISION_DETECTOR_CKPT": os.path.abspath(a.detector),
        "VISION_SEGMENTER_CKPT": os.path.abspath(a.segmenter),
        "VISION_THREADS": str(a.threads),
        "VISION_MAX_BYTES": str(MAX_BYTES),
        "VISION_ACCESS_LOG": "0",
        "BENTOML_HOME": os.environ.get("BENTOML_HOME", "/tmp/vision-soak-bentoml"),
        **dict(kv.split("=", 1) for kv in a.server_env),
    }
    log = open("/tmp/vision-soak-server.log", "w")  # noqa: SIM115 - kept open for the server
    proc, url = start_server(env, log=log, timeout=240)
    out: dict = {"env": {k: v for k, v in env.items() if "CKPT" not in k}, "soak": []}
    try:
        for _ in range(3):  # warm-up: every kind of request, good and bad, a few times
            asyncio.run(load(url, good + bad, 8))
        time.sleep(IDLE_WAIT_S)  # the server gives freed memory back once idle
        light, parts_light = rss(proc.pid), rss_parts(proc.pid)
        warm, parts_warm = light, parts_light
        for clients in a.clients:
            if a.warmup:  # the working set of this many connections, before the baseline
                asyncio.run(load(url, mix(good, bad, a.warmup, a.bad, clients), clients))
                time.sleep(IDLE_WAIT_S)
                warm, parts_warm = rss(proc.pid), rss_parts(proc.pid)
            t0, samples = time.perf_counter(), []

            def sample(i, status, samples=samples):  # RSS every 1,000 answers: leak or plateau
                sample.n += 1
                if sample.n % 1000 == 0:
                    samples.append(round(rss(proc.pid) / 2**20))

            sample.n = 0
            res = asyncio.run(
                load(url, mix(good, bad, a.requests, a.bad, clients), clients, sample)
            )
            s = summarize(res)
            s.update(
                clients=clients,
                reconnects=load.reconnects,
                overload_refusals_retried=load.refusals,
                seconds=time.perf_counter() - t0,
                rss_after_light_warmup_mb=light / 2**20,
                warmup_requests=a.warmup,
                rss_after_warmup_mb=warm / 2**20,
                rss_end_mb=rss(proc.pid) / 2**20,
                rss_every_1000_mb=samples,
            )
            time.sleep(IDLE_WAIT_S)
            s["rss_idle_mb"] = rss(proc.pid) / 2**20  # after the idle trim (service/memory.py)
            s["rss_parts_after_light_warmup_mb"] = parts_light
            s["rss_parts_after_warmup_mb"], s["rss_parts_idle_mb"] = parts_warm, rss_parts(proc.pid)
            out["soak"].append(s)
            print(
                f"[soak] {clients} clients: {s['requests']} requests in {s['seconds']:.0f} s, "
                f"5xx (not overload) {s['server_errors']}, overload refusals "
                f"{s['overload_refusals']} final / {load.refusals} retried, dropped "
                f"{s['dropped_connections']}, malformed "
                f"mis-answered {s['malformed_not_refused_as_expected']}, RSS "
                f"{s['rss_after_warmup_mb']:.0f} -> {s['rss_end_mb']:.0f} MB, "
                f"{s['rss_idle_mb']:.0f} MB after {IDLE_WAIT_S} s idle",
                flush=True,
            )
        if not a.no_faults:
            out["sigkill"] = kill_test(url, proc.pid, good, 32, min(600, a.requests))
            print(f"[soak] SIGKILL: {out['sigkill']}", flush=True)
            out["sigterm"] = term_test(proc, url, good, 16)
            print(f"[soak] SIGTERM: {out['sigterm']}", flush=True)
    finally:
        stop_server(proc)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"[soak] wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
