"""The request timeout (``traffic.timeout``), without the memory BentoML's own keeps.

BentoML's ``TimeoutMiddleware`` (1.4.x) arms one ``loop.call_later(timeout, ...)`` per request
and never cancels it. Each armed timer holds a copy of the request's context, and with it the
request's OpenTelemetry span (attributes, events, locks: a few KB), for the full timeout after
the answer has gone. At 600 clients, most of whose requests are refused at once for overload
and retried, that is ~450 requests/s × 120 s: 48,000 live spans and +300 MB of RSS in
``bench/service_soak.py``, given back only as the timers fire (counted by type in the worker,
``bench/records/cpu_2026-12-02c/soak/``).

:class:`RequestTimeout` keeps BentoML's behaviour (504 with a JSON body when no response has
started within ``timeout`` seconds; once started, a response is never cut) and cancels its
timer as soon as the request is answered; the event loop then drops cancelled timers in bulk.
It also cancels the handler when the client's connection task itself is cancelled.
:func:`install` puts it in place of BentoML's class (same constructor); the service module
calls it before BentoML builds the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import JSONResponse

logger = logging.getLogger("vision.service")


class RequestTimeout:
    """ASGI middleware: ``timeout`` seconds for a request to start its response."""

    def __init__(self, app, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.create_future()  # set by the response's first message

        async def send_and_mark(message) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        task = loop.create_task(self.app(scope, receive, send_and_mark))
        try:
            # asyncio.wait arms one timer and cancels it on the way out, whatever happens
            done, _ = await asyncio.wait(
                (started, task), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the connection is gone: so is its handler
            task.cancel()
            raise
        if done:  # answered or answering: no timeout from here on
            return await task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not started.done():  # nothing sent yet: the 504 can still be
            await JSONResponse(
                {"error": f"the request was not answered within {self.timeout:g} seconds"},
                status_code=504,
            )(scope, receive, send)


def install() -> bool:
    """Use :class:`RequestTimeout` wherever BentoML builds its timeout middleware. False (and
    a warning) when this BentoML has no such class to replace."""
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:
        traffic = None
    if not hasattr(traffic, "TimeoutMiddleware"):  # (None has no such attribute either)
        logger.warning("BentoML's TimeoutMiddleware not found: request timeouts left as they are")
        return False
    traffic.TimeoutMiddleware = RequestTimeout
    return True
