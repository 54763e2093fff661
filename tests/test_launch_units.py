"""How the service is started and stopped, with real processes: the command line, the
settings, the launcher's wait for /readyz (a small stand-in HTTP server plays the service, so
this takes a second), its two failures, and the stop that takes the whole process tree; and the
single-process side of the distributed helpers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch
import torch.distributed as dist

from service import launch
from vision.engine import distributed as D

# a stand-in for `bentoml serve`: /readyz answers 200 once it has slept `delay` seconds, and the
# process starts a child of its own (as BentoML's arbiter starts workers)
STAND_IN = r"""
import http.server, os, signal, subprocess, sys, time
host, port, delay = sys.argv[1], int(sys.argv[2]), float(os.environ.get("STAND_IN_DELAY", "0"))
# a worker with a worker of its own; with STAND_IN_REAP=1 the first one leaves on SIGTERM
grand = ("import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
child = subprocess.Popen([sys.executable, "-c", grand])
if os.environ.get("STAND_IN_REAP") == "1":
    def bye(*a):
        child.kill()
        child.wait()
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
start = time.time()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/readyz" and time.time() - start >= delay
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(os.environ.get("STAND_IN_ANSWER", "").encode())
    def log_message(self, *a):
        pass
http.server.HTTPServer((host, port), H).serve_forever()
"""


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(
        launch, "serve_argv", lambda host, port: [sys.executable, str(script), str(host), str(port)]
    )
    return script


def test_serve_argv_and_settings():
    argv = launch.serve_argv("0.0.0.0", 3000)
    assert argv == [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "service.service:VisionService",
        "--host",
        "0.0.0.0",
        "--port",
        "3000",
    ]
    assert launch.half_precision({"VISION_HALF": "1"}) and not launch.half_precision({})
    assert not launch.half_precision({"VISION_HALF": "true"})
    assert launch.STORE == {"detection": "vision-detector", "segmentation": "vision-segmenter"}
    assert launch.Path(launch.__file__).resolve().parents[1] == launch.ROOT


def test_free_port_is_free():
    port = launch.free_port()
    assert 1024 <= port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing holds it


def test_start_waits_for_ready_and_stop_takes_the_tree(stand_in):
    t0 = time.monotonic()
    proc, url = launch.start_server({"STAND_IN_DELAY": "1.0"})
    try:
        assert time.monotonic() - t0 >= 1.0  # it waited for 200, not for the port
        assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        assert launch.httpx.get(f"{url}/readyz").status_code == 200
        for _ in range(50):  # the worker's own worker starts a moment later
            children = psutil.Process(proc.pid).children(recursive=True)
            if len(children) == 2:
                break
            time.sleep(0.1)
        assert len(children) == 2 and proc.poll() is None
        assert psutil.Process(proc.pid).cwd() == str(launch.ROOT)
    finally:
        code = launch.stop_server(proc)
    assert code is not None and proc.poll() is not None
    time.sleep(0.2)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_start_notices_ready_within_a_poll(stand_in):
    t0 = time.monotonic()
    proc, _ = launch.start_server({"STAND_IN_DELAY": "0.2"})
    launch.stop_server(proc)
    assert time.monotonic() - t0 < 1.3  # polled every 0.5 s


def test_stop_takes_only_its_own_tree(stand_in):
    one, _ = launch.start_server({})
    other, url = launch.start_server({})
    try:
        launch.stop_server(one)
        assert other.poll() is None and launch.httpx.get(f"{url}/readyz").status_code == 200
    finally:
        launch.stop_server(other)


def test_stop_when_a_worker_is_gone_already(stand_in):
    proc, _ = launch.start_server({"STAND_IN_REAP": "1"})
    time.sleep(0.5)
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert launch.stop_server(proc) == 0  # its worker ended with it: nothing left to kill
    time.sleep(0.2)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in tree[1:])


def test_start_on_a_given_port_with_the_environment(stand_in, monkeypatch):
    port = launch.free_port()
    monkeypatch.setenv("STAND_IN_ANSWER", "from os.environ")
    proc, url = launch.start_server({}, port=port)
    try:
        assert url == f"http://127.0.0.1:{port}"
        assert launch.httpx.get(f"{url}/readyz").text == "from os.environ"
    finally:
        launch.stop_server(proc)
    proc, url = launch.start_server({"STAND_IN_ANSWER": "given"})
    try:
        assert launch.httpx.get(f"{url}/readyz").text == "given"
    finally:
        launch.stop_server(proc)


def test_start_fails_when_the_server_exits_or_never_gets_ready(stand_in, tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with 1 before ready"):
        launch.start_server({"PYTHONHOME": str(tmp_path / "no-python-here")})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"not ready after 1 s"):
        launch.start_server({"STAND_IN_DELAY": "60"}, timeout=1.2)
    assert time.monotonic() - t0 < 10


def test_start_logs_to_the_given_file(stand_in, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "wb") as f, pytest.raises(RuntimeError):
        launch.start_server({"PYTHONHOME": str(tmp_path / "none")}, log=f)
    assert "Python" in log.read_text(errors="replace")  # the child's stderr went there


def test_stop_kills_what_ignores_sigterm(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    proc.stdout.readline()
    t0 = time.monotonic()
    assert launch.stop_server(proc, timeout=0.5) == -9 and time.monotonic() - t0 < 5
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert launch.stop_server(done) == 0  # already gone: nothing to kill


# ---- vision.engine.distributed (one process) ------------------------------------------------


def test_single_process_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.init_distributed() == (0, 1, torch.device("cpu")) and not dist.is_initialized()
    assert D.is_main() and D.world_size() == 1 and D.mean_across_ranks(2.5) == 2.5
    D.barrier()


def test_helpers_in_a_group_of_one(monkeypatch):
    store = dist.HashStore()
    dist.init_process_group("gloo", rank=0, world_size=1, store=store)
    try:
        monkeypatch.setenv("WORLD_SIZE", "1")
        assert D.init_distributed() == (0, 1, torch.device("cpu"))
        assert D.is_main() and D.world_size() == 1
        assert D.mean_across_ranks(3.0) == 3.0 and isinstance(D.mean_across_ranks(1), float)
        D.barrier()
        s = D.ShardSampler(5, shuffle=False)
        assert list(s) == [0, 1, 2, 3, 4] and len(s) == 5
    finally:
        dist.destroy_process_group()


def test_shard_sampler_order():
    s = D.ShardSampler(7, shuffle=False)
    assert list(s) == list(range(7)) and len(s) == 7 and s.epoch == 0 and s.seed == 0
    r = D.ShardSampler(7, shuffle=True, seed=3)
    first = list(r)
    assert sorted(first) == list(range(7)) and first == list(r)
    g = torch.Generator().manual_seed(3 * 100003 + 0)
    assert first == torch.randperm(7, generator=g).tolist()
    r.set_epoch(2)
    assert (
        r.epoch == 2
        and list(r) == torch.randperm(7, generator=torch.Generator().manual_seed(300011)).tolist()
    )
    assert list(D.ShardSampler(7, True, seed=4)) != first and len(D.ShardSampler(0, True)) == 0


TWO_RANKS = r"""
import json, sys
import torch.distributed as dist
from vision.engine import distributed as D
rank, world, device = D.init_distributed()
out = {"rank": rank, "world": world, "device": str(device), "main": D.is_main(),
       "size": D.world_size(), "mean": D.mean_across_ranks([0.1, 0.2][rank]),
       "shard": list(D.ShardSampler(5, shuffle=False)), "len": len(D.ShardSampler(5, False))}
D.barrier()
print(json.dumps(out), flush=True)
dist.destroy_process_group()
"""


def test_two_ranks_in_two_processes(tmp_path):
    import json
    import os

    script = tmp_path / "ranks.py"
    script.write_text(TWO_RANKS)
    port = launch.free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE)
        )
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [o["rank"] for o in outs] == [0, 1] and all(o["world"] == o["size"] == 2 for o in outs)
    assert [o["main"] for o in outs] == [True, False] and {o["device"] for o in outs} == {"cpu"}
    assert all(o["mean"] == (0.1 + 0.2) / 2 for o in outs)  # summed in float64
    assert [o["shard"] for o in outs] == [[0, 2, 4], [1, 3]] and [o["len"] for o in outs] == [3, 2]
