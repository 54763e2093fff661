"""Client mistakes in uploads and request parameters: the status and the words of each
answer (``service.uploads``)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.uploads import ClientError, Limits, image_error, parse_bool, parse_number
from vision.data.io import ImageError, decode_image


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_upload_errors(shapes_dir):
    jpg = (shapes_dir / "VOC/JPEGImages/000001.jpg").read_bytes()
    lim = Limits(max_bytes=len(jpg) * 4, max_pixels=1_000_000)
    assert decode_image(jpg, lim).shape[2] == 3
    cases = [
        (b"", 400, "empty"),
        (b"hello, world\n", 415, "expected image/jpeg"),
        (b"GIF89a" + b"\0" * 20, 415, "GIF"),
        (jpg[: len(jpg) // 2], 400, "truncated"),
        (jpg * 5, 413, "bytes"),
        (_png(2000, 1000), 413, "pixels"),
    ]
    for data, status, words in cases:
        with pytest.raises(ImageError) as e:
            decode_image(data, lim)
        err = image_error(e.value)
        assert err.status == status and words in err.detail["error"], err.detail


@pytest.mark.parametrize(
    "word,want",
    [(w, True) for w in ("true", "TRUE", " 1 ", "yes", "Yes", "on", "ON", True)]
    + [(w, False) for w in ("false", "False", "0", "no", "NO", "off", "Off", False)],
)
def test_parse_bool(word, want):
    assert parse_bool(word, "f", not want) is want
    assert parse_bool(None, "f", True) is True and parse_bool("", "f", False) is False


def test_parse_bool_refuses_other_words():
    with pytest.raises(ClientError) as e:
        parse_bool("maybe", "agnostic_nms", False)
    assert e.value.status == 422
    assert e.value.detail == {
        "error": "'agnostic_nms': expected true or false (or 1/0, yes/no, on/off), got 'maybe'",
        "field": "agnostic_nms",
    }


def test_parse_number():
    assert parse_number("0.3", "t", 0, 1, 0.5) == 0.3 and parse_number(None, "t", 0, 1, 0.5) == 0.5
    assert parse_number("", "t", 0, 1, 0.5) == 0.5
    assert parse_number("0", "t", 0, 1, 0.5) == 0 and parse_number("1", "t", 0, 1, 0.5) == 1
    n = parse_number("7", "m", 1, 1000, 100, integer=True)
    assert n == 7 and isinstance(n, int)
    assert isinstance(parse_number("0.5", "t", 0, 1, 0.5), float)
    for bad in ("x", "2", "-1"):
        with pytest.raises(ClientError) as e:
            parse_number(bad, "t", 0, 1, 0.5)
        assert e.value.status == 422 and "'t'" in e.value.detail["error"]
    cases = {
        ("inf", False): "'t': expected a number in [0, 1], got 'inf'",
        ("2.5", True): "'t': expected an integer in [0, 1], got '2.5'",
        ("9", True): "'t': expected an integer in [0, 1], got 9",
        ("x" * 50, False): f"'t': expected a number in [0, 1], got {'x' * 40!r}",
        ("1.5", False): "'t': expected a number in [0, 1], got 1.5",
        ("1" + "0" * 45, False): f"'t': expected a number in [0, 1], got 1{'0' * 39}",
    }
    for (value, integer), message in cases.items():
        with pytest.raises(ClientError) as e:
            parse_number(value, "t", 0, 1, 0.5, integer=integer)
        assert e.value.detail == {"error": message, "field": "t"}, value


def test_image_errors_keep_the_decoder_detail_and_status():
    for reason, status in [("empty", 400), ("too_large", 413), ("unsupported", 415),
                           ("unusable", 422), ("something new", 400)]:  # fmt: skip
        err = image_error(ImageError(reason, "upload", "an image", "nothing", pixels=5), "photo")
        assert err.status == status
        assert err.detail == {"error": "'photo': expected an image, got nothing", "field": "photo",
                              "pixels": 5}  # fmt: skip
    assert image_error(ImageError("empty", "upload", "a", "b")).detail["field"] == "image"


def test_client_error_message_is_its_error_text():
    e = ClientError(422, "'max_detections': expected a number", field="max_detections")
    assert str(e) == "'max_detections': expected a number" and e.status == 422
    assert e.detail == {"error": "'max_detections': expected a number", "field": "max_detections"}
