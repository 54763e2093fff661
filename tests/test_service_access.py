"""Keys, rate limits and CORS on a real `bentoml serve` (127.0.0.1): a missing and a wrong
key get the same 401, the right one its answer, a revoked one 401 again within a second; health
stays open; a burst over the rate gets 429 with Retry-After and passes after it; a browser
origin on the allow-list gets CORS headers, another none; the counters carry key names and
nothing the server says or logs carries a key."""

from __future__ import annotations

import time

import httpx
import pytest

from service.access import create_key, revoke_key

from .conftest import serving


@pytest.fixture(scope="module")
def secured(tiny_checkpoints, tmp_path_factory):
    home = tmp_path_factory.mktemp("secured")
    keys = home / "keys.txt"
    alice, bob = create_key(keys, "alice"), create_key(keys, "bob")
    env = {
        "VISION_THREADS": "1",
        "VISION_DETECTOR_CKPT": str(tiny_checkpoints["detection"]),
        "VISION_API_KEYS_FILE": str(keys),
        "VISION_RATE": "2/s,burst=3",
        "VISION_CORS_ORIGINS": "http://allowed.example",
    }
    with serving(home, env) as (url, _):
        yield url, {"alice": alice, "bob": bob}, keys, home


def _jpg(shapes_dir) -> bytes:
    return (shapes_dir / "VOC/JPEGImages/000052.jpg").read_bytes()


def test_keys_rates_and_origins(secured, shapes_dir):
    url, keys, path, home = secured
    alice, bob = keys["alice"], keys["bob"]

    def detect(**kw):
        return httpx.post(url + "/detect", files={"image": ("a.jpg", _jpg(shapes_dir))}, **kw)

    missing = detect()
    wrong = detect(headers={"Authorization": "Bearer vk_wrong"})
    for r in (missing, wrong):
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="vision"'
    assert missing.json() == wrong.json() and "vk_wrong" not in wrong.text
    assert httpx.post(url + "/info").status_code == 401
    for route in ("/livez", "/readyz", "/ui/"):
        assert httpx.get(url + route).status_code == 200, route
    ok = detect(headers={"Authorization": f"Bearer {alice}"})
    assert ok.status_code == 200 and "detections" in ok.json()
    # bob: a burst of 3 passes, the 4th is over the rate; after Retry-After it passes
    answers = [httpx.post(url + "/info", headers={"x-api-key": bob}) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert int(answers[3].headers["retry-after"]) >= 1
    time.sleep(int(answers[3].headers["retry-after"]))
    assert httpx.post(url + "/info", headers={"x-api-key": bob}).status_code == 200
    # alice has a bucket of her own
    assert httpx.post(url + "/info", headers={"x-api-key": alice}).status_code == 200
    revoke_key(path, "bob")
    time.sleep(1.5)  # the file is checked at most once a second
    assert httpx.post(url + "/info", headers={"x-api-key": bob}).status_code == 401
    pre = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    allowed = httpx.options(url + "/detect", headers=pre)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    other = httpx.options(url + "/detect", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    denied = httpx.post(url + "/info", headers={"Origin": "http://allowed.example"})
    assert denied.status_code == 401  # a refusal a browser page can read
    assert denied.headers["access-control-allow-origin"] == "http://allowed.example"
    metrics = httpx.get(url + "/metrics").text  # open by default
    assert 'vision_auth_refused_total{key="missing"}' in metrics
    assert 'vision_auth_refused_total{key="unknown"}' in metrics
    assert 'vision_rate_limited_total{key="bob"}' in metrics
    log = (home / "serve.log").read_text()
    assert alice not in log and bob not in log and alice not in metrics
