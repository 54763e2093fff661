"""Reading images and masks, with errors that name the file or field.

``decode_image`` is the one image decoder of the project: dataset readers, the predictor, the
FPS protocol and the REST service all call it (the service with upload limits). It turns
images as people send them into RGB uint8:

- EXIF orientations 1-8 are applied, so pixels (and boxes) are in the orientation the user
  sees; malformed EXIF is a decoding error, not a crash;
- 16-bit greyscale is scaled to 8 bits (``v * 255 / 65535``, rounded), not clipped;
- CMYK JPEG is converted to RGB;
- transparency (RGBA, LA, palette with a transparent index) is composited on ``BACKGROUND``
  (white, as the image shows on a page);
- animated PNG/WebP/GIF: the first frame.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vision.data.colormap import rgb_to_index, voc_colormap
from vision.errors import DataError

BACKGROUND = (255, 255, 255)
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
_OTHER_MAGIC = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


class ImageError(DataError):
    """An image that cannot be used; ``reason`` is one of ``empty``, ``too_large``,
    ``unsupported``, ``corrupt``, ``unusable`` (the service maps it to an HTTP status)."""

    def __init__(self, reason: str, where: str, expected: str, got: str, **detail):
        super().__init__(where, expected, got)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may be: encoded bytes, decoded pixels, and which formats.
    ``from_env`` reads ``VISION_MAX_BYTES`` and ``VISION_MAX_PIXELS``."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = tuple(FORMATS)

    @classmethod
    def from_env(cls) -> DecodeLimits:
        return cls(
            int(os.environ.get("VISION_MAX_BYTES", cls.max_bytes)),
            int(os.environ.get("VISION_MAX_PIXELS", cls.max_pixels)),
        )


def sniff(data: bytes) -> str | None:
    """The image format from the first bytes: JPEG, PNG, WEBP, GIF, BMP, TIFF or None."""
    for magic, fmt in {**_MAGIC, **_OTHER_MAGIC}.items():
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def read_image(path: Path | str, exif: bool = True) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)``; EXIF orientation applied by default."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "an image file", "no such file")
    return decode_image(path.read_bytes(), exif=exif, where=str(path))


def decode_image(
    data: bytes,
    limits: DecodeLimits | None = None,
    where: str = "image",
    exif: bool = True,
) -> np.ndarray:
    """Encoded bytes → RGB uint8 ``(H, W, 3)``. With ``limits`` (uploads) the size, the
    pixel count and the format are checked first; every failure is an ``ImageError``."""
    if not data:
        raise ImageError("empty", where, "a JPEG, PNG or WebP image", "empty data")
    fmt = sniff(data)
    if limits is not None:
        _check_upload(data, fmt, limits, where)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size  # read from the header: nothing is decoded yet
            if limits is not None and w * h > limits.max_pixels:
                raise ImageError(
                    "too_large",
                    where,
                    f"at most {limits.max_pixels} pixels",
                    f"{w}x{h} = {w * h} pixels",
                    limit=limits.max_pixels,
                )
            im.seek(0)  # animations: the first frame
            im.load()
            if exif:
                im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is the data's fault
        # PIL names the buffer it read (``<_io.BytesIO object at 0x...>``): not the user's
        message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))
        raise ImageError(
            "corrupt",
            where,
            f"a readable {fmt or 'JPEG/PNG'} image",
            f"{type(e).__name__}: {message}",
        ) from e


def _check_upload(data: bytes, fmt: str | None, limits: DecodeLimits, where: str) -> None:
    if len(data) > limits.max_bytes:
        raise ImageError(
            "too_large",
            where,
            f"at most {limits.max_bytes} bytes",
            f"{len(data)} bytes",
            limit=limits.max_bytes,
        )
    if fmt not in limits.formats:
        got = f"a {fmt} image" if fmt else "data that is not a JPEG, PNG or WebP image"
        accepted = sorted(FORMATS[f] for f in limits.formats)
        raise ImageError("unsupported", where, " or ".join(accepted), got, accepted=accepted)


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode → RGB uint8 (see the module notes)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" else 1.0
        grey = np.clip(np.rint(a * 255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if "transparency" in im.info:  # a palette, grey or RGB colour key (PNG tRNS, GIF)
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (*BACKGROUND, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def read_mask(path: Path | str, num_classes: int = 256, ignore_index: int = 255) -> np.ndarray:
    """Read a class-index mask: palette ('P') or grey PNG as indices, RGB via the VOC colour map."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "a mask PNG", "no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                return np.asarray(im).astype(np.uint8, copy=True)
            if im.mode in ("I", "I;16"):
                arr = np.asarray(im)
                if arr.max() > 255:
                    raise DataError(str(path), "mask values <= 255", f"max {arr.max()}")
                return arr.astype(np.uint8)
            rgb = np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure names the file
        raise DataError(str(path), "a readable PNG mask", f"{type(e).__name__}: {e}") from e
    try:
        return rgb_to_index(rgb, num_classes, ignore_index, where=str(path))
    except ValueError as e:
        raise DataError(
            str(path),
            "an index mask or an RGB mask in the VOC colour map",
            str(e).rsplit("got ", 1)[-1],  # (the path may hold "got " too)
        ) from e


def check_labels(
    mask: np.ndarray,
    num_indices: int,
    where: str,
    ignore: int = 255,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """``mask`` as it is when every value is an index below ``num_indices`` or ``ignore``;
    otherwise a ``DataError`` at ``where`` listing the other values (a class list shorter than
    the masks' would otherwise fail deep in the loss, or be scored as nothing). ``counts``: the
    mask's value histogram when the caller has it already."""
    counts = np.bincount(mask.ravel(), minlength=256) if counts is None else counts.copy()
    counts[:num_indices] = 0
    counts[ignore] = 0
    bad = np.flatnonzero(counts)
    if bad.size:
        raise DataError(where, f"values 0..{num_indices - 1} or {ignore}", str(bad.tolist()))
    return mask


def write_palette_png(mask: np.ndarray, path: Path | str) -> None:
    """Write a class-index mask as a palette PNG with the VOC colour map (as VOC ships them)."""
    im = Image.fromarray(mask.astype(np.uint8))  # putpalette makes the "L" image a "P" one
    im.putpalette(voc_colormap().reshape(-1).tolist())
    im.save(path)
