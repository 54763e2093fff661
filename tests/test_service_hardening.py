"""A hostile client against a real `bentoml serve` on 127.0.0.1: no 500 for a client mistake,
nothing fetched on the client's behalf, bounded reading, faults and stalls survived."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from .conftest import serving
from .test_decode import oriented_png, upright

MAX_BYTES = 300_000


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    env = {
        "VISION_THREADS": "1",
        "VISION_DETECTOR_CKPT": str(tiny_checkpoints["detection"]),
        "VISION_SEGMENTER_CKPT": str(tiny_checkpoints["segmentation"]),
        "VISION_MAX_BYTES": str(MAX_BYTES),
        "VISION_FAULTS": "1",
        "VISION_STUCK_S": "1",
        "VISION_MAX_PENDING": "6",
        "VISION_ACCESS_LOG": "0",
    }
    with serving(tmp_path_factory.mktemp("bentoml"), env) as (url, proc):
        yield url, proc


def _jpg(shapes_dir) -> bytes:
    return (shapes_dir / "VOC/JPEGImages/000050.jpg").read_bytes()


class Listener:
    """A loopback TCP listener that records every connection made to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port, self.connections, self.stop = self.sock.getsockname()[1], 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_text_in_the_image_field_is_refused_and_nothing_is_fetched(server):
    url, _ = server
    lis = Listener()
    try:
        target = f"http://127.0.0.1:{lis.port}/x.jpg"
        for text in (target, "/etc/passwd", "aGVsbG8="):
            r = httpx.post(url + "/detect", data={"image": text}, files={"x": ("a", b"1")})
            assert r.status_code == 422, (text, r.status_code, r.text)
            assert r.json()["field"] == "image" and "file part" in r.json()["error"]
        r = httpx.post(url + "/detect", data={"image": target})  # urlencoded, not multipart
        assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
        r = httpx.post(
            url + "/segment", content=target, headers={"content-type": "application/json"}
        )
        assert r.status_code == 415
        time.sleep(0.5)
        assert lis.connections == 0
    finally:
        lis.close()


def _rss(proc) -> int:
    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])


def test_chunked_oversize_stops_reading_at_the_limit(server):
    """A chunked upload (no Content-Length) of up to 64 MB: the 413 arrives while the client
    is still sending, soon after the limit, and the server's memory stays flat."""
    import select
    from urllib.parse import urlparse

    url, proc = server
    before = _rss(proc)
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(
        b"POST /detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    chunk = b"\0" * 65536
    sent, answer = 0, b""
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        while sent < 64 * 2**20:
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except OSError:  # the server closed the connection on us: read what it answered
        pass
    sock.settimeout(10)
    while b"}" not in answer:  # the JSON body may come in a later segment
        more = sock.recv(65536)
        if not more:
            break
        answer += more
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"limit" in answer
    assert sent < 16 * 2**20, sent  # answered long before the 64 MB were sent
    assert _rss(proc) - before < 50 * 2**20
    assert httpx.get(url + "/readyz").status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"max_detections": "Infinity"},
        {"max_detections": "1e999"},
        {"max_detections": "2.5"},
        {"score_threshold": "nan"},
        {"score_threshold": "-inf"},
        {"score_threshold": "1" * 400},
    ],
)
def test_non_finite_and_huge_numbers_are_422(server, shapes_dir, params):
    url, _ = server
    r = httpx.post(url + "/detect", files={"image": ("a.jpg", _jpg(shapes_dir))}, data=params)
    name = next(iter(params))
    if len(params[name]) > 100:  # BentoML's own validation refuses it first (JSON, 400)
        assert r.status_code == 400 and name in r.text, r.text
        return
    assert r.status_code == 422, r.text
    assert r.json()["field"] == name


def test_too_many_fields_and_an_oversized_field(server, shapes_dir):
    url, _ = server
    many = {f"f{i}": "x" for i in range(1500)}
    r = httpx.post(url + "/detect", files={"image": ("a.jpg", _jpg(shapes_dir))}, data=many)
    assert r.status_code == 413 and "fields" in r.json()["error"], r.text
    big = {"score_threshold": "0" * 5000}
    r = httpx.post(url + "/detect", files={"image": ("a.jpg", _jpg(shapes_dir))}, data=big)
    assert r.status_code == 413, r.text
    two = {"image": ("a.jpg", _jpg(shapes_dir)), "other": ("b.jpg", _jpg(shapes_dir))}
    assert httpx.post(url + "/detect", files=two).status_code == 413


@pytest.mark.parametrize("k", range(1, 9))
def test_exif_orientation_boxes_in_the_orientation_seen(server, k):
    url, _ = server
    img = upright().repeat(4, axis=0).repeat(4, axis=1)  # 120 x 200
    flat = io.BytesIO()
    Image.fromarray(img).save(flat, "PNG")
    answers = []
    for data in (flat.getvalue(), oriented_png(img, k)):
        r = httpx.post(
            url + "/detect", files={"image": ("a.png", data)}, data={"score_threshold": "0"}
        )
        assert r.status_code == 200, r.text
        answers.append(r.json())
    a, b = answers
    assert (b["width"], b["height"]) == (200, 120) and a["detections"] == b["detections"]
    assert a["detections"], "the check needs boxes"


def test_image_kinds_people_send(server):
    url, _ = server
    cases = []
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60), 40000, np.uint16)).save(buf, "PNG")
    cases.append(("grey16.png", buf.getvalue()))
    buf = io.BytesIO()
    Image.new("CMYK", (60, 40), (0, 255, 255, 0)).save(buf, "JPEG")
    cases.append(("cmyk.jpg", buf.getvalue()))
    buf = io.BytesIO()
    Image.new("LA", (60, 40), (10, 0)).save(buf, "PNG")
    cases.append(("la.png", buf.getvalue()))
    buf = io.BytesIO()
    frames = [Image.new("RGB", (60, 40), c) for c in ("red", "blue")]
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    cases.append(("animated.png", buf.getvalue()))
    for name, data in cases:
        r = httpx.post(url + "/segment", files={"image": (name, data)})
        assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (60, 40), name
    buf = io.BytesIO()
    Image.new("RGB", (3000, 1)).save(buf, "PNG")
    r = httpx.post(url + "/detect", files={"image": ("thin.png", buf.getvalue())})
    assert r.status_code == 422 and "3000x1" in r.json()["error"]


def test_a_raising_forward_pass_fails_only_its_batch(server, shapes_dir):
    url, _ = server
    files = {"image": ("a.jpg", _jpg(shapes_dir))}
    r = httpx.post(url + "/detect", files=files, headers={"x-vision-fault": "raise"})
    assert r.status_code == 500 and "injected fault" in r.json()["error"]
    assert httpx.post(url + "/detect", files=files).status_code == 200
    assert httpx.get(url + "/readyz").status_code == 200


def test_a_stuck_forward_pass_flips_health_and_back_and_overload_is_refused(server, shapes_dir):
    url, _ = server
    files = {"image": ("a.jpg", _jpg(shapes_dir))}

    def stalled():
        h = {"x-vision-fault": "stall=6"}
        return httpx.post(url + "/segment", files=files, headers=h, timeout=60).status_code

    def one(_):
        t0 = time.perf_counter()
        r = httpx.post(url + "/segment", files=files, timeout=60)
        return r.status_code, r.headers.get("retry-after"), time.perf_counter() - t0

    def health_while_stuck():  # polled: a loaded machine may start the stall late
        end = time.time() + 5
        while time.time() < end:
            ready, live = httpx.get(url + "/readyz"), httpx.get(url + "/livez")
            if ready.status_code == 503:
                return ready.status_code, live.status_code
            time.sleep(0.2)
        return ready.status_code, live.status_code

    with ThreadPoolExecutor(16) as pool:
        stall = pool.submit(stalled)
        time.sleep(1.0)
        ready, live = health_while_stuck()  # past VISION_STUCK_S = 1
        flood = list(pool.map(one, range(14)))
        assert stall.result() == 200
    assert ready == 503 and live == 503
    refused = [f for f in flood if f[0] == 503]
    assert refused and all(ra == "1" and s < 2.0 for _, ra, s in refused), flood  # not 6 s
    assert {f[0] for f in flood} <= {200, 503}
    deadline = time.time() + 10
    while httpx.get(url + "/readyz").status_code != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert httpx.get(url + "/readyz").status_code == 200
    assert httpx.get(url + "/livez").status_code == 200


def test_no_server_paths_in_answers(server, shapes_dir, tiny_checkpoints):
    url, _ = server
    r = httpx.post(url + "/detect", files={"image": ("a.jpg", _jpg(shapes_dir))})
    info = httpx.post(url + "/info").json()
    text = r.text + json.dumps(info)
    assert str(tiny_checkpoints["detection"].parent) not in text
    assert r.json()["version"] == "last.pt"


def test_sigterm_drains_in_flight_and_refuses_new_with_503(tiny_checkpoints, shapes_dir, tmp_path):
    """SIGTERM with a request in flight: it gets its 200; a request and /readyz during the
    drain get 503 (Retry-After, Connection: close), not a refused or silent socket; then the
    server exits by itself."""
    import signal

    env = {
        "VISION_THREADS": "1",
        "VISION_DETECTOR_CKPT": str(tiny_checkpoints["detection"]),
        "VISION_FAULTS": "1",
        "VISION_DRAIN_S": "3",
        "VISION_ACCESS_LOG": "0",
    }
    files = {"image": ("a.jpg", _jpg(shapes_dir))}
    with serving(tmp_path, env) as (url, proc), ThreadPoolExecutor(2) as pool:
        slow = pool.submit(
            httpx.post, url + "/detect", files=files, headers={"x-vision-fault": "stall=2"},
            timeout=60,
        )  # fmt: skip
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        new = httpx.post(url + "/detect", files=files, timeout=10)
        ready = httpx.get(url + "/readyz", timeout=10)
        answered = slow.result()
        assert answered.status_code == 200 and answered.json()["detections"] is not None
        assert new.status_code == 503, new.text
        assert new.headers["retry-after"] == "1" and new.headers["connection"] == "close"
        assert "shutting down" in new.json()["error"]
        assert ready.status_code == 503
        assert proc.wait(timeout=30) is not None  # it ends by itself after the drain
