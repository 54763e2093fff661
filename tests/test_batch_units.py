"""Batch prediction's pieces in process: what ``--source`` names (files, folders, globs, lists,
a COCO JSON) and the job folder (recovery after a crash, shards merged, COCO results and the
totals streamed from the lines)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.batch.outputs import JobFolder, atomic_write, index_png, recover_lines
from vision.batch.sources import EXPECTED, Item, _rel_names, collect
from vision.errors import DataError

# ---- sources --------------------------------------------------------------------------------


def _touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return str(path.resolve())


def test_a_folder_sorted_hidden_skipped_and_counted(tmp_path):
    a = _touch(tmp_path / "b" / "a.jpg")
    z = _touch(tmp_path / "a" / "z.png")
    _touch(tmp_path / ".hidden" / "q.jpg")
    _touch(tmp_path / "a" / ".x.jpg")
    _touch(tmp_path / "a" / ".y.jpg")
    src = collect([str(tmp_path)])
    assert src.items == [Item(z, 1, "a/z"), Item(a, 2, "b/a")]
    assert src.skipped == {"hidden": 3, "duplicates": 0} and src.categories is None


def test_files_lists_globs_and_duplicates(tmp_path, monkeypatch):
    a = _touch(tmp_path / "imgs" / "a.jpg")
    b = _touch(tmp_path / "imgs" / "sub" / "b.jpg")
    (tmp_path / "list.txt").write_text("imgs/a.jpg\n\n  imgs/sub/b.jpg  \n")
    src = collect([str(tmp_path / "list.txt"), a, str(tmp_path / "imgs" / "**" / "*.jpg")])
    assert [i.path for i in src.items] == [a, b] and [i.image_id for i in src.items] == [1, 2]
    assert [i.rel for i in src.items] == ["a", "sub/b"]
    assert src.skipped == {"hidden": 0, "duplicates": 3}  # a: twice again, b: once
    one = collect([str(tmp_path / "imgs" / "*.jpg")])
    assert [i.path for i in one.items] == [a]
    monkeypatch.chdir(tmp_path)
    assert collect(["imgs/a.jpg"]).items == [Item(a, 1, "a")]


def test_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    a = _touch(tmp_path / "p" / "a.jpg")
    assert collect(["~/p"]).items[0].path == a
    assert collect(["~/p/a.jpg"]).items[0].path == a
    assert collect(["~/p/*.jpg"]).items[0].path == a
    (tmp_path / "l.txt").write_text("~/p/a.jpg\n")
    assert collect([str(tmp_path / "l.txt")]).items[0].path == a


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match=f"--source: expected {EXPECTED}, got nothing"):
        collect([])
    with pytest.raises(DataError) as e:
        collect([str(tmp_path / "*.jpg")])
    assert (
        str(e.value)
        == f"{tmp_path / '*.jpg'}: expected {EXPECTED} (a glob matching files), got no file matches"
    )
    with pytest.raises(DataError, match=r"a glob matching files"):
        collect([str(tmp_path / "x?.jpg")])
    (tmp_path / "d.jpg").mkdir()  # a glob finding only a folder finds no file
    with pytest.raises(DataError, match="no file matches"):
        collect([str(tmp_path / "[d].jpg")])
    with pytest.raises(
        DataError, match=f"gone.jpg: expected {EXPECTED}, got no such file or folder"
    ):
        collect([str(tmp_path / "gone.jpg")])
    with pytest.raises(DataError) as e:
        collect([str(tmp_path / "a.json"), str(tmp_path / "b.jpg")])
    assert str(e.value) == (
        "--source: expected a COCO instances JSON alone (its ids are the results' ids), "
        f"got {[str(tmp_path / 'a.json'), str(tmp_path / 'b.jpg')]}"
    )
    assert collect([str(tmp_path / "d.jpg")]).items == []  # an empty folder: nothing, no error


def test_rel_names_keep_suffixes_only_where_names_clash():
    assert _rel_names([]) == []
    assert _rel_names(["/d/a.jpg", "/d/a.png", "/d/b.jpg"]) == ["a.jpg", "a.png", "b"]
    assert _rel_names(["/d/x/a.jpg", "/d/y/a.jpg"]) == ["x/a", "y/a"]
    assert _rel_names(["/d/a.jpg"]) == ["a"]


def _coco(path: Path, images: list[dict], cats=None) -> Path:
    data = {"images": images}
    if cats is not None:
        data["categories"] = cats
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("where", ["json", "parent", "images", "split"])
def test_coco_json_finds_its_images(tmp_path, where):
    ann = tmp_path / "data" / "annotations" / "instances_val7.json"
    folder = {
        "json": ann.parent,
        "parent": tmp_path / "data",
        "images": tmp_path / "data" / "images",
        "split": tmp_path / "data" / "val7",
    }[where]
    a = _touch(folder / "sub" / "a.jpg")
    cats = [{"id": 5, "name": "cat"}]
    _coco(ann, [{"id": 9, "file_name": "sub/a.jpg"}, {"id": "3", "file_name": "b.png"}], cats)
    src = collect([str(ann)])
    assert src.items == [Item(a, 9, "sub/a"), Item(str((folder / "b.png").resolve()), 3, "b")]
    assert src.categories == cats and src.skipped == {"hidden": 0, "duplicates": 0}


def test_coco_json_image_root_and_errors(tmp_path):
    ann = _coco(tmp_path / "a.json", [{"id": 1, "file_name": "x.jpg"}], cats={"bad": 1})
    src = collect([str(ann)], image_root=str(tmp_path / "elsewhere"))
    assert src.items[0].path == str((tmp_path / "elsewhere" / "x.jpg").resolve())
    assert src.categories is None  # not a list: no categories
    with pytest.raises(DataError) as e:
        collect([str(ann)])
    d = tmp_path.resolve()
    places = [str(d), str(d.parent), str(d.parent / "images"), str(d.parent / "a")]
    assert str(e.value) == (
        f"{ann}: expected its images (x.jpg) in one of {places}, got not found "
        "(give the folder with --image-root)"
    )
    empty = _coco(tmp_path / "e" / "instances_e.json", [])
    assert collect([str(empty)]).items == []
    with pytest.raises(DataError) as e:
        collect([str(tmp_path / "gone.json")])
    assert (
        str(e.value)
        == f"{tmp_path / 'gone.json'}: expected a COCO instances JSON file, got no such file"
    )
    for bad in (
        "{",
        '{"images": [{"id": 1}]}',
        '{"x": 1}',
        '{"images": [{"id": "a", "file_name": "f"}]}',
    ):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(DataError) as e:
            collect([str(tmp_path / "bad.json")])
        assert str(e.value).startswith(
            f"{tmp_path / 'bad.json'}: expected COCO instances JSON with images[].id and "
            "images[].file_name, got "
        )
    (tmp_path / "bad.json").write_text('{"images": [1]}')
    with pytest.raises(DataError, match="TypeError"):
        collect([str(tmp_path / "bad.json")])


def test_home_in_image_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ann = _coco(tmp_path / "a.json", [{"id": 1, "file_name": "x.jpg"}])
    assert collect([str(ann)], image_root="~/r").items[0].path == str(tmp_path / "r" / "x.jpg")


# ---- outputs --------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temporary(tmp_path):
    p = tmp_path / "new" / "deep" / "f.json"
    atomic_write(p, b"one")
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and sorted(os.listdir(p.parent)) == ["f.json"]


def test_recover_lines_cuts_a_partial_last_line(tmp_path):
    p = tmp_path / "p.jsonl"
    assert recover_lines(p) == []
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3')
    assert recover_lines(p) == [{"a": 1}, {"a": 2}]
    assert p.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    p.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')  # a broken line: it and what follows go
    assert recover_lines(p) == [{"a": 1}] and p.read_bytes() == b'{"a": 1}\n'
    p.write_bytes(b'{"a": 1}\n')
    assert recover_lines(p) == [{"a": 1}] and p.read_bytes() == b'{"a": 1}\n'
    p.write_bytes(b"")
    assert recover_lines(p) == [] and p.read_bytes() == b""


def test_index_png_reads_back_class_indices():
    import io

    m = np.array([[0, 1], [2, 3]], np.int64)
    grey = Image.open(io.BytesIO(index_png(m, None)))
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), m)
    pal = Image.open(io.BytesIO(index_png(m, [(1, 2, 3), (4, 5, 6), (7, 8, 9), (0, 0, 1)])))
    assert pal.mode == "P" and np.array_equal(np.asarray(pal), m)
    assert pal.getpalette()[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 1]
    big = np.tile(np.arange(40, dtype=np.uint8) % 4, (40, 1))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", compress_level=1)  # fast, not smallest
    assert index_png(big, None) == buf.getvalue()


def test_done_and_append_and_retry(tmp_path):
    assert JobFolder(tmp_path).shards == tmp_path / ".shards"  # where Ray's workers write
    deep = JobFolder(tmp_path / "a" / "b" / "c")
    assert deep.done()[0] == set() and deep.out.is_dir()
    job = JobFolder(tmp_path / "out")
    assert job.done() == (set(), {"predicted": 0, "failed": 0, "retried": 0})
    job.append("predictions", [{"path": "a"}, {"path": "b"}])
    job.append("errors", [{"path": "c", "reason": "corrupt"}])
    job.append("errors", [])
    first = job._files["predictions"]
    job.append("predictions", [])
    job.append("predictions", [{"path": "b2"}])
    assert job._files["predictions"] is first  # one handle per file
    job.close()
    assert job.predictions.read_bytes() == b'{"path":"a"}\n{"path":"b"}\n{"path":"b2"}\n'
    assert job.done() == ({"a", "b", "b2", "c"}, {"predicted": 3, "failed": 1, "retried": 0})
    assert job.errors.read_bytes() != b""
    assert job.done(retry_errors=True) == (
        {"a", "b", "b2"},
        {"predicted": 3, "failed": 0, "retried": 1},
    )
    assert job.errors.read_bytes() == b""
    job.append("predictions", [{"path": "d"}])
    job.append("predictions", [{"path": "e"}])
    job.close()
    assert [r["path"] for r in recover_lines(job.predictions)] == ["a", "b", "b2", "d", "e"]
    assert job._files == {}


def test_merge_shards_sorted_once_each(tmp_path):
    job = JobFolder(tmp_path)
    assert job.merge_shards() == {"predictions": 0, "errors": 0, "duplicates": 0}
    job.append("predictions", [{"path": "a"}])
    job.append("errors", [{"path": "f", "reason": "corrupt"}])
    job.close()
    job.shards.mkdir()
    (job.shards / "2.predictions.jsonl").write_bytes(b'{"path":"f"}\n')  # failed before: kept
    (job.shards / "1.predictions.jsonl").write_bytes(b'{"path":"c"}\n{"path":"a"}\n')
    (job.shards / "0.predictions.jsonl").write_bytes(b'{"path":"b"}\n{"path":"c"}\n{"pa')
    (job.shards / "0.errors.jsonl").write_bytes(b'{"path":"e","reason":"x"}\n{"path":"b"}\n')
    counts = job.merge_shards()
    assert counts == {"predictions": 2, "errors": 1, "duplicates": 4}
    assert [r["path"] for r in recover_lines(job.predictions)] == ["a", "b", "c"]
    assert [r["path"] for r in recover_lines(job.errors)] == ["f", "e"]
    assert not job.shards.exists() and job._files == {}


def _rows(job: JobFolder, rows: list[dict]) -> None:
    job.append("predictions", rows)
    job.close()


def test_coco_results_and_totals_of_a_detector(tmp_path):
    job = JobFolder(tmp_path)

    def det(c, s, lab):
        return {"box": [1, 2, 4, 8], "class_id": c, "score": s, "label": lab}

    two = [det(1, 0.5, "dog"), det(0, 0.25, "cat")]
    _rows(job, [{"path": "a", "image_id": 7, "detections": two},
                {"path": "b", "image_id": 8, "detections": []},
                {"path": "c", "image_id": 9, "detections": [det(1, 0.75, "dog")]}])  # fmt: skip
    job.append("errors", [{"path": "x", "reason": "corrupt"}, {"path": "y", "reason": "empty"},
                          {"path": "z", "reason": "corrupt"}])  # fmt: skip
    job.close()
    assert job.write_coco_results("detection", [3, 5], ["cat", "dog"]) == 3
    text = (tmp_path / "coco_results.json").read_text()
    assert text.startswith("[\n{") and text.endswith("}\n]\n") and text.count(",\n{") == 2
    assert json.loads(text) == [
        {"image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 6], "score": 0.5},
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 6], "score": 0.25},
        {"image_id": 9, "category_id": 5, "bbox": [1, 2, 3, 6], "score": 0.75},
    ]
    assert sorted(os.listdir(tmp_path)) == [
        "coco_results.json",
        "errors.jsonl",
        "predictions.jsonl",
    ]
    assert job.totals("detection", ["cat", "dog", "bird"]) == {
        "images": 3,
        "errors": 3,
        "errors_by_reason": {"corrupt": 2, "empty": 1},
        "per_class": {"cat": {"detections": 1}, "dog": {"detections": 2}, "bird": {}},
    }
    assert list(job.totals("detection", ["cat", "dog"])["errors_by_reason"]) == ["corrupt", "empty"]


def test_coco_results_and_totals_of_a_segmenter(tmp_path):
    from pycocotools import mask as mask_utils

    job = JobFolder(tmp_path)
    m = np.array([[0, 2], [2, 2]], np.uint8)
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.png").write_bytes(index_png(m, None))
    rle = {"size": [2, 2], "counts": "abc"}
    _rows(job, [{"path": "a", "image_id": 1, "mask": "masks/a.png",
                 "pixel_counts": {"bg": 1, "cat": 0, "dog": 3}},
                {"path": "b", "image_id": 2, "mask": {"per_class": {"dog": rle}},
                 "pixel_counts": {"bg": 0, "cat": 0, "dog": 4}}])  # fmt: skip
    assert job.write_coco_results("segmentation", [10, 11, 12], ["bg", "cat", "dog"]) == 3
    got = json.loads((tmp_path / "coco_results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in got] == [(1, 10), (1, 12), (2, 12)]
    two = got[1]["segmentation"]
    assert two["size"] == [2, 2] and isinstance(two["counts"], str)
    back = mask_utils.decode({"size": two["size"], "counts": two["counts"].encode()})
    assert np.array_equal(back, (m == 2).astype(np.uint8)) and got[2]["segmentation"] == rle
    assert job.totals("segmentation", ["bg", "cat", "dog"]) == {
        "images": 2,
        "errors": 0,
        "errors_by_reason": {},
        "per_class": {
            "bg": {"images": 1, "pixels": 1},
            "cat": {},
            "dog": {"images": 2, "pixels": 7},
        },
    }


def test_empty_results_and_summary(tmp_path):
    job = JobFolder(tmp_path / "o")
    job.out.mkdir()
    assert job.write_coco_results("detection", [1], ["a"]) == 0
    assert (job.out / "coco_results.json").read_text() == "[\n]\n"
    assert job.totals("detection", ["a"])["images"] == 0
    job.write_summary({"images": 2, "x": [1]})
    assert (job.out / "summary.json").read_text() == '{\n "images": 2,\n "x": [\n  1\n ]\n}\n'
