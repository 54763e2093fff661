"""Soak and fault benchmark of the REST service (loopback only; bounded count and time).

    .venv/bin/python -m bench.service_soak --detector CKPT --segmenter CKPT
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

With ``--access``: the server needs API keys and limits each key's rate (``--rate``); every
soak client has a key of its own but a quarter of them send a wrong one (every request of
theirs must get 401), and one more client sends ``/info`` as fast as it is answered with its
own key (over the rate: 200 or 429, nothing else). Counted on top: statuses by role, wrong keys
answered anything but 401, valid requests refused by key or rate.

JSON in ``--out``; a summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from bench.soak_client import (
    MAX_BYTES,
    cases,
    greedy,
    load,
    mix,
    send,
    summarize,
    summarize_roles,
)
from service.launch import start_server, stop_server

IDLE_WAIT_S = 6  # three looks of the service's idle trim (VISION_TRIM_IDLE_S, 2 s)


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


async def soak(url: str, jobs: list, clients: int, sample, roles, keys):
    """The soak's load; with keys, a greedy client over its rate all along beside it."""
    if not roles:
        return await load(url, jobs, clients, sample), {}
    stop = asyncio.Event()
    over = asyncio.create_task(greedy(url, keys[-1], stop))
    res = await load(url, jobs, clients, sample, roles=roles)
    stop.set()
    return res, await over


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
    ap.add_argument("--access", action="store_true", help="keys and rate limits on (see above)")
    ap.add_argument("--rate", default="20/s,burst=40", help="VISION_RATE with --access")
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
    keys: list[str] = []
    if a.access:  # a key per client, and one for the greedy client
        from service.access import create_key

        path = Path(env["BENTOML_HOME"]) / "soak_keys.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        keys = [create_key(path, f"client{c}") for c in range(max(a.clients) + 1)]
        env.update(VISION_API_KEYS_FILE=str(path), VISION_RATE=a.rate)
    log = open("/tmp/vision-soak-server.log", "w")  # noqa: SIM115 - kept open for the server
    proc, url = start_server(env, log=log, timeout=240)
    out: dict = {"env": {k: v for k, v in env.items() if "CKPT" not in k}, "soak": []}
    try:
        warm_roles = [("valid", keys[c]) for c in range(8)] if keys else None
        for _ in range(3):  # warm-up: every kind of request, good and bad, a few times
            asyncio.run(load(url, good + bad, 8, roles=warm_roles))
        time.sleep(IDLE_WAIT_S)  # the server gives freed memory back once idle
        light, parts_light = rss(proc.pid), rss_parts(proc.pid)
        warm, parts_warm = light, parts_light
        for clients in a.clients:
            roles = None
            if keys:  # every 4th client with a wrong key; the last key is the greedy client's
                roles = [
                    ("wrong", f"vk_wrong{c}") if c % 4 == 3 else ("valid", keys[c])
                    for c in range(clients)
                ]
            if a.warmup:  # the working set of this many connections, before the baseline
                asyncio.run(
                    load(url, mix(good, bad, a.warmup, a.bad, clients), clients, roles=roles)
                )
                time.sleep(IDLE_WAIT_S)
                warm, parts_warm = rss(proc.pid), rss_parts(proc.pid)
            t0, samples = time.perf_counter(), []

            def sample(i, status, samples=samples):  # RSS every 1,000 answers: leak or plateau
                sample.n += 1
                if sample.n % 1000 == 0:
                    samples.append(round(rss(proc.pid) / 2**20))

            sample.n = 0
            jobs = mix(good, bad, a.requests, a.bad, clients)
            res, over = asyncio.run(soak(url, jobs, clients, sample, roles, keys))
            s = summarize(res)
            if roles:
                s.update(summarize_roles(res), greedy_statuses=dict(over))
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
            if roles:
                print(
                    f"[soak]   by role {s['status_by_role']}; wrong keys not 401: "
                    f"{s['wrong_key_not_401']}; valid refused by key or rate: "
                    f"{s['valid_refused_by_key_or_rate']}; greedy {s['greedy_statuses']}",
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
