"""The same checkpoint served eager and as a deployable variant, side by side in one run.

    .venv/bin/python -m bench.variant_service --checkpoint CKPT --task detect \
        --variant int8 --file VARIANTS_DIR/model.int8.onnx [--requests 200] [--rounds 3]

Two servers run at once (eager, and the variant through ``VISION_*_VARIANT``), each with the
same thread count. Per round: sequential requests alternate between them in blocks of 10 (one
client: p50 latency and the server's own ``timing_ms.inference``), then each takes
``--clients`` concurrent clients in turn (throughput). Medians over rounds; JSON out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import httpx

from bench.service_speed import loaded, multipart
from service.launch import CKPT_ENV, VARIANT_ENV, start_server, stop_server

TASKS = {"detect": "detection", "segment": "segmentation"}


def serve(ckpt: str, task: str, threads: int, variant: str | None):
    t = TASKS[task]
    env = {
        CKPT_ENV[t]: os.path.abspath(ckpt),
        "VISION_THREADS": str(threads),
        "VISION_ACCESS_LOG": "0",
        "BENTOML_HOME": os.environ.get("BENTOML_HOME", "/tmp/vision-bench-bentoml"),
    }
    if variant:
        env[VARIANT_ENV[t]] = variant
    return start_server(env, timeout=240)


def one_client(c: httpx.Client, url: str, task: str, bodies, idx) -> tuple[list, list]:
    import time

    lat, inf = [], []
    for i in idx:
        body, headers = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        r = c.post(f"{url}/{task}", content=body, headers=headers)
        lat.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
        inf.append(r.json()["timing_ms"]["inference"])
    return lat, inf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--task", default="detect", choices=sorted(TASKS))
    ap.add_argument("--variant", required=True, help="eager|fused|bf16|onnx|int8")
    ap.add_argument("--file", default=None, help="the variant's ONNX file (onnx, int8)")
    ap.add_argument("--images", default="datasets/shapes/VOC/JPEGImages")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    bodies = [multipart(p.read_bytes()) for p in sorted(Path(a.images).glob("*.jpg"))[-32:]]
    spec = a.variant + (f":{os.path.abspath(a.file)}" if a.file else "")
    servers = {"eager": serve(a.checkpoint, a.task, a.threads, None)}
    servers[a.variant] = serve(a.checkpoint, a.task, a.threads, spec)
    got: dict[str, dict[str, list]] = {k: {"p50": [], "inf": [], "ips": []} for k in servers}
    try:
        with httpx.Client(timeout=120) as c:
            for _, url in servers.values():
                one_client(c, url, a.task, bodies, range(10))  # warm-up
            for _ in range(a.rounds):
                lat = {k: ([], []) for k in servers}
                for i in range(0, a.requests // 2, 10):
                    for k, (_, url) in servers.items():
                        x, y = one_client(c, url, a.task, bodies, range(i, i + 10))
                        lat[k][0].extend(x)
                        lat[k][1].extend(y)
                for k, (_, url) in servers.items():
                    got[k]["p50"].append(statistics.median(lat[k][0]))
                    got[k]["inf"].append(statistics.median(lat[k][1]))
                    got[k]["ips"].append(loaded(url, a.task, bodies, a.requests, a.clients)[0])
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in got.items()}
    e, v = med["eager"], med[a.variant]
    summary = {
        "task": a.task,
        "variant": a.variant,
        "threads": a.threads,
        "clients": a.clients,
        "medians": med,
        "rounds": got,
        "p50_ratio": e["p50"] / v["p50"],
        "inference_ratio": e["inf"] / v["inf"],
        "throughput_ratio": v["ips"] / e["ips"],
    }
    print(
        f"{a.task}: one client p50 {e['p50']:.1f} → {v['p50']:.1f} ms ({summary['p50_ratio']:.2f}x"
        f" lower); server inference {e['inf']:.1f} → {v['inf']:.1f} ms "
        f"({summary['inference_ratio']:.2f}x); {a.clients} clients {e['ips']:.1f} → "
        f"{v['ips']:.1f} img/s ({summary['throughput_ratio']:.2f}x)"
    )
    out = Path(a.out or f"bench/results/variant_service_{a.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
