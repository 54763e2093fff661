"""The numpy COCO engine against pycocotools, array for array: random problems with ties,
crowds, an annotation id 0, boxes on the area-range ends, more than ``maxDets`` detections per
(image, class), restricted image ids, masks; and results files read in slices."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from eval import coco_columns
from eval.coco import _run_engine, coco_evaluate, evaluate_columns
from vision.errors import DataError


def problem(seed: int, n_img: int = 12, n_cat: int = 4, quant: bool = False, crowd: float = 0.15):
    """Ground truth and detections: most detections jitter a ground-truth box (some keep it
    exactly), the rest are random; ``quant`` rounds boxes and scores so ties are frequent."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": 3 * i + int(rng.integers(2)), "width": 160, "height": 120} for i in range(n_img)
    ]
    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(0, 6))):
            w, h = (
                rng.choice([32.0, 96.0, 16.0, 64.0, 100.0], 2)
                if rng.random() < 0.3
                else rng.uniform(2, 110, 2)
            )
            x, y = rng.uniform(0, 50, 2)
            box = np.round([x, y, w, h]) if quant else np.array([x, y, w, h])
            anns.append(
                {
                    "id": len(anns) + (0 if seed % 3 == 0 else 1),  # one case has id 0
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, n_cat + 1)),
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3])
                    if rng.random() < 0.7
                    else float(rng.uniform(500, 12000)),
                    "iscrowd": int(rng.random() < crowd),
                }
            )
        for _ in range(int(rng.integers(0, 25))):
            if anns and rng.random() < 0.75:
                a = anns[int(rng.integers(len(anns)))]
                b = np.array(a["bbox"]) + rng.normal(0, 4, 4) * (rng.random() < 0.8)
                c = a["category_id"] if rng.random() < 0.85 else int(rng.integers(1, n_cat + 1))
                img = a["image_id"]
            else:
                b, c, img = (
                    np.r_[rng.uniform(0, 80, 2), rng.uniform(1, 80, 2)],
                    int(rng.integers(1, n_cat + 1)),
                    im["id"],
                )
            b = np.round(b) if quant else b
            score = float(rng.integers(0, 5) / 4) if quant else float(rng.random())
            dets.append({"image_id": img, "category_id": c, "bbox": b.tolist(), "score": score})
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, n_cat + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def assert_same_arrays(gt, dets, iou_type="bbox", img_ids=None, max_dets=(1, 10, 100)):
    ref = _run_engine(
        copy.deepcopy(gt), copy.deepcopy(dets), iou_type, "pycocotools", img_ids, list(max_dets)
    )
    cols = coco_columns.dt_columns(dets, gt, iou_type)
    got = evaluate_columns(gt, cols, iou_type, img_ids, list(max_dets))
    p_ref, r_ref = np.asarray(ref.eval["precision"]), np.asarray(ref.eval["recall"])
    assert got.precision.shape == p_ref.shape and got.recall.shape == r_ref.shape
    # identical, not only within the 1e-12 asked: the same float operations in the same order
    assert np.array_equal(got.precision, p_ref) and np.array_equal(got.recall, r_ref)
    return got


@pytest.mark.parametrize("seed", range(24))
def test_random_box_problems_equal_pycocotools(seed):
    gt, dets = problem(seed, quant=seed % 2 == 1, crowd=0.4 if seed % 4 == 0 else 0.15)
    img_ids = [im["id"] for im in gt["images"]][::2] if seed % 5 == 0 else None
    max_dets = (1, 3, 7) if seed % 3 == 1 else (1, 10, 100)
    got = assert_same_arrays(gt, dets, img_ids=img_ids, max_dets=max_dets)
    assert (got.precision >= 0).any(), "a problem with no defined precision proves little"


def test_more_detections_than_max_dets_in_one_group_and_equal_scores():
    """120 detections on one (image, class), half of them with the same score: the cut at 100
    keeps the first by score then by file order, as the API does."""
    gt, _ = problem(5, n_img=3)
    a = gt["annotations"][0]
    rng = np.random.default_rng(0)
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": (np.array(a["bbox"]) + rng.normal(0, 2, 4)).tolist(),
            "score": 0.5 if k % 2 else float(rng.random()),
        }
        for k in range(120)
    ]
    got = assert_same_arrays(gt, dets)
    assert_same_arrays(gt, dets, max_dets=(1, 5, 60))
    plain = evaluate_columns(gt, coco_columns.dt_columns(dets, gt, "bbox"))  # the defaults
    assert np.array_equal(plain.precision, got.precision) and plain.max_dets == [1, 10, 100]


def _rect_mask_problem(seed: int):
    from pycocotools import mask as mask_utils

    gt, dets = problem(seed, n_img=6)
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h * 0.7]]
    for d in dets:
        m = np.zeros((120, 160), np.uint8)
        x, y, w, h = (max(int(v), 0) for v in d["bbox"])
        m[y : y + max(h, 1), x : x + max(w, 1)] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    return gt, dets


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("with_boxes", [True, False])
def test_random_mask_problems_equal_pycocotools(seed, with_boxes):
    """Polygons against RLE masks with crowds; the detections' areas come from their boxes
    when the first result has one (``loadRes``), from the masks otherwise."""
    gt, dets = _rect_mask_problem(seed)
    if not with_boxes:
        for d in dets:
            del d["bbox"]
    assert_same_arrays(gt, dets, "segm")


def test_results_file_read_in_slices_equals_one_read(tmp_path, monkeypatch):
    gt, dets = problem(7, n_img=30)
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets, indent=1))
    whole = coco_evaluate(gt_path, dt_path)
    monkeypatch.setattr(coco_columns, "SLICE", 300)  # about three detections a slice
    sliced = coco_evaluate(gt_path, dt_path)
    assert json.dumps(whole, sort_keys=True) == json.dumps(sliced, sort_keys=True)
    # a boundary inside a string: the file is read whole and gives the same answer
    tricky = [dict(d, note="},{") for d in dets]
    dt_path.write_text(json.dumps(tricky))
    assert coco_evaluate(gt_path, dt_path)["AP"] == whole["AP"]
    # a bad detection in a later slice is named by its index in the file
    bad = copy.deepcopy(dets)
    bad[40]["score"] = "high"
    dt_path.write_text(json.dumps(bad))
    with pytest.raises(DataError) as e:
        coco_evaluate(gt_path, dt_path)
    assert str(e.value).startswith(f"{dt_path}[40] score: expected a finite number")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("score", float("nan"), "[2] score: expected a finite number, got nan"),
        ("score", True, "[2] score: expected a finite number, got True"),
        (
            "bbox",
            [1, 2, 3],
            "[2] bbox: expected [x, y, width, height], finite numbers, got [1, 2, 3]",
        ),
        ("bbox", [1, 2, "3", 4], "[2] bbox: expected [x, y, width, height], finite numbers"),
        ("image_id", 1.0, "[2] image_id: expected an image id of the ground truth, got 1.0"),
    ],
)
def test_bad_fields_in_lists_are_named(field, value, message):
    gt, dets = problem(4)
    dets[2][field] = value
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, dets)
    assert message in str(e.value)


def test_two_annotations_with_one_id_are_an_error():
    """pycocotools would score the later of the two twice (one annotation per id)."""
    gt, dets = problem(2)
    gt["annotations"][3]["id"] = gt["annotations"][1]["id"]
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, dets)
    assert str(e.value).startswith(
        "ground truth annotations[1] and annotations[3]: expected unique annotation ids"
    )


def test_slices_are_cut_between_objects_with_no_fallback_and_no_slow_path(tmp_path, monkeypatch):
    """A well-formed file is decoded slice by slice (each but the last at least ``SLICE``
    bytes less one object, none over two slices), never read whole and never sent to the slow
    checks."""
    gt, dets = problem(9, n_img=30)
    dt_path = tmp_path / "dt.json"
    dt_path.write_text("\n  " + json.dumps(dets, indent=2) + "\n\n")
    monkeypatch.setattr(coco_columns, "SLICE", 400)
    sizes: list[int] = []
    decode = coco_columns._decode_boxes

    def counted(chunk, *a):
        sizes.append(len(chunk))
        return decode(chunk, *a)

    def refuse(*a, **k):
        raise AssertionError("the slow path ran on a well-formed file")

    monkeypatch.setattr(coco_columns, "_decode_boxes", counted)
    monkeypatch.setattr(coco_columns, "read_json", refuse)
    monkeypatch.setattr(coco_columns, "explain_bad_dt", refuse)
    cols = coco_columns.dt_columns(dt_path, gt, "bbox")
    assert len(cols.scores) == len(dets) and len(sizes) >= dt_path.stat().st_size // 900
    biggest = max(len(json.dumps(d, indent=2)) for d in dets)
    assert biggest < 200
    # cut at the last boundary, not the first: more than one object in each but the last
    assert all(biggest + 2 < s <= 2 * 400 + 2 for s in sizes[:-1]), (biggest, sorted(sizes))
    got = np.c_[cols.image_id, cols.category_id, cols.scores, cols.boxes]
    want = np.array([[d["image_id"], d["category_id"], d["score"], *d["bbox"]] for d in dets])
    assert np.array_equal(got, want)


def test_an_out_of_range_number_names_its_place_in_the_file(tmp_path):
    gt, dets = problem(3)
    text = json.dumps(dets).replace(str(dets[1]["score"]), "1e400", 1)
    (tmp_path / "dt.json").write_text(text)
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, tmp_path / "dt.json")
    assert "dt.json:1:" in str(e.value) and "expected valid JSON" in str(e.value)


def test_equal_iou_goes_to_the_later_annotation_among_many_in_one_group():
    """Two boxes A, B of one (image, class) tie for the first detection; the second detection
    can take only A at high thresholds. The reference gives the tie to the later annotation,
    so the order inside a group must survive sorting 70 annotations of that group."""
    far = [[200 + 12 * k, 300, 10, 10] for k in range(68)]
    boxes = [*far[:30], [0, 0, 10, 10], [2, 0, 10, 10], *far[30:]]  # A then B
    anns = [
        {"id": n + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 100.0, "iscrowd": 0}
        for n, b in enumerate(boxes)
    ]
    anns = [{**a, "id": 100 + a["id"], "image_id": 2} for a in anns[:20]] + anns  # unsorted
    images = [{"id": i, "width": 900, "height": 400} for i in (1, 2)]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.9},  # ties A, B
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8},  # A: 1, B: .67
    ]
    got = assert_same_arrays(gt, dets)
    assert got.recall[6, 0, 0, 2] == pytest.approx(2 / 90)  # IoU .8: both matched


def test_boxes_of_a_pixel_or_less_are_scored():
    gt = {"images": [{"id": 1, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0.8, 0.6],
                           "area": 0.48, "iscrowd": 0}]}  # fmt: skip
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 0.8, 0.6], "score": 0.5}]
    assert_same_arrays(gt, dets)
    assert coco_evaluate(gt, dets)["AP"] == pytest.approx(1.0)


def test_a_first_detection_without_a_box_is_named():
    gt, dets = problem(4)
    del dets[0]["bbox"]
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, dets)
    assert str(e.value).startswith("predictions[0]: expected field 'bbox'")


def test_a_bad_mask_detection_is_named_for_its_own_fault():
    gt, dets = _rect_mask_problem(1)
    for d in dets:
        del d["bbox"]
    del dets[2]["score"]
    with pytest.raises(DataError) as e:
        coco_evaluate(gt, dets, "segm")
    assert str(e.value).startswith("predictions[2]: expected field 'score'")


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_pairs_scored_and_matched_in_small_blocks_give_the_same_arrays(seed, monkeypatch):
    """The memory bounds (pairs scored a block at a time, one rank's candidates matched a
    piece at a time, never splitting a detection's pairs) leave every array unchanged."""
    from eval import coco_engine

    monkeypatch.setattr(coco_engine, "PAIRS_PER_BLOCK", 7)
    monkeypatch.setattr(coco_engine, "STEP_PAIRS", 3)
    gt, dets = problem(seed, n_img=20, quant=seed == 3)
    assert_same_arrays(gt, dets)
    gt, dets = _rect_mask_problem(seed)
    assert_same_arrays(gt, dets, "segm")


def test_the_engine_refuses_an_empty_image_or_category_list():
    from eval import coco_engine

    gt, dets = problem(1)
    cols = coco_columns.gt_columns(gt, "bbox")
    d = coco_columns.dt_columns(dets, gt, "bbox")
    with pytest.raises(ValueError, match="expected at least one image and one category, got 0"):
        coco_engine.evaluate(cols, d, np.zeros(0, np.int64), np.array([1]), [1, 10, 100])


def test_an_iou_of_exactly_one_half_matches_at_the_first_threshold():
    gt = {"images": [{"id": 1, "width": 20, "height": 20}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                           "area": 100.0, "iscrowd": 0}]}  # fmt: skip
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5], "score": 0.9}]  # IoU 0.5
    got = assert_same_arrays(gt, dets)
    assert got.recall[0, 0, 0, 2] == 1.0 and got.recall[1, 0, 0, 2] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_detection_overlapping_more_boxes_than_one_piece_holds(seed, monkeypatch):
    """A crowded group (nine boxes a few pixels apart, a crowd region on them): each detection
    overlaps every box by more than 0.5, so its pairs outnumber a piece of ``STEP_PAIRS``;
    a piece is then widened to hold them all and the detection still takes one box."""
    from eval import coco_engine

    monkeypatch.setattr(coco_engine, "STEP_PAIRS", 4)
    rng = np.random.default_rng(seed)
    base = np.array([20.0, 20.0, 60.0, 50.0])
    images = [{"id": 1, "width": 160, "height": 120}]
    anns = [
        {
            "id": k + 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": (base + rng.uniform(-3, 3, 4)).tolist(),
            "area": 3000.0,
            "iscrowd": int(k == 8),
        }
        for k in range(9)
    ]
    dets = [
        {
            "image_id": 1,
            "category_id": 1,
            "bbox": (base + rng.uniform(-4, 4, 4)).tolist(),
            "score": float(rng.uniform(0.1, 1.0)),
        }
        for _ in range(14)
    ]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    got = assert_same_arrays(gt, dets)
    assert (got.precision[0, :, 0, 0, -1] > 0).any()
