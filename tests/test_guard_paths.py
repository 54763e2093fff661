"""Every path through the request guard, in process, against an app that records what reaches
it: the body replayed byte for byte, the types refused (415), the declared and the counted
size (413 with the limit), a client that leaves mid-upload, malformed forms (400), the image
that must be a file part (422), the routes and the protocols it leaves alone, its defaults and
its counters."""

from __future__ import annotations

import asyncio

import pytest

from service.drain import Drain
from service.guard import ACCEPTED, RequestGuard
from service.memory import IdleTrim

from .test_guard_limits import _jpeg, client, run


class Recorder:
    """The app behind the guard: records the scope and every body byte it receives, answers
    200 with the body's length; a second receive() after the body waits for the disconnect."""

    def __init__(self):
        self.scopes, self.bodies, self.after = [], [], []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        body = b""
        if scope["type"] == "http" and scope["method"] == "POST":
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def _post(guard, path="/detect", **kw):
    async with client(guard) as c:
        return await c.post(path, **kw)


def test_an_accepted_upload_reaches_the_app_byte_for_byte():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=10**6)
    r = run(_post(guard, files={"image": ("a.jpg", _jpeg())}, data={"score_threshold": "0.5"}))
    assert r.status_code == 200 and len(app.bodies) == 1
    sent = app.bodies[0]
    assert int(r.text) == len(sent) and _jpeg() in sent and b"score_threshold" in sent
    assert app.scopes[0]["path"] == "/detect" and guard.pending == 0


def test_the_replay_gives_the_body_once_then_waits_for_the_client():
    seen = []

    async def app(scope, receive, send):
        seen.append(await receive())
        waiting = asyncio.ensure_future(receive())  # the body is spent: this waits
        await asyncio.sleep(0.05)
        seen.append(waiting.done())
        waiting.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app, max_bytes=10**6)
    r = run(_post(guard, files={"image": ("a.jpg", _jpeg())}))
    assert r.status_code == 200
    first = seen[0]
    assert first["type"] == "http.request" and first["more_body"] is False
    assert _jpeg() in first["body"] and seen[1] is False


@pytest.mark.parametrize(
    "kw, got",
    [
        ({"json": {"image": "http://x/a.jpg"}}, "application/json"),
        ({"content": b"raw"}, "no body type"),
        ({"data": {"image": "x"}}, "application/x-www-form-urlencoded"),
    ],
)
def test_other_body_types_are_415(kw, got):
    app = Recorder()
    r = run(_post(RequestGuard(app, max_bytes=10**6), **kw))
    assert r.status_code == 415 and app.bodies == []
    assert r.json() == {"error": f"expected {ACCEPTED}, got {got}"}


def test_a_get_on_an_upload_route_is_415_too():
    async def get():
        async with client(RequestGuard(Recorder(), max_bytes=10**6)) as c:
            return await c.get("/detect", headers={"content-type": "multipart/form-data; b=x"})

    r = run(get())
    assert r.status_code == 415 and r.json()["error"].endswith("got multipart/form-data; b=x")


def test_a_declared_size_over_the_limit_is_413_unread():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=100)
    r = run(_post(guard, files={"image": ("a.jpg", b"x" * 500)}))
    assert r.status_code == 413 and app.bodies == []
    body = r.json()
    assert body["limit"] == 100 and body["error"].startswith("request body is ")
    assert body["error"].endswith(" bytes or more: the limit is 100 bytes")
    declared = int(body["error"].split()[3])
    assert declared > 500


def test_a_counted_size_over_the_limit_is_413_where_reading_stopped():
    async def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(10):
            yield b"y" * 40

    app = Recorder()
    guard = RequestGuard(app, max_bytes=200)
    headers = {"content-type": "multipart/form-data; boundary=b"}
    r = run(_post(guard, content=chunks(), headers=headers))
    assert r.status_code == 413 and app.bodies == []
    size = int(r.json()["error"].split()[3])
    assert 200 < size <= 200 + 80  # counted as it arrived, stopped at the first chunk over


def test_exactly_the_limit_passes():
    app = Recorder()
    data = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nxyz\r\n--b--\r\n'
    )
    guard = RequestGuard(app, max_bytes=len(data))
    headers = {"content-type": "multipart/form-data; boundary=b"}
    assert run(_post(guard, content=data, headers=headers)).status_code == 200
    assert app.bodies == [data]
    guard = RequestGuard(app, max_bytes=len(data) - 1)
    assert run(_post(guard, content=data, headers=headers)).status_code == 413


def test_a_client_that_leaves_mid_upload_gets_no_answer_and_no_inference():
    app, sent = Recorder(), []
    guard = RequestGuard(app, max_bytes=10**6)
    messages = iter(
        [
            {"type": "http.request", "body": b"--b\r\n", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive():
        return next(messages)

    async def send(m):
        sent.append(m)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/detect",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
        "query_string": b"",
    }
    run(guard(scope, receive, send))
    assert sent == [] and app.bodies == [] and guard.pending == 0


@pytest.mark.parametrize(
    "body, status, says",
    [
        (b"--b\r\nnot a part\r\n--b--\r\n", 400, "expected a well-formed multipart form"),
        (
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n'
            + b"v" * 2000
            + b"\r\n--b--\r\n",
            413,
            "of at most 1024 bytes each",
        ),
    ],
)
def test_malformed_or_oversized_forms(body, status, says):
    app = Recorder()
    headers = {"content-type": "multipart/form-data; boundary=b"}
    r = run(_post(RequestGuard(app, max_bytes=10**6), content=body, headers=headers))
    assert r.status_code == status and app.bodies == []
    error = r.json()["error"]
    assert says in error and error.startswith(
        "expected a well-formed multipart form with at most 16 fields of at most 1024 bytes each "
        "and one file, got: "
    )


def test_the_form_limits_are_the_guards():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=10**6, max_fields=2, max_field_bytes=10)
    ok = run(_post(guard, files={"image": ("a.jpg", _jpeg())}, data={"a": "1234567890"}))
    assert ok.status_code == 200
    long = run(_post(guard, files={"image": ("a.jpg", _jpeg())}, data={"a": "12345678901"}))
    assert long.status_code == 413
    assert "at most 2 fields of at most 10 bytes each" in long.json()["error"]
    two_files = run(_post(guard, files=[("image", ("a.jpg", b"1")), ("other", ("b.jpg", b"2"))]))
    assert two_files.status_code == 413 and "one file" in two_files.json()["error"]


def test_the_image_must_be_a_file_part():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=10**6)
    none = run(_post(guard, files={"picture": ("a.jpg", _jpeg())}))
    assert none.status_code == 422 and none.json() == {
        "error": f"'image': expected {ACCEPTED}, got no 'image' field",
        "field": "image",
    }
    url = "http://example.com/" + "a" * 80
    text = run(_post(guard, files={"x": ("a.jpg", b"1")}, data={"image": url}))
    assert text.status_code == 422 and text.json()["field"] == "image"
    assert text.json()["error"] == (
        f"'image': expected {ACCEPTED}, got a text field ({url[:60]!r}); URLs, paths and base64 "
        "strings are not accepted: nothing is downloaded"
    )
    assert app.bodies == []


def test_routes_not_declared_and_other_protocols_pass_untouched():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=10, routes={})
    r = run(_post(guard, content=b"x" * 100))
    assert r.status_code == 200 and app.bodies == [b"x" * 100]
    seen = []

    async def ws_app(scope, receive, send):
        seen.append(scope["type"])

    ws = RequestGuard(ws_app, max_bytes=10)
    run(ws({"type": "websocket", "path": "/detect"}, None, None))
    run(ws({"type": "lifespan"}, None, None))
    assert seen == ["websocket", "lifespan"]


def test_defaults_counters_and_hooks():
    g = RequestGuard(Recorder(), max_bytes=5)
    assert (g.max_pending, g.max_fields, g.max_field_bytes, g.retry_after_s) == (64, 16, 1024, 1)
    assert g.pending == 0 and g.refused == 0 and g.keys is None and g.limiter is None
    assert "/detect" in g.routes and g.drain is None and g.idle is None
    drain, idle = Drain(0.0, 0.0), IdleTrim(1.0)
    h = RequestGuard(Recorder(), max_bytes=5, drain=drain, idle=idle)
    h.pending = 3
    assert drain.in_flight() == 3 and idle.in_flight() == 3 and h.idle is idle
    seen = []
    idle.seen = lambda: seen.append(1)
    run(_post(h, files={"image": ("a.jpg", b"1")}))
    assert seen == [1]  # a model route marks the service busy
    seen.clear()
    run(_post(h, path="/info"))
    assert seen == []


def test_refusals_count_and_the_busy_answer_is_a_json_body():
    async def scenario():
        release = asyncio.Event()

        async def slow(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        g = RequestGuard(slow, max_bytes=10**6, max_pending=1, retry_after_s=7)
        async with client(g) as c:
            first = asyncio.create_task(c.post("/detect", files={"image": ("a.jpg", b"1")}))
            while g.pending < 1:
                await asyncio.sleep(0.01)
            busy = [await c.post("/detect", files={"image": ("a.jpg", b"1")}) for _ in range(2)]
            release.set()
            await first
        return g, busy

    g, busy = run(scenario())
    assert g.refused == 2 and [r.status_code for r in busy] == [503, 503]
    assert busy[0].headers["retry-after"] == "7" and busy[0].json()["pending"] == 1


def _scope(path="/info", client=("1.2.3.4", 5000), headers=(), method="POST"):
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": list(headers),
        "query_string": b"",
        "client": client,
    }


async def _raw(guard, scope, messages):
    """One request through the guard with raw ASGI messages; returns (status, body)."""
    sent, it = [], iter(messages)

    async def receive():
        return next(it, {"type": "http.disconnect"})

    async def send(m):
        sent.append(m)

    await guard(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_messages_without_body_or_more_body_keys():
    app = Recorder()
    guard = RequestGuard(app, max_bytes=10**6)
    ctype = [(b"content-type", b"multipart/form-data; boundary=b")]
    form = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nx\r\n--b--\r\n'
    )
    msgs = [{"type": "http.request", "more_body": True}, {"type": "http.request", "body": form}]
    status, _ = run(_raw(guard, _scope("/detect", headers=ctype), msgs))
    assert status == 200 and app.bodies == [form]  # no "body": nothing; no "more_body": the end


def test_the_counted_413_names_the_limit():
    async def chunks():
        for _ in range(5):
            yield b"z" * 100

    r = run(
        _post(
            RequestGuard(Recorder(), max_bytes=250),
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    )
    assert r.status_code == 413 and r.json()["limit"] == 250
    assert r.json()["error"] == "request body is 300 bytes or more: the limit is 250 bytes"


def test_model_routes_without_uploads_pass_whole():
    from service.routes import Policy

    app = Recorder()
    guard = RequestGuard(app, max_bytes=1, routes={"/x": Policy(model=True, upload=False)})
    status, body = run(_raw(guard, _scope("/x"), [{"type": "http.request", "body": b"abc"}]))
    assert status == 200 and app.bodies == [b"abc"] and body == b"3" and guard.pending == 0
    assert app.scopes[0]["path"] == "/x"


def test_refusals_are_counted_by_key_name(tmp_path):
    from service.access import AUTH_REFUSED, RATE_LIMITED, KeyRing, Rate, RateLimiter, create_key

    path = tmp_path / "keys.txt"
    alice = create_key(path, "alice")
    app = Recorder()
    seen = []

    async def named(scope, receive, send):
        seen.append(scope["state"]["vision_key"])
        await app(scope, receive, send)

    limiter = RateLimiter(Rate.parse("1/h,burst=1"), clock=lambda: 0.0)
    guard = RequestGuard(
        named, max_bytes=10**6, keys=KeyRing(path, check_every_s=0), limiter=limiter
    )

    def count(metric, key):
        return metric.labels(key=key)._value.get()

    m0, u0 = count(AUTH_REFUSED, "missing"), count(AUTH_REFUSED, "unknown")
    assert run(_raw(guard, _scope(), []))[0] == 401
    assert count(AUTH_REFUSED, "missing") == m0 + 1 and count(AUTH_REFUSED, "unknown") == u0
    bad = [(b"x-api-key", b"vk_wrong")]
    assert run(_raw(guard, _scope(headers=bad), []))[0] == 401
    assert count(AUTH_REFUSED, "unknown") == u0 + 1 and count(AUTH_REFUSED, "missing") == m0 + 1
    key = [(b"authorization", f"Bearer {alice}".encode())]
    assert run(_raw(guard, _scope(headers=key), []))[0] == 200 and seen == ["alice"]
    a0 = count(RATE_LIMITED, "alice")
    other_address = _scope(
        headers=key, client=("9.9.9.9", 1)
    )  # the key's bucket, not the address's
    assert run(_raw(guard, other_address, []))[0] == 429
    assert count(RATE_LIMITED, "alice") == a0 + 1


def test_without_keys_the_rate_is_per_client_address():
    from service.access import RATE_LIMITED, Rate, RateLimiter

    limiter = RateLimiter(Rate.parse("1/h,burst=1"), clock=lambda: 0.0)
    guard = RequestGuard(Recorder(), max_bytes=10**6, limiter=limiter)
    before = RATE_LIMITED.labels(key="address")._value.get()
    assert run(_raw(guard, _scope(client=("1.1.1.1", 1)), []))[0] == 200
    assert run(_raw(guard, _scope(client=("2.2.2.2", 1)), []))[0] == 200  # another address
    assert run(_raw(guard, _scope(client=("1.1.1.1", 2)), []))[0] == 429  # same address, new port
    assert RATE_LIMITED.labels(key="address")._value.get() == before + 1
    assert run(_raw(guard, _scope(client=None), []))[0] == 200  # no address: one "unknown" bucket
    assert run(_raw(guard, _scope(client=None), []))[0] == 429
    assert limiter.take("unknown") > 0 and limiter.take("1.1.1.1") > 0
