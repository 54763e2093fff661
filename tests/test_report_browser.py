"""A suite's report opened as a user opens it, from disk, in headless chromium: no console
error, nothing fetched from elsewhere, every image loads, and each model has its curves."""

from __future__ import annotations

from .conftest import chromium_page, run_cli


def test_a_small_suite_report_in_a_browser(shapes_yaml, tiny_checkpoints, tmp_path):
    suite = tmp_path / "two.yaml"
    suite.write_text(
        f"name: two\ndatasets: [{shapes_yaml}]\nmodels:\n"
        f"  - {{name: det, checkpoint: {tiny_checkpoints['detection']}}}\n"
        f"  - {{name: seg, checkpoint: {tiny_checkpoints['segmentation']}}}\n"
        "options: {split: val, fps_batch: [1], fps_iters: 2, fps_warmup: 1, limit: 8}\n"
    )
    out = tmp_path / "report"
    r = run_cli(["bench", "run", suite, "--out", out])
    assert r.returncode == 0, r.stderr[-3000:]
    with chromium_page() as page:
        requests = []
        page.on("request", lambda q: requests.append(q.url))
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])"
        )
        page.click("table.sortable th >> nth=2")  # the sorting script runs without errors
        problems = list(page.problems)
    assert problems == [], problems
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    assert images and all(ok for _, ok in images), [a for a, ok in images if not ok]
    alts = {a for a, _ in images}
    for model in ("det", "seg"):
        assert f"confusion matrix — {model}" in alts and f"training curves — {model}" in alts
    assert "precision–recall curves (COCO IoU 0.5) — det" in alts
    assert "F1–confidence curve — det" in alts and "per-class IoU — seg" in alts
    assert any(a.startswith("sample 0 — det") for a in alts)
