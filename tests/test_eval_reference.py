"""The suite reproduces published reference numbers, through the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import run_cli

FAKE = "coco/cocoapi_val2014_fake100"


@pytest.mark.parametrize("engine", ["numpy", "faster", "pycocotools"])
@pytest.mark.parametrize("iou_type,kind", [("bbox", "fakebbox"), ("segm", "fakesegm")])
def test_cocoapi_fake_results(real, tmp_path, iou_type, kind, engine):
    expected = json.loads((real / FAKE / "expected_stats_pycocotools.json").read_text())
    out = tmp_path / "out.json"
    r = run_cli(
        [
            "eval",
            "coco",
            "--gt",
            str(real / FAKE / "instances_val2014_100.json"),
            "--pred",
            str(real / FAKE / f"results/instances_val2014_{kind}100_results.json"),
            "--iou-type",
            iou_type,
            "--engine",
            engine,
            "--out",
            str(out),
        ],
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    for name, value in zip(expected["stats_order"], expected[iou_type], strict=True):
        assert got[name] == pytest.approx(value, abs=1e-9), name
    assert len(got["per_class"]) == 80
    assert all(v is None or 0 <= v <= 1 for v in got["per_class"].values())
    assert "AP" in r.stdout and "person" in r.stdout


def test_max_dets_has_no_minus_one(real):
    from eval.coco import coco_evaluate

    r = coco_evaluate(
        real / FAKE / "instances_val2014_100.json",
        real / FAKE / "results/instances_val2014_fakebbox100_results.json",
        "bbox",
        max_dets=[1, 10, 300],
    )
    assert {"AR1", "AR10", "AR300"} <= set(r)
    assert all(v >= 0 for k, v in r.items() if k not in ("per_class", "protocol", "pr_curves"))


FCN = {
    "pixel_acc": 0.8425141101,
    "mean_acc": 0.8454627806,
    "mIoU": 0.7196156777,
    "fwIoU": 0.7273739800,
}
VAINF = {
    "pixel_acc": 0.9906725428,
    "mean_acc": 0.9942847265,
    "mIoU": 0.9553548766,
    "fwIoU": 0.9818355439,
}


def _seg_cli(gt, pred, out):
    r = run_cli(
        [
            "eval",
            "seg",
            "--gt",
            str(gt),
            "--pred",
            str(pred),
            "--num-classes",
            "21",
            "--out",
            str(out),
        ],
    )
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_fcn_demo_scores(real, tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(real / "voc_seg/fcn_demo/label.png", tmp_path / "gt/demo.png")
    shutil.copy(real / "voc_seg/fcn_demo/output.png", tmp_path / "pred/demo.png")
    got = _seg_cli(tmp_path / "gt", tmp_path / "pred", tmp_path / "o.json")
    for k, v in FCN.items():  # the README quotes 10 decimals
        assert got[k] == pytest.approx(v, abs=1e-9 + 5e-11), k
    iou = got["per_class_iou"]
    assert iou["0"] == pytest.approx(0.7772942513, abs=1e-9)
    assert iou["2"] == pytest.approx(0.6620824689, abs=1e-9)
    assert iou["15"] == pytest.approx(0.7194703129, abs=1e-9)


def test_vainf_pooled_scores(real, tmp_path):
    src = real / "voc_seg/vainf_deeplabv3plus_samples"
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for n in ("1", "23", "114"):
        shutil.copy(src / f"{n}_target.png", tmp_path / "gt")
        shutil.copy(src / f"{n}_pred.png", tmp_path / "pred")
    got = _seg_cli(tmp_path / "gt", tmp_path / "pred", tmp_path / "o.json")
    for k, v in VAINF.items():
        assert got[k] == pytest.approx(v, abs=1e-9 + 5e-11), k


def test_seg_mismatched_inputs(real, tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    shutil.copy(real / "voc_seg/fcn_demo/label.png", tmp_path / "gt/a.png")
    shutil.copy(real / "voc_seg/vainf_deeplabv3plus_samples/1_pred.png", tmp_path / "pred/a.png")
    r = run_cli(
        [
            "eval",
            "seg",
            "--gt",
            str(tmp_path / "gt"),
            "--pred",
            str(tmp_path / "pred"),
            "--num-classes",
            "21",
        ],
    )
    assert r.returncode == 2 and "same size" in r.stderr and "Traceback" not in r.stderr
    shutil.copy(real / "voc_seg/fcn_demo/output.png", tmp_path / "pred/b.png")
    r = run_cli(
        [
            "eval",
            "seg",
            "--gt",
            str(tmp_path / "gt"),
            "--pred",
            str(tmp_path / "pred"),
            "--num-classes",
            "21",
        ],
    )
    assert r.returncode == 2 and "unmatched ['b']" in r.stderr


def test_coco_bad_predictions(real, tmp_path):
    gt = real / FAKE / "instances_val2014_100.json"
    cases = {
        "empty.json": ("", "empty file"),
        "badimg.json": (
            json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]),
            "image id of the ground truth",
        ),
        "badcat.json": (
            json.dumps([{"image_id": 42, "category_id": 999, "bbox": [0, 0, 1, 1], "score": 0.5}]),
            "category id",
        ),
    }
    for name, (text, msg) in cases.items():
        (tmp_path / name).write_text(text)
        r = run_cli(
            ["eval", "coco", "--gt", str(gt), "--pred", str(tmp_path / name)],
        )
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("engine", ["numpy", "faster", "pycocotools"])
def test_coco_ground_truth_needs_only_what_evaluation_reads(real, tmp_path, engine):
    """Images without file_name (bbox: without sizes too) are evaluated as pycocotools and
    faster-coco-eval evaluate them; what evaluation truly needs is a clear error."""
    from eval.coco import coco_evaluate
    from vision.errors import DataError

    expected = json.loads((real / FAKE / "expected_stats_pycocotools.json").read_text())
    gt = json.loads((real / FAKE / "instances_val2014_100.json").read_text())
    dt = real / FAKE / "results/instances_val2014_fakebbox100_results.json"
    lean = {**gt, "images": [{"id": im["id"]} for im in gt["images"]]}
    (tmp_path / "lean.json").write_text(json.dumps(lean))
    got = coco_evaluate(tmp_path / "lean.json", dt, "bbox", engine)
    for name, value in zip(expected["stats_order"], expected["bbox"], strict=True):
        assert got[name] == pytest.approx(value, abs=1e-9), name
    with pytest.raises(DataError, match="field 'width'"):  # polygons become masks at image size
        coco_evaluate(tmp_path / "lean.json", dt, "segm", engine)
    no_area = {**lean, "annotations": [dict(a) for a in gt["annotations"]]}
    del no_area["annotations"][3]["area"]
    (tmp_path / "no_area.json").write_text(json.dumps(no_area))
    with pytest.raises(DataError, match=r"annotations\[3\].*'area'"):
        coco_evaluate(tmp_path / "no_area.json", dt, "bbox", engine)


@pytest.mark.parametrize("engine", ["numpy", "faster", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [None, [1, 10, 300]])
def test_undefined_stats_are_nan_where_pycocotools_says_minus_one(real, engine, iou_type, max_dets):
    """No small objects in this set: pycocotools reports APs and ARs as -1; here they are NaN
    (also with maxDets changed, where COCOeval.summarize would print -1 for every stat), and
    every defined stat equals pycocotools' published number."""
    import math

    from eval.coco import coco_evaluate

    small = real / "coco/faster_coco_eval_small"
    expected = json.loads((small / "expected_stats_pycocotools.json").read_text())
    stats = expected[f"gt_dataset.json|dt_dataset.json|{iou_type}"]
    want = dict(zip(expected["stats_order"], stats, strict=True))
    got = coco_evaluate(small / "gt_dataset.json", small / "dt_dataset.json", iou_type, engine,
                        max_dets=max_dets)  # fmt: skip
    top = "AR300" if max_dets else "AR100"
    for name, value in want.items():
        mine = got[top if name == "AR100" else name]
        if value == -1:
            assert math.isnan(mine), name
        elif not (max_dets and name in ("AR1", "AR10")):  # same maxDets: same numbers
            assert mine == pytest.approx(value, abs=1e-9), name
