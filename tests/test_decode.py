"""The one image decoder: images as people send them (EXIF orientations, 16-bit, CMYK,
transparency, animations, broken metadata) and the upload limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vision.data.io import BACKGROUND, DecodeLimits, ImageError, decode_image, sniff, to_rgb

# Pillow's exif_transpose undoes orientation k with this operation; a file showing the
# upright picture stores the upright pixels transformed by its inverse
UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


def upright() -> np.ndarray:
    """A small picture with no symmetry: any flip or rotation changes it."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 50, 3), np.uint8)
    img[:5, :10] = (255, 0, 0)
    return img


def oriented_png(img: np.ndarray, k: int) -> bytes:
    """A PNG whose EXIF orientation is ``k`` and which shows ``img`` upright."""
    im = Image.fromarray(img)
    if k != 1:
        op = UNDO[k]
        im = im.transpose(INVERSE.get(op, op))
    exif = Image.Exif()
    exif[0x0112] = k
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("k", range(1, 9))
def test_exif_orientation_gives_the_picture_the_user_sees(k):
    img = upright()
    got = decode_image(oriented_png(img, k))
    assert got.shape == img.shape and np.array_equal(got, img)
    if k != 1:  # the stored pixels really are different: the orientation was applied
        assert not np.array_equal(decode_image(oriented_png(img, k), exif=False), img)


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_16_bit_grey_is_scaled_not_clipped():
    a = np.array([[0, 257, 32896, 33025, 65535]], np.uint16)  # 33025: 128.502 of 255
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    got = decode_image(_png(im))
    assert got.shape == (1, 5, 3) and got.dtype == np.uint8
    assert got[0, :, 0].tolist() == [0, 1, 128, 129, 255] and (got[..., 0] == got[..., 2]).all()


@pytest.mark.parametrize(
    "mode, values, want",
    [
        ("I;16B", [0, 33025, 65535], [0, 129, 255]),
        ("I;16L", [0, 33025, 65535], [0, 129, 255]),
        ("I", [0, 33025, 65535], [0, 129, 255]),  # 32-bit integers: read as 16-bit range
        ("F", [-0.5, 0.5, 1.0, 2.0], [0, 128, 255, 255]),  # floats: 0..1, clipped
    ],
)
def test_wide_grey_modes_are_scaled_to_8_bits(mode, values, want):
    im = Image.new(mode, (len(values), 1))
    for x, v in enumerate(values):
        im.putpixel((x, 0), v)
    got = to_rgb(im)
    assert got.shape == (1, len(values), 3) and got.dtype == np.uint8
    assert got[0, :, 0].tolist() == want and (got[..., 0] == got[..., 1]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa"])
def test_every_alpha_mode_is_laid_on_the_background(mode):
    assert [tuple(p) for p in to_rgb(Image.new(mode, (2, 1))).reshape(-1, 3)] == [BACKGROUND] * 2


def test_colour_keys_are_transparent_in_grey_and_rgb_pngs():
    grey = Image.new("L", (2, 1), 0)
    grey.putpixel((1, 0), 9)
    got = decode_image(_png(grey, transparency=0))
    assert tuple(got[0, 0]) == BACKGROUND and tuple(got[0, 1]) == (9, 9, 9)
    rgb = Image.new("RGB", (2, 1), (1, 2, 3))
    rgb.putpixel((1, 0), (4, 5, 6))
    got = decode_image(_png(rgb, transparency=(1, 2, 3)))
    assert tuple(got[0, 0]) == BACKGROUND and tuple(got[0, 1]) == (4, 5, 6)


def test_webp_is_sniffed_by_its_riff_header():
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (0, 0, 255)).save(buf, "WEBP", lossless=True)
    webp = buf.getvalue()
    assert sniff(webp) == "WEBP" and tuple(decode_image(webp)[2, 3]) == (0, 0, 255)
    assert decode_image(webp, DecodeLimits(formats=("WEBP",))).shape == (4, 6, 3)
    assert sniff(b"RIFF\0\0\0\0WAVEfmt ") is None  # RIFF, but sound
    assert sniff(b"RIFX\0\0\0\0WEBPVP8 ") is None  # WEBP, but not in a RIFF file
    assert sniff(webp[:12]) == "WEBP" and sniff(b"RIFF") is None


def test_cmyk_jpeg_and_transparency_on_the_background():
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # red
    red = decode_image(buf.getvalue())
    assert red.shape == (16, 16, 3) and red[..., 0].min() > 240 and red[..., 1:].max() < 15
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    la.putpixel((0, 0), (0, 255))  # one opaque black pixel
    got = decode_image(_png(la))
    assert tuple(got[1, 1]) == BACKGROUND and tuple(got[0, 0]) == (0, 0, 0)
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((3, 3), 1)
    got = decode_image(_png(p, transparency=0))  # index 0 (blue) is transparent
    assert tuple(got[0, 0]) == BACKGROUND and tuple(got[3, 3]) == (0, 255, 0)


def test_animation_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    assert tuple(decode_image(buf.getvalue())[4, 4]) == (255, 0, 0)


def test_broken_metadata_and_data_are_image_errors():
    buf = io.BytesIO()
    Image.fromarray(upright()).save(buf, "JPEG")
    jpg = buf.getvalue()
    bad_exif = jpg[:2] + b"\xff\xe1\x00\x20Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff" + b"\x00" * 14
    bad_exif += jpg[2:]
    try:  # a corrupt EXIF block is ignored or refused, never an unexpected exception
        assert decode_image(bad_exif).shape == (30, 50, 3)
    except ImageError as e:
        assert e.reason == "corrupt"
    for data, reason in (
        (b"", "empty"),
        (jpg[:100], "corrupt"),
        (b"\x89PNG\r\n\x1a\nxx", "corrupt"),
    ):
        with pytest.raises(ImageError) as e:
            decode_image(data)
        assert e.value.reason == reason


def test_upload_limits():
    lim = DecodeLimits(max_bytes=10_000, max_pixels=100 * 100)
    with pytest.raises(ImageError) as e:
        decode_image(_png(Image.new("L", (200, 200))), lim)  # small file, too many pixels
    assert e.value.reason == "too_large" and "40000 pixels" in str(e.value)
    with pytest.raises(ImageError) as e:
        decode_image(b"GIF89a" + b"\0" * 30, lim)
    assert e.value.reason == "unsupported" and "GIF" in str(e.value)
    assert decode_image(_png(Image.new("L", (20, 20))), lim).shape == (20, 20, 3)


def test_an_image_that_resizes_to_nothing_is_refused():
    from vision.models.registry import build_model
    from vision.predictor import Predictor

    pred = Predictor(build_model("fcn8s_slim", 3, class_names=["a", "b", "c"], input_size=96))
    with pytest.raises(ImageError) as e:
        pred.prepare(_png(Image.new("RGB", (4000, 1))))
    assert e.value.reason == "unusable" and "4000x1" in str(e.value)
    arr, info = pred.prepare(_png(Image.new("RGB", (400, 3))))
    assert arr.shape == (pred.size, pred.size, 3) and info["orig_size"] == (3, 400)


def test_upload_limit_errors_say_what_where_and_how_much():
    data = _png(Image.new("L", (20, 20)))
    assert decode_image(data, DecodeLimits(max_bytes=len(data))).shape == (20, 20, 3)  # at most
    with pytest.raises(ImageError) as e:
        decode_image(data, DecodeLimits(max_bytes=len(data) - 1), where="req.jpg")
    assert e.value.reason == "too_large" and e.value.detail == {"limit": len(data) - 1}
    assert str(e.value) == f"req.jpg: expected at most {len(data) - 1} bytes, got {len(data)} bytes"
    lim = DecodeLimits(formats=("JPEG", "PNG"))
    for blob, got in (
        (b"GIF89a" + b"\0" * 30, "a GIF image"),
        (b"not an image at all", "data that is not a JPEG, PNG or WebP image"),
    ):
        with pytest.raises(ImageError) as e:
            decode_image(blob, lim, where="upload")
        assert e.value.reason == "unsupported"
        assert e.value.detail == {"accepted": ["image/jpeg", "image/png"]}
        assert str(e.value) == f"upload: expected image/jpeg or image/png, got {got}"


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.delenv("VISION_MAX_BYTES", raising=False)
    monkeypatch.delenv("VISION_MAX_PIXELS", raising=False)
    assert DecodeLimits.from_env() == DecodeLimits() == DecodeLimits(20 * 2**20, 40_000_000)
    monkeypatch.setenv("VISION_MAX_BYTES", "1234")
    monkeypatch.setenv("VISION_MAX_PIXELS", "99")
    lim = DecodeLimits.from_env()
    assert (lim.max_bytes, lim.max_pixels, lim.formats) == (1234, 99, ("JPEG", "PNG", "WEBP"))


def test_the_pixel_limit_is_inclusive_and_its_error_says_how_many():
    data = _png(Image.new("L", (20, 20)))
    assert decode_image(data, DecodeLimits(max_pixels=400)).shape == (20, 20, 3)  # at most
    with pytest.raises(ImageError) as e:
        decode_image(data, DecodeLimits(max_pixels=399), where="up.png")
    assert str(e.value) == "up.png: expected at most 399 pixels, got 20x20 = 400 pixels"
    assert e.value.reason == "too_large" and e.value.detail == {"limit": 399}


@pytest.mark.parametrize(
    "data, start",
    [
        (b"", "image: expected a JPEG, PNG or WebP image, got empty data"),
        (b"\x89PNG\r\n\x1a\nxx", "image: expected a readable PNG image, got "),
        (b"not an image at all", "image: expected a readable JPEG/PNG image, got Unidentified"),
    ],
)
def test_decoder_failures_say_what_was_expected(data, start):
    with pytest.raises(ImageError) as e:
        decode_image(data)
    assert str(e.value).startswith(start) and "NoneType" not in str(e.value)
