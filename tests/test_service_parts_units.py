"""The service's small parts: metrics without curves, the reply that sets BentoML's context,
the web page's routes, and models from the BentoML store."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from .test_service_units import _count, files  # noqa: F401 - files: a fixture


def test_scalars():
    from service.core import _scalars

    assert _scalars(None) == {} and _scalars({}) == {}
    m = {"coco": {"AP": 0.5, "curve": [1], "table": {"a": 1}, "per_class": {"a": 0.1}}, "n": 3}
    assert _scalars(m) == {"coco": {"AP": 0.5, "per_class": {"a": 0.1}}, "n": 3}


def test_reply_sets_the_context():
    from service.core import _reply

    ctx = SimpleNamespace(response=SimpleNamespace(status_code=None, metadata={}))
    r = _reply(ctx, "x", 418, {"a": 1}, {"H": "v"})
    assert (r.status_code, json.loads(r.body), r.headers["h"]) == (418, {"a": 1}, "v")
    assert ctx.response.status_code == 418 and ctx.response.metadata == {"H": "v"}
    r = _reply(None, "x", 200, {})
    assert r.status_code == 200 and _count("x", 200) >= 1


def test_web_page_routes():
    from starlette.testclient import TestClient

    from service.ui import WEB, ui_app

    c = TestClient(ui_app())
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (WEB / "index.html").read_bytes()
    names = c.get("/samples.json").json()
    assert names == sorted(p.name for p in (WEB / "samples").glob("*.jpg")) and names
    one = c.get(f"/samples/{names[0]}")
    assert one.status_code == 200 and one.headers["content-type"] == "image/jpeg"
    # a name with a slash, even one that leads back to a sample, is no sample's name
    for bad in ("nope.jpg", "index.html", "..%2Fservice.py", f"..%2Fsamples%2F{names[0]}"):
        r = c.get(f"/samples/{bad}")
        assert r.status_code == 404, bad
    assert c.get("/samples/nope.jpg").json() == {"error": "no sample named 'nope.jpg'"}


def test_models_from_the_store(files):  # noqa: F811 - the fixture imported above
    from service.promote import store
    from service.store import looks_like_tag, stored_model

    assert looks_like_tag("vision-detector") and looks_like_tag("vision-segmenter")
    assert looks_like_tag("name:v1") and not looks_like_tag("name") and not looks_like_tag("a/b:c")
    assert not looks_like_tag("a:b:c")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(files["home"]))
        assert stored_model("vision-nothing-here") is None
        record = {"model": "fcos_slim", "primary_metric": "coco/AP", "primary": 0.5}
        onnx = files["home"].parent / "m.onnx"
        onnx.write_bytes(b"onnx bytes")
        table = {
            "rule": "r",
            "rows": [
                {
                    "variant": "onnx",
                    "status": "ok",
                    "metric": 0.5,
                    "p50_ms": 2.0,
                    "speedup": 2.0,
                    "file": str(onnx),
                    "chosen": True,
                }
            ],
        }
        tag = store("detection", files["detection"], record, table, log=lambda *a: None)
        got = stored_model("vision-detector")
        assert got is not None and got.tag == tag and got.variant == "onnx"
        assert Path(got.checkpoint).name == "model.pt" and Path(got.checkpoint).is_file()
        assert Path(got.file).read_bytes() == b"onnx bytes" and got.metadata["arch"] == "fcos_slim"
        assert stored_model(tag) == got and stored_model(f"{tag.split(':')[0]}:latest") == got
        tag2 = store("segmentation", files["segmentation"], record, None, log=lambda *a: None)
        seg = stored_model("vision-segmenter")
        assert seg.tag == tag2 and seg.variant == "eager" and seg.file is None
        import bentoml

        with bentoml.models.create("vision-older", metadata={"arch": "x"}) as bm:
            (Path(bm.path) / "model.pt").write_bytes(b"")
        older = stored_model("vision-older")  # stored before variants existed: eager
        assert older.variant == "eager" and older.file is None and older.metadata == {"arch": "x"}
        mp.setenv("VISION_DETECTOR_CKPT", "")
        mp.setenv("VISION_SEGMENTER_CKPT", "")
        mp.setenv("VISION_DETECTOR_MODEL", tag)
        from service.core import _load

        pred, info = _load("segmentation", "cpu", False)
        assert (
            pred.meta.name == "fcn8s_slim"
            and info["version"] == tag2
            and info["variant"] == "eager"
        )
        assert info["arch"] == "fcn8s_slim"
        mp.setenv("VISION_SEGMENTER_MODEL", "vision-nothing-here")
        assert _load("segmentation", "cpu", False) == (None, {})
        mp.setenv("VISION_SEGMENTER_CKPT", str(files["segmentation"]))
        mp.setenv("VISION_SEGMENTER_VARIANT", "eager")
        pred, info = _load("segmentation", "cpu", False)
        assert info == {"version": "seg.pt", "variant": "eager"} and not pred.runtime_backend
        # the stored variant's own file, on the device and precision asked for
        import service.core as core

        calls = []
        mp.setattr(core, "variant_predictor", lambda *a, **k: calls.append((a, k)) or "pred")
        assert _load("detection", "cpu", False) == ("pred", {"version": tag, **got.metadata})
        assert calls == [((got.checkpoint, "onnx", got.file), {"device": "cpu", "half": False})]
