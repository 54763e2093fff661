"""The adaptive batcher, in process, with hand-made forward passes."""

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
