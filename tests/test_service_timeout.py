"""The request timeout middleware (service/timeout.py), driven in process through ASGI."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json

import pytest

from service.timeout import RequestTimeout, install

SPAN = contextvars.ContextVar("span")  # stands for the tracing span a server sets per request


class Span:
    alive = 0

    def __init__(self) -> None:
        Span.alive += 1

    def __del__(self) -> None:
        Span.alive -= 1


def traced(app):
    """An outer middleware that, like OpenTelemetry's, puts a span in the request's context
    and takes it out again once the request is answered."""

    async def middleware(scope, receive, send):
        token = SPAN.set(Span())
        try:
            await app(scope, receive, send)
        finally:
            SPAN.reset(token)

    return middleware


SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def call(app) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(3600)  # no disconnect while the test runs

    async def send(message):
        sent.append(message)

    await asyncio.get_running_loop().create_task(app(SCOPE, receive, send))
    return sent


async def answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def status_and_body(sent: list[dict]) -> tuple[int, bytes]:
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_answered_requests_leave_no_armed_timer_holding_their_context():
    app = traced(RequestTimeout(answer, timeout=120))

    async def run():
        for _ in range(400):
            assert status_and_body(await call(app)) == (200, b"ok")
        loop = asyncio.get_running_loop()
        armed = [h for h in loop._scheduled if not h.cancelled()]
        gc.collect()
        return len(armed), Span.alive

    armed, alive = asyncio.run(run())
    assert armed == 0
    # cancelled timers still hold their context until the loop sweeps them (it does once they
    # are more than half of >100 scheduled): a bounded few, not one per request
    assert alive <= 101


def test_no_response_within_the_timeout_is_a_504_and_the_handler_is_cancelled():
    events = []

    async def stuck(scope, receive, send):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    sent = asyncio.run(call(RequestTimeout(stuck, timeout=0.2)))
    status, body = status_and_body(sent)
    assert status == 504 and events == ["cancelled"]
    assert json.loads(body) == {"error": "the request was not answered within 0.2 seconds"}


def test_a_response_already_started_is_never_cut():
    async def slow_body(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late but whole"})

    sent = asyncio.run(call(RequestTimeout(slow_body, timeout=0.1)))
    assert status_and_body(sent) == (200, b"late but whole")


def test_errors_pass_through_and_a_cancelled_request_cancels_its_handler():
    async def broken(scope, receive, send):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(call(RequestTimeout(broken, timeout=5)))

    events = []

    async def slow(scope, receive, send):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("handler cancelled")
            raise

    async def run():
        outer = asyncio.get_running_loop().create_task(
            RequestTimeout(slow, timeout=60)(SCOPE, None, None)
        )
        await asyncio.sleep(0.05)
        outer.cancel()  # the server drops the connection's task
        with pytest.raises(asyncio.CancelledError):
            await outer
        for _ in range(3):
            await asyncio.sleep(0)
        return list(events)  # before asyncio.run cancels whatever is left

    assert asyncio.run(run()) == ["handler cancelled"]


def test_other_scopes_pass_untouched():
    seen = []

    async def lifespan(scope, receive, send):
        seen.append((scope["type"], receive, send))

    receive, send = object(), object()
    asyncio.run(RequestTimeout(lifespan, timeout=0.01)({"type": "lifespan"}, receive, send))
    assert seen == [("lifespan", receive, send)]


def test_the_handler_gets_the_request_and_a_websocket_times_out_too():
    seen, sent = [], []

    async def handler(scope, receive, send):
        seen.append((scope, receive))
        await asyncio.sleep(3600)

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = dict(SCOPE, type="websocket")
    asyncio.run(asyncio.wait_for(RequestTimeout(handler, timeout=0.01)(scope, receive, send), 5))
    assert seen == [(scope, receive)] and sent[0]["status"] == 504


def test_a_handler_that_fails_at_once_is_not_held_for_the_timeout():
    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # at once, not after 30 s
        asyncio.run(asyncio.wait_for(call(RequestTimeout(failing, timeout=30)), 5))


def test_without_bentoml_s_middleware_it_says_so(monkeypatch, caplog):
    import importlib
    import sys

    # as if this BentoML had no such module (whether or not it was imported already)
    http = importlib.import_module("bentoml._internal.server.http")
    monkeypatch.delattr(http, "traffic", raising=False)
    monkeypatch.setitem(sys.modules, "bentoml._internal.server.http.traffic", None)
    with caplog.at_level("WARNING", logger="vision.service"):
        assert install() is False
    assert caplog.messages == [
        "BentoML's TimeoutMiddleware not found: request timeouts left as they are"
    ]


def test_the_service_puts_it_in_place_of_bentomls_timeout_middleware():
    from bentoml._internal.server.http import traffic

    import service.service  # noqa: F401 - installs it on import

    assert traffic.TimeoutMiddleware is RequestTimeout
    traffic.TimeoutMiddleware = object
    assert install() is True and traffic.TimeoutMiddleware is RequestTimeout
