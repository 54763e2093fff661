"""The request guard at every limit, in process (an ASGI app in front of a stub that records
and can stall): the form-field count at its maximum and one over, the overload limit at one
below and at it, the draining answer, API keys (missing, wrong, right, revoked by a rewrite of
the file), the rate limit over a burst and after its wait; and every route of the service
declared with its guard. EXIF in the Predictor's decoding, without a server."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from service.access import KeyRing, Rate, RateLimiter, create_key, digest, parse_keys, revoke_key
from service.drain import Drain
from service.guard import RequestGuard
from service.routes import INFERENCE, OPEN, ROUTES, Policy, policies
from vision.errors import DataError

from .test_decode import oriented_png, upright


class Stub:
    """The app behind the guard: answers 200, or waits for ``release`` when ``stall``."""

    def __init__(self, stall: bool = False):
        self.calls, self.stall = 0, stall
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] == "http" and scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
        if self.stall:
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def client(guard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    return buf.getvalue()


def run(coro, limit_s: float = 5.0):
    """Run a test's coroutine; one that waits past ``limit_s`` (a guard that never answers or
    never lets a stalled request go) fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(coro, limit_s))


def test_exactly_the_maximum_of_form_fields_passes_one_more_is_413():
    stub = Stub()
    guard = RequestGuard(stub, max_bytes=10**6, max_fields=16)

    async def post(n_text: int):
        async with client(guard) as c:
            data = {f"f{i}": "x" for i in range(n_text)}
            return await c.post("/detect", files={"image": ("a.jpg", _jpeg())}, data=data)

    at = run(post(16))  # the image (a file part) and 16 text fields: the maximum
    assert at.status_code == 200 and stub.calls == 1
    over = run(post(17))
    assert over.status_code == 413 and stub.calls == 1
    assert "at most 16 fields" in over.json()["error"]


def test_overload_admits_at_the_limit_minus_one_and_refuses_at_it():
    """Two requests stall in the model; with the limit at 3, a third is admitted (2 = the
    limit minus one were waiting), a fourth is refused at once with 503 and Retry-After."""

    async def scenario():
        stub = Stub(stall=True)
        guard = RequestGuard(stub, max_bytes=10**6, max_pending=3)
        async with client(guard) as c:
            post = lambda: c.post("/detect", files={"image": ("a.jpg", _jpeg())})  # noqa: E731
            first = [asyncio.create_task(post()) for _ in range(2)]
            while guard.pending < 2:
                await asyncio.sleep(0.01)
            third = asyncio.create_task(post())
            while guard.pending < 3:
                await asyncio.sleep(0.01)
            fourth = await post()
            stub.release.set()
            done = await asyncio.gather(*first, third)
        return guard, stub, fourth, done

    guard, stub, fourth, done = run(scenario())
    assert [r.status_code for r in done] == [200, 200, 200] and stub.calls == 3
    assert fourth.status_code == 503 and fourth.headers["retry-after"] == "1"
    assert fourth.json() == {
        "error": "server busy: 3 requests are already waiting; retry shortly",
        "pending": 3,
    }
    assert guard.refused == 1 and guard.pending == 0


def test_a_draining_instance_answers_503_with_close_and_says_why():
    drain = Drain(0.0, 0.0)
    drain.draining = True
    guard = RequestGuard(Stub(), max_bytes=10**6, drain=drain)

    async def post():
        async with client(guard) as c:
            return await c.post("/segment", files={"image": ("a.jpg", _jpeg())})

    r = run(post())
    assert r.status_code == 503 and r.headers["connection"] == "close"
    assert r.headers["retry-after"] == "1"
    assert r.json() == {"error": "server shutting down: this instance takes no new requests; retry"}


def test_keys_missing_wrong_right_and_revoked_after_the_file_changes(tmp_path):
    path = tmp_path / "keys.txt"
    alice, bob = create_key(path, "alice"), create_key(path, "bob")
    assert alice.startswith("vk_") and alice not in path.read_text()
    assert parse_keys(path.read_text(), "k") == {"alice": digest(alice), "bob": digest(bob)}
    ring = KeyRing(path, check_every_s=0)
    stub = Stub()
    guard = RequestGuard(stub, max_bytes=10**6, keys=ring)

    async def info(headers):
        async with client(guard) as c:
            return await c.post("/info", headers=headers)

    missing, wrong = run(info({})), run(info({"Authorization": "Bearer vk_nope"}))
    for r in (missing, wrong):
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="vision"'
    assert missing.json() == wrong.json() and "vk_nope" not in wrong.text
    assert stub.calls == 0
    assert run(info({"Authorization": f"Bearer {alice}"})).status_code == 200
    assert run(info({"x-api-key": bob})).status_code == 200 and stub.calls == 2
    revoke_key(path, "bob")
    assert run(info({"x-api-key": bob})).status_code == 401  # the file re-read
    assert run(info({"x-api-key": alice})).status_code == 200
    assert run(info({"x-api-key": alice.upper()})).status_code == 401
    with pytest.raises(DataError, match="keys.txt:1: expected name:sha256-hex"):
        parse_keys("alice:xyz\n", "keys.txt")
    with pytest.raises(DataError, match="'alice' already there"):
        create_key(path, "alice")


def test_the_rate_limit_answers_429_with_retry_after_then_lets_through():
    now = [100.0]
    limiter = RateLimiter(Rate.parse("2/s,burst=3"), clock=lambda: now[0])
    stub = Stub()
    guard = RequestGuard(stub, max_bytes=10**6, limiter=limiter)

    async def burst(n):
        async with client(guard) as c:
            return [await c.post("/info") for _ in range(n)]

    first = run(burst(4))
    assert [r.status_code for r in first] == [200, 200, 200, 429]
    assert first[3].headers["retry-after"] == "1"  # half a second to the next token: 1 s
    assert "rate limit" in first[3].json()["error"] and stub.calls == 3
    now[0] += 0.5  # one token back
    assert [r.status_code for r in run(burst(2))] == [200, 429]
    assert Rate.parse("600/min") == Rate(10.0, 1.0) and Rate.parse("20/s") == Rate(20.0, 20.0)
    with pytest.raises(DataError, match="N/s, N/min or N/h"):
        Rate.parse("fast")


def test_open_routes_pass_untouched_and_the_metrics_can_be_closed(tmp_path):
    path = tmp_path / "keys.txt"
    create_key(path, "alice")
    stub = Stub()
    guard = RequestGuard(stub, max_bytes=10**6, keys=KeyRing(path), max_pending=0)

    async def get(route):
        async with client(guard) as c:
            return await c.get(route)

    for route in ("/livez", "/readyz", "/ui/", "/metrics"):
        assert run(get(route)).status_code == 200, route
    closed = RequestGuard(stub, max_bytes=10**6, keys=KeyRing(path),
                          routes=policies({"VISION_METRICS_PUBLIC": "0"}))  # fmt: skip

    async def metrics():
        async with client(closed) as c:
            return await c.get("/metrics")

    assert run(metrics()).status_code == 401


def test_every_route_of_the_service_is_declared_with_its_guard():
    """A route that takes an upload (a file input) or runs a model must be declared with the
    inference policy; every other route is declared or explicitly open."""
    from service.service import VisionService

    routes = {api.route: api for api in VisionService.apis.values()}
    assert routes, "no routes found"
    for route, api in routes.items():
        fields = api.input_spec.model_fields
        takes_file = any("Path" in str(f.annotation) for f in fields.values())
        assert route in ROUTES or route in OPEN, f"{route}: not declared in service/routes.py"
        if takes_file:
            assert ROUTES.get(route) == INFERENCE, f"{route} takes an upload: needs its limits"
    assert set(ROUTES) - set(routes) == set(), "a declared route the service does not have"
    assert Policy() == Policy(upload=False, model=False, key=False, rate=False)


def test_the_predictors_decoding_applies_exif_orientation():
    """The Predictor's own decode and prepare (what the service runs) honour EXIF: an image
    stored sideways comes out as the user sees it."""
    from vision.predictor import Predictor

    img = upright()
    data = oriented_png(img, 6)  # stored rotated; orientation 6 turns it back
    assert np.array_equal(Predictor.decode(data), img)
    from vision.data.letterbox import Letterbox

    _, info = Letterbox(32).prepare(data)
    assert img.shape[0] != img.shape[1] and info["orig_size"] == img.shape[:2]
