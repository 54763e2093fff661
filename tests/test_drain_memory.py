"""The SIGTERM drain and the idle memory trim, in process and in real child processes."""

from __future__ import annotations

import threading
import time

import pytest


def test_drain_waits_for_requests_in_flight_then_hands_the_signal_over():
    import signal
    import threading

    from service.drain import Drain

    got: list[int] = []
    d = Drain(min_s=0.2, max_s=5.0, poll_s=0.01)
    d._previous = lambda sig, frame: got.append(sig)
    busy = [2]
    d.in_flight = lambda: busy[0]
    t0 = time.monotonic()
    d._on_term(signal.SIGTERM, None)
    assert d.draining and not got
    time.sleep(0.4)
    assert not got and not d.done()  # past min_s, still two in flight
    busy[0] = 0
    while not got and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert got == [signal.SIGTERM] and 0.4 <= time.monotonic() - t0 < 1.0
    d._on_term(signal.SIGTERM, None)  # handed over once only
    assert got == [signal.SIGTERM]
    capped = Drain(min_s=0.0, max_s=0.3, poll_s=0.01)
    capped.in_flight = lambda: 1  # never finishes: handed over at max_s
    capped.since = time.monotonic()
    assert not capped.done()
    time.sleep(0.35)
    assert capped.done()
    impatient = Drain(min_s=10, max_s=60)
    impatient._previous = lambda sig, frame: got.append(-sig)
    impatient._on_term(signal.SIGTERM, None)
    impatient._on_term(signal.SIGTERM, None)  # a second SIGTERM: at once
    assert got[-1] == -signal.SIGTERM
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(Drain().install()))
    worker.start()
    worker.join()
    assert outcome == [False]  # only the main thread may set signal handlers
    before = signal.getsignal(signal.SIGTERM)
    try:
        mine = Drain()
        assert mine.install() and signal.getsignal(signal.SIGTERM) == mine._on_term
        assert mine._previous == before
    finally:
        signal.signal(signal.SIGTERM, before)


def test_drain_defaults_and_what_it_logs(caplog, monkeypatch):
    import logging
    import signal

    from service.drain import Drain

    d = Drain()
    assert (d.min_s, d.max_s, d.poll_s) == (2.0, 30.0, 0.05) and not d.draining
    monkeypatch.setenv("VISION_DRAIN_S", "0.5")
    monkeypatch.setenv("VISION_GRACE_S", "7")
    env = Drain.from_env()
    assert (env.min_s, env.max_s) == (0.5, 7.0)
    quick = Drain(min_s=0.0, max_s=5.0, poll_s=0.01)  # nobody counts: nothing is in flight
    quick.since = time.monotonic()
    assert quick.done()
    handed = []
    quick._previous = lambda sig, frame: handed.append(sig)
    with caplog.at_level(logging.INFO, logger="vision.service"):
        quick._on_term(signal.SIGTERM, None)
        deadline = time.monotonic() + 5
        while not handed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert handed == [signal.SIGTERM]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "SIGTERM: draining (0 in flight; new requests get 503 for at least 0.0 s)"
    assert lines[1].startswith("drained after 0.0 s (0 in flight)")


def test_drain_state_env_defaults_and_its_thread(monkeypatch):
    import signal

    from service.drain import Drain

    d = Drain()
    assert d.draining is False and d.since is None
    monkeypatch.delenv("VISION_DRAIN_S", raising=False)
    monkeypatch.delenv("VISION_GRACE_S", raising=False)
    env = Drain.from_env()
    assert (env.min_s, env.max_s) == (2.0, 30.0)
    slow = Drain(min_s=0.3, max_s=5.0, poll_s=0.01)
    handed = []
    slow._previous = lambda sig, frame: handed.append(sig)
    before = set(threading.enumerate())
    slow._on_term(signal.SIGTERM, None)
    drains = [t for t in set(threading.enumerate()) - before if t.name == "vision-drain"]
    assert len(drains) == 1 and drains[0].daemon  # never holds the process open
    drains[0].join(5)
    assert handed == [signal.SIGTERM]


@pytest.mark.parametrize("previous", ["default", "ignore", "twice"])
def test_drain_without_a_server_handler_ends_the_process_unless_sigterm_is_ignored(previous):
    """In a real process: with the default SIGTERM action before it, the drain ends the process
    by that signal once drained, or at once on a second SIGTERM (the drain would wait 10 s);
    with SIGTERM ignored, the process lives on."""
    import signal
    import subprocess
    import sys

    code = f"""
import os, signal, sys, time
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parents[1])!r})
from service.drain import Drain
signal.signal(signal.SIGTERM, signal.{"SIG_IGN" if previous == "ignore" else "SIG_DFL"})
d = Drain(min_s={10.0 if previous == "twice" else 0.1}, max_s=20.0, poll_s=0.01)
assert d.install()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.3)
if {previous == "twice"}:
    os.kill(os.getpid(), signal.SIGTERM)
time.sleep(1.5)
print("alive", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    if previous != "ignore":
        assert done.returncode == -signal.SIGTERM and "alive" not in done.stdout, done
    else:
        assert done.returncode == 0 and done.stdout == "alive\n", done


def test_idle_trim_gives_memory_back_once_per_idle_spell():
    """A look with new requests since the last one, or one in flight, is busy; the first idle
    look after some requests trims, later idle looks do not; 0 s turns it off."""
    from service.memory import IdleTrim

    calls: list[int] = []
    idle = IdleTrim(5.0, trim=lambda: calls.append(1) or True)
    assert IdleTrim.from_env().idle_s == 2.0 and idle.in_flight() == 0
    assert not idle.check() and not calls  # nothing ever came: nothing to give back
    for _ in range(3):
        idle.seen()
    assert not idle.check()  # requests came since the last look
    assert idle.check() and idle.trims == 1 and len(calls) == 1
    assert not idle.check() and len(calls) == 1  # once per idle spell
    idle.seen()
    idle.in_flight = lambda: 1
    assert not idle.check() and not idle.check()  # one still in flight
    idle.in_flight = lambda: 0
    assert idle.check() and idle.trims == 2
    assert not IdleTrim(0.0).start()
    quick = IdleTrim(0.05, trim=lambda: calls.append(2) or True)
    quick.seen()
    try:
        assert quick.start() and not quick.start()  # one thread
        deadline = time.monotonic() + 5
        while quick.trims < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls[-1] == 2 and quick.trims == 1
        (thread,) = [t for t in threading.enumerate() if t.name == "vision-trim"]
        assert thread.daemon and thread is quick._thread
    finally:
        assert quick.stop(timeout=5)  # the thread ends at once: it waits on the stop signal
    assert not quick._thread.is_alive() and IdleTrim(5.0).stop()  # never started: nothing left
    slow = IdleTrim(60.0)  # stopped well before its first look
    assert slow.start()
    t0 = time.monotonic()
    assert slow.stop(timeout=10) and time.monotonic() - t0 < 5 and slow.trims == 0


@pytest.mark.parametrize("pinned", [False, True])
def test_pinned_mmap_threshold_returns_freed_buffers_at_once(pinned):
    """In a fresh process: after one 2 MB buffer is freed, glibc would serve 500 KB buffers
    from the heap, where they stay when freed; with the threshold pinned at 128 KiB each has
    its own mmap and the memory goes back as they are freed; 0 leaves glibc's default."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import gc, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
import psutil
from service.memory import pin_mmap_threshold
assert pin_mmap_threshold({128 if pinned else 0}) is {pinned}
rss = lambda: psutil.Process().memory_info().rss / 2**20
big = bytearray(2_000_000)
del big
blobs, pins = [], []
for _ in range(100):  # each buffer followed by a small one that stays: holes, not a free top
    blobs.append(bytearray(500_000))
    pins.append(bytearray(2000))
peak = rss()
del blobs
gc.collect()
print(round(peak - rss()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    freed_mb = int(done.stdout)
    if pinned:  # (unpinned, what stays depends on the heap's history: the soak measures it)
        assert freed_mb >= 40, done


def test_malloc_trim_returns_freed_heap_memory_to_the_os():
    """In a fresh process: 50 MB of 100 KB buffers freed under a live allocation stay in the
    heap (RSS unchanged) until ``malloc_trim`` hands them back."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import gc, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
import psutil
from service.memory import malloc_trim
rss = lambda: psutil.Process().memory_info().rss / 2**20
blobs = [bytearray(100_000) for _ in range(500)]
pins = [bytearray(2000) for _ in range(50)]  # above the buffers: the heap top stays in use
del blobs
gc.collect()
held = rss()
print(malloc_trim(), round(held - rss()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    trimmed, freed_mb = done.stdout.split()
    assert trimmed == "True" and int(freed_mb) >= 30, done


def test_drain_default_action_follows_the_handler_it_replaced():
    import signal

    from service.drain import Drain

    d = Drain()
    for previous, default in ((None, True), (signal.SIG_DFL, True), (signal.SIG_IGN, False),
                              (lambda s, f: None, False)):  # fmt: skip
        d._previous = previous
        assert d._default_action() is default, previous


def test_idle_trim_counts_reads_its_setting_and_logs(monkeypatch, caplog):
    import logging

    from service.memory import IdleTrim, _libc, malloc_trim

    assert _libc() is not None and malloc_trim() is True  # glibc here
    monkeypatch.setenv("VISION_TRIM_IDLE_S", "0.5")
    assert IdleTrim.from_env().idle_s == 0.5
    idle = IdleTrim(0.05, trim=lambda: True)
    for _ in range(3):
        idle.seen()
    assert idle.requests == 3
    never = IdleTrim(5.0, trim=lambda: True)
    assert not never.check() and not never.check() and never.trims == 0  # no request yet
    with caplog.at_level(logging.DEBUG, logger="vision.service"):
        try:
            idle.start()
            deadline = time.monotonic() + 5
            while idle.trims < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
        finally:
            assert idle.stop(timeout=5)
    assert "idle: freed memory given back to the OS (trim 1)" in caplog.messages


@pytest.mark.parametrize(
    ("env", "torch_on_cpu", "want"),
    [
        ({}, False, 128),  # runtime backends or CUDA: bodies and images in their own mmaps
        ({}, True, 0),  # torch on the CPU: its activations would each be a fresh mmap
        ({"VISION_MMAP_THRESHOLD_KB": "256"}, True, 256),  # an explicit setting wins
        ({"VISION_MMAP_THRESHOLD_KB": "0"}, False, 0),
    ],
)
def test_mmap_threshold_is_pinned_unless_torch_runs_a_model_on_the_cpu(env, torch_on_cpu, want):
    from service.memory import mmap_threshold_kib

    assert mmap_threshold_kib(env, torch_on_cpu) == want
