"""``vision predict`` on the local engine: every good image predicted and every bad one in
``errors.jsonl`` with its reason, resumption after a kill, masks, a COCO source whose results
score as ``vision eval run`` scores the same split, and the job folder's recovery rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from vision.batch.outputs import recover_lines

from .conftest import run_cli

VISION = [sys.executable, "-m", "vision_cli"]


def lines(path) -> list[dict]:
    """A JSONL file's lines without their timings (the one field that differs run to run)."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r.pop("timing_ms", None)
    return rows


def test_bad_files_are_errors_with_reasons_and_the_rest_is_predicted(
    photos, tiny_checkpoints, tmp_path
):
    out = tmp_path / "job"
    r = run_cli(["predict", "--model", tiny_checkpoints["detection"], "--source", photos,
                 "--out", out, "--score-threshold", "0", "--quiet"])  # fmt: skip
    assert r.returncode == 1, r.stderr  # documented: 1 when any image failed
    preds, errors = lines(out / "predictions.jsonl"), lines(out / "errors.jsonl")
    assert [p["path"] for p in preds] == sorted(
        str(p) for p in photos.rglob("0*.jpg") if not p.name.startswith(".")
    )
    assert {e["path"].rsplit("/", 1)[1]: e["reason"] for e in errors} == {
        "truncated.jpg": "corrupt",
        "empty.png": "empty",
        "notes.txt": "unsupported",
    }
    assert all(e["error"].startswith("expected ") and "0x" not in e["error"] for e in errors)
    assert all(p["detections"] and p["width"] > 0 for p in preds)
    d = preds[0]["detections"][0]
    assert set(d) == {"box", "score", "label", "class_id"} and len(d["box"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["errors"], summary["exit_status"]) == (10, 3, 1)
    assert summary["errors_by_reason"] == {"corrupt": 1, "empty": 1, "unsupported": 1}
    assert summary["skipped"] == {"hidden": 1, "duplicates": 0}
    assert sum(c["detections"] for c in summary["per_class"].values()) == sum(
        len(p["detections"]) for p in preds
    )
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == summary["coco_results"] == sum(len(p["detections"]) for p in preds)
    x1, y1, x2, y2 = preds[0]["detections"][0]["box"]
    assert coco[0]["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert coco[0]["category_id"] == preds[0]["detections"][0]["class_id"] + 1
    # only good images: exit 0; the job folder remembers them, so nothing is redone
    good = sorted(photos.glob("a/0*.jpg"))
    r = run_cli(["predict", "--model", tiny_checkpoints["detection"], "--source", *good,
                 "--out", tmp_path / "good", "--quiet"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    again = run_cli(["predict", "--model", tiny_checkpoints["detection"], "--source",
                     photos / "a" / "*.jpg", "--out", tmp_path / "good", "--quiet"])  # fmt: skip
    s = json.loads((tmp_path / "good" / "summary.json").read_text())
    assert again.returncode == 1 and s["this_run"]["to_predict"] == 1  # the truncated one


def test_a_killed_run_resumes_to_the_files_of_an_uninterrupted_one(
    photos, tiny_checkpoints, tmp_path
):
    """The first run's process dies after two batches (the fault drill: as if killed); half a
    line is left at the end of its predictions (a torn write); the second run drops it and
    predicts only what is missing. Every file equals an uninterrupted run's, each image once."""
    args = ["predict", "--model", tiny_checkpoints["detection"], "--source", photos,
            "--score-threshold", "0", "--batch", "3", "--quiet"]  # fmt: skip
    whole = tmp_path / "whole"
    assert run_cli([*args, "--out", whole]).returncode == 1
    part = tmp_path / "part"
    env = {**os.environ, "VISION_PREDICT_KILL_AFTER": "2"}
    died = subprocess.run(
        [*VISION, *map(str, args), "--out", str(part)], env=env, capture_output=True, text=True
    )
    assert died.returncode == 1 and not (part / "summary.json").exists(), died.stderr[-2000:]
    done = lines(part / "predictions.jsonl")
    assert len(done) == 6  # two batches of three
    with open(part / "predictions.jsonl", "ab") as f:
        f.write(b'{"path": "/torn/wri')
    r = run_cli([*args, "--out", part])
    assert r.returncode == 1, r.stderr
    summary = json.loads((part / "summary.json").read_text())
    assert summary["this_run"]["done_earlier"]["predicted"] == 6
    assert summary["this_run"]["predicted"] == 4
    for name in ("predictions.jsonl", "errors.jsonl"):
        assert lines(part / name) == lines(whole / name), name
    assert (part / "coco_results.json").read_bytes() == (whole / "coco_results.json").read_bytes()
    paths = [p["path"] for p in lines(part / "predictions.jsonl")]
    assert len(paths) == len(set(paths)) == 10


def test_masks_as_index_pngs_in_colour_or_rle(photos, tiny_checkpoints, tmp_path):
    """A segmenter writes index PNGs (values = class indices, the dataset's colours as palette
    with --save-color) equal to the Predictor's class map, or COCO RLE in the line; the COCO
    results hold one RLE per class present, the same either way."""
    from pycocotools import mask as mask_utils

    from vision.predictor import Predictor

    src = sorted(photos.glob("a/0*.jpg"))[:3]
    base = ["predict", "--model", tiny_checkpoints["segmentation"], "--source", *src, "--quiet"]
    png, rle = tmp_path / "png", tmp_path / "rle"
    assert run_cli([*base, "--out", png, "--save-color", "--save-drawn"]).returncode == 0
    assert run_cli([*base, "--out", rle, "--mask-format", "rle"]).returncode == 0
    pred = Predictor.from_checkpoint(tiny_checkpoints["segmentation"])
    classes = pred.labels()["mask_classes"]
    for row, row_rle in zip(
        lines(png / "predictions.jsonl"), lines(rle / "predictions.jsonl"), strict=True
    ):
        want = pred([pred.decode(row["path"])])[0]["mask"].numpy()
        im = Image.open(png / row["mask"])
        assert im.mode == "P" and np.array_equal(np.asarray(im), want)
        assert im.getpalette()[:6] == [v for c in pred.labels()["colors"][:2] for v in c]
        assert row["pixel_counts"] == {c: int((want == k).sum()) for k, c in enumerate(classes)}
        assert row_rle["pixel_counts"] == row["pixel_counts"]
        for name, r in row_rle["mask"]["per_class"].items():
            assert np.array_equal(mask_utils.decode(r), want == classes.index(name))
        assert (png / "drawn" / (row["mask"][len("masks/") : -4] + ".jpg")).is_file()
    a = json.loads((png / "coco_results.json").read_text())
    b = json.loads((rle / "coco_results.json").read_text())
    key = lambda d: (d["image_id"], d["category_id"])  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key) and a


def test_coco_source_results_score_as_eval_run(shapes_dir, tiny_checkpoints, tmp_path):
    """Predicting a COCO instances JSON keeps its image and category ids: `vision eval coco`
    on coco_results.json gives the AP `vision eval run` gives on the same split (1e-9)."""
    gt = shapes_dir / "COCO" / "annotations" / "instances_val.json"
    ckpt = tiny_checkpoints["detection"]
    out = tmp_path / "job"
    r = run_cli(["predict", "--model", ckpt, "--source", gt, "--out", out,
                 "--score-threshold", "0", "--quiet"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    ids = {im["id"] for im in json.loads(gt.read_text())["images"]}
    assert {p["image_id"] for p in lines(out / "predictions.jsonl")} == ids
    scored = run_cli(["eval", "coco", "--gt", gt, "--pred", out / "coco_results.json",
                      "--iou-type", "bbox", "--out", tmp_path / "coco.json"])  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    ours = json.loads((tmp_path / "coco.json").read_text())
    yaml_path = tmp_path / "shapes_coco.yaml"
    yaml_path.write_text(
        "name: shapes\nformat: coco\nroot: " + str(shapes_dir / "COCO") + "\n"
        "detection:\n  val: {images: images, annotations: annotations/instances_val.json}\n"
        "names: [circle, square, triangle, star]\n"
    )
    assert run_cli(["eval", "run", "--checkpoint", ckpt, "--data", yaml_path,
                    "--out", tmp_path / "run"]).returncode == 0  # fmt: skip
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    ap_run = report["metrics"]["coco"]["AP"]
    assert ours["AP"] > 0 and abs(ours["AP"] - ap_run) <= 1e-9


def test_sources_and_models_that_are_not_there_are_refused(tiny_checkpoints, tmp_path):
    r = run_cli(["predict", "--model", tmp_path / "nope.pt", "--source", tmp_path,
                 "--out", tmp_path / "o"])  # fmt: skip
    assert r.returncode == 2 and "no such file or store model" in r.stderr
    r = run_cli(["predict", "--model", tiny_checkpoints["detection"], "--source",
                 tmp_path / "none" / "*.jpg", "--out", tmp_path / "o"])  # fmt: skip
    assert r.returncode == 2 and "no file matches" in r.stderr


def test_recovery_cuts_a_torn_last_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"path": "a"}\n{"path": "b"}\n{"pa')
    assert recover_lines(f) == [{"path": "a"}, {"path": "b"}]
    assert f.read_bytes() == b'{"path": "a"}\n{"path": "b"}\n'
    f.write_bytes(b'{"path": "a"}\nnot json\n{"path": "c"}\n')
    assert recover_lines(f) == [{"path": "a"}] and f.read_bytes() == b'{"path": "a"}\n'
