"""The adaptive batcher and the SIGTERM drain, in process, with hand-made forward passes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from service.batching import Batcher, inference_thread
from service.uploads import ClientError


def test_batcher_groups_concurrent_requests_and_refuses_when_full():
    sizes = []

    def slow(x):
        time.sleep(0.05)
        return [x[i].sum() for i in range(len(x))]

    async def main():
        b = Batcher(slow, max_batch=8, max_queue=16, on_batch=lambda n, ms: sizes.append(n))
        await b.submit(torch.zeros(1, 2, 2))  # alone: runs at once as a batch of one
        res = await asyncio.gather(*[b.submit(torch.full((1, 2, 2), float(i))) for i in range(9)])
        assert [float(r[0]) for r in res] == [4.0 * i for i in range(9)]  # each gets its own
        full = Batcher(slow, max_batch=1, max_queue=2)
        out = await asyncio.gather(
            *[full.submit(torch.zeros(1, 2, 2)) for _ in range(6)], return_exceptions=True
        )
        return out

    out = asyncio.run(main())
    assert sizes[:3] == [1, 8, 1]  # a lone request alone; 9 waiting ones as 8 + 1
    refused = [o for o in out if isinstance(o, ClientError)]
    assert refused and all(o.status == 503 and "busy" in o.detail["error"] for o in refused)


def test_batcher_failures_wait_and_deadlines():
    """A raising forward pass fails every request of its batch (and the next batch works);
    a failing post-processing fails only its request; max_wait_ms gathers requests that
    arrive a little later; a request past its deadline is answered 503 and not inferred."""
    seen: list[list] = []

    def infer(xs):
        seen.append(list(xs))
        if "boom" in xs:
            raise RuntimeError("forward failed")
        return [f"out:{x}" for x in xs]

    def post(out):
        if out == "out:bad":
            raise ValueError("post failed")
        return out.upper()

    async def main():
        b = Batcher(infer, max_batch=8, max_queue=16)
        await b.submit("warm")
        res = await asyncio.gather(
            *[b.submit(x, post) for x in ("a", "boom", "c")], return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in res), res  # the whole batch failed
        res = await asyncio.gather(
            *[b.submit(x, post) for x in ("a", "bad", "c")], return_exceptions=True
        )
        assert [r[0] for r in (res[0], res[2])] == ["OUT:A", "OUT:C"]
        assert isinstance(res[1], ValueError)
        waiting = Batcher(infer, max_batch=8, max_wait_ms=300)

        async def later(x, delay):
            await asyncio.sleep(delay)
            return await waiting.submit(x)

        got = await asyncio.gather(later("p", 0), later("q", 0.05), later("r", 0.1))
        assert [g[1] for g in got] == [3, 3, 3]  # one batch of three
        slow = Batcher(lambda xs: (time.sleep(0.3), list(xs))[1], max_batch=1, deadline_s=0.1)
        res = await asyncio.gather(*[slow.submit(x) for x in "uvw"], return_exceptions=True)
        late = [r for r in res if isinstance(r, ClientError)]
        assert late and all(e.status == 503 and "deadline" in e.detail["error"] for e in late)
        assert slow.dropped["deadline"] == len(late)

        async def gone():
            return True

        with pytest.raises(asyncio.CancelledError):
            await waiting.submit("left", gone=gone)
        assert waiting.dropped["client_gone"] == 1

    asyncio.run(main())
    assert ["a", "boom", "c"] in seen and "left" not in [x for s in seen for x in s]


def test_batcher_reports_a_stuck_forward_pass_only_while_it_runs():
    async def main():
        b = Batcher(lambda xs: (time.sleep(0.4), list(xs))[1], max_batch=1)
        assert not b.stuck(0.0)  # idle: never stuck
        task = asyncio.ensure_future(b.submit("x"))
        await asyncio.sleep(0.25)
        during = (b.stuck(0.1), b.stuck(5.0))
        await task
        return during, b.stuck(0.0)

    during, after = asyncio.run(main())
    assert during == (True, False) and after is False


def test_batcher_defaults_and_its_one_inference_thread():
    """Defaults as documented; every forward pass runs on the one "vision-infer" thread
    (torch's OpenMP team belongs to one thread); the pool really has a single worker."""
    threads: list[str] = []

    def infer(xs):
        threads.append(threading.current_thread().name)
        return list(xs)

    b = Batcher(infer)
    assert (b.max_batch, b.max_wait, b.max_queue, b.deadline_s) == (8, 0.0, 64, None)
    assert b.queue is None and Batcher(infer, max_wait_ms=250).max_wait == 0.25

    async def main():
        for x in "abc":
            await b.submit(x)

    asyncio.run(main())
    assert len(threads) == 3 and set(threads) == {"vision-infer_0"}, threads
    pool = inference_thread()
    jobs = [pool.submit(lambda: (time.sleep(0.05), threading.get_ident())[1]) for _ in range(3)]
    assert len({j.result() for j in jobs}) == 1  # one worker: the busy thread takes them all
    pool.shutdown()


def test_batcher_queue_full_message_and_batch_bounds():
    """The 503 of a full queue word for word; ``max_batch`` holds while ``max_wait_ms``
    gathers; a wait shorter than the loop's own step still answers; ``on_batch`` gets the
    forward time in ms."""
    calls: list[tuple[int, float]] = []

    def slow(xs):
        time.sleep(0.1)
        return list(xs)

    async def main():
        full = Batcher(slow, max_batch=1, max_queue=2)
        out = await asyncio.gather(*[full.submit(i) for i in range(5)], return_exceptions=True)
        refused = [o for o in out if isinstance(o, ClientError)]
        assert len(refused) == 3 and refused[0].detail == {
            "error": "server busy: 2 images are already queued for inference; retry shortly",
            "queued": 2,
        }
        b = Batcher(
            slow, max_batch=2, max_wait_ms=400, on_batch=lambda n, ms: calls.append((n, ms))
        )

        async def later(x, delay):
            await asyncio.sleep(delay)
            return await b.submit(x)

        got = await asyncio.gather(*[later(x, 0.03 * i) for i, x in enumerate("pqr")])
        assert [g[1] for g in got] == [2, 2, 1]
        tiny = Batcher(lambda xs: list(xs), max_wait_ms=1e-6)
        assert (await asyncio.wait_for(tiny.submit("t"), 2))[0] == "t"

    asyncio.run(main())
    assert [n for n, _ in calls] == [2, 1] and all(95 < ms < 2000 for _, ms in calls), calls


def test_batcher_counts_every_request_that_left_and_keeps_serving_the_rest():
    """Requests cancelled in the queue or gone before inference are counted one by one; a
    batch with nobody left does not stop the worker; a request cancelled during the forward
    pass does not keep the rest of its batch from their answers; a generous deadline keeps
    everything, a tight one says how long the request waited."""

    def slow(xs):
        time.sleep(0.2)
        return list(xs)

    async def gone():
        return True

    async def main():
        b = Batcher(slow, max_batch=1, max_queue=16)
        first = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.05)  # "a" is in its forward pass; the rest wait in the queue
        queued = [asyncio.ensure_future(b.submit(x)) for x in "bc"]
        left = [asyncio.ensure_future(b.submit(x, gone=gone)) for x in "de"]
        last = asyncio.ensure_future(b.submit("f"))
        await asyncio.sleep(0.01)
        for q in queued:
            q.cancel()
        assert (await asyncio.wait_for(first, 2))[0] == "a"
        assert (await asyncio.wait_for(last, 2))[0] == "f"  # served after five drops
        assert b.dropped == {"client_gone": 4, "deadline": 0}
        assert all(t.cancelled() for t in queued + left)

        many = Batcher(slow, max_batch=8)
        batch = [asyncio.ensure_future(many.submit(x)) for x in "xyz"]
        await asyncio.sleep(0.05)
        batch[0].cancel()  # during the forward pass of all three
        rest = await asyncio.wait_for(asyncio.gather(*batch[1:]), 2)
        assert [r[0] for r in rest] == ["y", "z"]

        roomy = Batcher(slow, max_batch=1, deadline_s=30.0)
        got = await asyncio.gather(*[roomy.submit(x) for x in "gh"])
        assert [g[0] for g in got] == ["g", "h"] and roomy.dropped["deadline"] == 0
        tight = Batcher(slow, max_batch=1, deadline_s=0.1)
        res = await asyncio.gather(*[tight.submit(x) for x in "ij"], return_exceptions=True)
        waited = float(res[1].detail["error"].split("waited ")[1].split(" s")[0])
        assert 0.1 <= waited <= 1.0, res[1].detail

    asyncio.run(main())


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
    assert quick.start() and not quick.start()  # one thread
    deadline = time.monotonic() + 5
    while quick.trims < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls[-1] == 2 and quick.trims == 1
    assert [t for t in threading.enumerate() if t.name == "vision-trim"][0].daemon


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


def test_batcher_keeps_serving_after_a_failed_forward_and_times_each_stage():
    """A request queued behind a failing forward pass is still answered; the answer's times
    are milliseconds: the forward pass, the wait in the queue behind the batch before it, and
    the item's own post-processing."""

    def infer(xs):
        time.sleep(0.1)
        if "boom" in xs:
            raise RuntimeError("forward failed")
        return list(xs)

    def post(out):
        time.sleep(0.05)
        return out

    async def main():
        b = Batcher(infer, max_batch=1)
        res = await asyncio.wait_for(
            asyncio.gather(b.submit("boom"), b.submit("ok", post), return_exceptions=True), 5
        )
        assert isinstance(res[0], RuntimeError)
        out, size, forward_ms, queued_ms, post_ms = res[1]
        assert (out, size) == ("ok", 1)
        assert 90 < forward_ms < 1000 and 90 < queued_ms < 1000 and 40 < post_ms < 1000

    asyncio.run(main())


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
        idle.start()
        deadline = time.monotonic() + 5
        while idle.trims < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
    assert "idle: freed memory given back to the OS (trim 1)" in caplog.messages
