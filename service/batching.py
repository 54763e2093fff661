"""Adaptive batching across concurrent requests, on decoded and resized images.

Requests put one resized image on a bounded queue and await the result; one worker takes
everything already waiting (up to ``max_batch``), optionally waits ``max_wait_ms`` for more,
runs one stacked forward pass on its own inference thread, and hands each request its output.
While a batch runs, new requests pile up and form the next batch, so an idle server adds no
delay and a busy one batches by itself. A full queue answers at once with 503 instead of
letting requests time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.uploads import ClientError


def inference_thread() -> ThreadPoolExecutor:
    """The one thread that should run every torch op of a serving process.

    torch's OpenMP team belongs to the thread that starts it. Two threads doing torch work
    (say, the main thread that built the model and a worker that runs it) make two teams, and
    once libgomp manages more threads than there are cores it stops spin-waiting between
    parallel regions: measured here, FCN-8s (ResNet-18, 160 px, 2 threads) ran 24-25 ms per
    forward on a worker thread beside a main-thread team, and 17-18 ms when the same worker
    thread had also built the model (as fast as the main thread alone).
    """
    return ThreadPoolExecutor(1, thread_name_prefix="vision-infer")


class Batcher:
    """Batches ``submit``-ted items into forward passes on the inference thread.

    ``deadline_s``: an item that waited longer in the queue is answered 503 and not inferred;
    an item whose request is gone (``gone()`` true, or its future cancelled) is dropped.
    ``busy_since`` is when the running forward pass started (None when idle): the service's
    health checks call a pass that runs too long stuck."""

    def __init__(
        self,
        infer: Callable[[list], list],
        max_batch: int = 8,
        max_wait_ms: float = 0.0,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
        pool: ThreadPoolExecutor | None = None,
        deadline_s: float | None = None,
    ):
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000
        self.max_queue, self.deadline_s = max_queue, deadline_s
        self.on_batch = on_batch
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = pool or inference_thread()
        self.busy_since: float | None = None
        self.dropped = {"client_gone": 0, "deadline": 0}

    def _ensure(self) -> None:
        if self._task is None or self._task.done():
            self.queue = asyncio.Queue(self.max_queue)
            self._task = asyncio.get_running_loop().create_task(self._worker())

    async def submit(self, x, post: Callable | None = None, gone: Callable | None = None):
        """Queue one item (a resized image); returns its model output (or ``post(output)``,
        run on the inference thread right after the batch's forward pass, so a batch costs one
        thread hop, not one per request), the batch size used, the forward time, the time it
        waited in the queue and the time ``post`` took. ``gone``: an async callable that says
        whether the request's client has left (checked before the item is inferred)."""
        self._ensure()
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((x, post, fut, time.perf_counter(), gone))
        except asyncio.QueueFull:
            raise ClientError(
                503,
                f"server busy: {self.max_queue} images are already queued "
                "for inference; retry shortly",
                queued=self.max_queue,
            ) from None
        return await fut

    def stuck(self, limit_s: float) -> bool:
        """Whether a forward pass has been running for more than ``limit_s`` seconds."""
        since = self.busy_since
        return since is not None and time.perf_counter() - since > limit_s

    async def _collect(self, loop) -> list:
        first = await self.queue.get()
        items = [first]
        while len(items) < self.max_batch and not self.queue.empty():
            items.append(self.queue.get_nowait())
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch and self.max_wait > 0:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                break
        return items

    async def _live(self, items: list) -> list:
        """The items still worth inferring: not cancelled, client present, within deadline."""
        now, live = time.perf_counter(), []
        for it in items:
            _, _, fut, queued_at, gone = it
            if fut.done():
                self.dropped["client_gone"] += 1
            elif self.deadline_s is not None and now - queued_at > self.deadline_s:
                self.dropped["deadline"] += 1
                fut.set_exception(
                    ClientError(
                        503,
                        f"deadline passed: waited {now - queued_at:.1f} s for inference "
                        f"(limit {self.deadline_s:g} s); retry shortly",
                    )
                )
            elif gone is not None and await gone():
                self.dropped["client_gone"] += 1
                fut.cancel()
            else:
                live.append(it)
        return live

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._live(await self._collect(loop))
            if not items:
                continue
            t0 = time.perf_counter()
            try:
                outs, ms = await loop.run_in_executor(self._pool, self._batch, items)
            except Exception as e:  # the model failed: every waiting request learns why
                for it in items:
                    if not it[2].done():
                        it[2].set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(items), ms)
            for (_, _, fut, queued_at, _), (out, post_ms) in zip(items, outs, strict=True):
                if fut.done():
                    continue
                if isinstance(out, BaseException):  # this request's post-processing failed
                    fut.set_exception(out)
                else:
                    fut.set_result((out, len(items), ms, (t0 - queued_at) * 1000, post_ms))

    def _batch(self, items: list) -> tuple[list, float]:
        """On the inference thread: one forward pass, then each item's ``post``."""
        t0 = self.busy_since = time.perf_counter()
        try:
            outs = self.infer([it[0] for it in items])
        finally:
            self.busy_since = None
        ms = (time.perf_counter() - t0) * 1000
        done = []
        for it, out in zip(items, outs, strict=True):
            t1 = time.perf_counter()
            try:
                res = it[1](out) if it[1] is not None else out
            except Exception as e:  # noqa: BLE001 - handed to that request alone
                res = e
            done.append((res, (time.perf_counter() - t1) * 1000))
        return done, ms
