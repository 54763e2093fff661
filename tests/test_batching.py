"""The adaptive batcher and the SIGTERM drain, in process, with hand-made forward passes."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from service.batching import Batcher
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
