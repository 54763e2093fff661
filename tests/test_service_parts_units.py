"""The service module's small parts: metrics without curves, the reply that sets BentoML's
context, and the web page's routes."""

from __future__ import annotations

import json
from types import SimpleNamespace

from .test_service_units import _count


def test_scalars():
    from service.service import _scalars

    assert _scalars(None) == {} and _scalars({}) == {}
    m = {"coco": {"AP": 0.5, "curve": [1], "table": {"a": 1}, "per_class": {"a": 0.1}}, "n": 3}
    assert _scalars(m) == {"coco": {"AP": 0.5, "per_class": {"a": 0.1}}, "n": 3}


def test_reply_sets_the_context():
    from service.service import _reply

    ctx = SimpleNamespace(response=SimpleNamespace(status_code=None, metadata={}))
    r = _reply(ctx, "x", 418, {"a": 1}, {"H": "v"})
    assert (r.status_code, json.loads(r.body), r.headers["h"]) == (418, {"a": 1}, "v")
    assert ctx.response.status_code == 418 and ctx.response.metadata == {"H": "v"}
    r = _reply(None, "x", 200, {})
    assert r.status_code == 200 and _count("x", 200) >= 1


def test_web_page_routes():
    from starlette.testclient import TestClient

    from service.service import WEB, _ui_app

    c = TestClient(_ui_app())
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (WEB / "index.html").read_bytes()
    names = c.get("/samples.json").json()
    assert names == sorted(p.name for p in (WEB / "samples").glob("*.jpg")) and names
    one = c.get(f"/samples/{names[0]}")
    assert one.status_code == 200 and one.headers["content-type"] == "image/jpeg"
    for bad in ("nope.jpg", "index.html", "..%2Fservice.py"):
        r = c.get(f"/samples/{bad}")
        assert r.status_code == 404, bad
    assert c.get("/samples/nope.jpg").json() == {"error": "no sample named 'nope.jpg'"}
