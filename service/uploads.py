"""Uploaded images: size, type and pixel-count checks, then decoding. Every failure is a
``ClientError`` with the HTTP status it deserves and a message saying what was expected."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
OTHER_IMAGE_MAGIC = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


class ClientError(Exception):
    """A request error: ``status`` (4xx or 503) and a JSON-able ``detail``."""

    def __init__(self, status: int, error: str, **detail):
        super().__init__(error)
        self.status, self.detail = status, {"error": error, **detail}


@dataclass(frozen=True)
class Limits:
    """Upload limits; ``from_env`` reads ``VISION_MAX_BYTES`` and ``VISION_MAX_PIXELS``."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            int(os.environ.get("VISION_MAX_BYTES", cls.max_bytes)),
            int(os.environ.get("VISION_MAX_PIXELS", cls.max_pixels)),
        )


def sniff(data: bytes) -> str | None:
    for magic, fmt in MAGIC.items():
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_upload(data: bytes, limits: Limits, field: str = "image") -> np.ndarray:
    """Validate and decode an uploaded image to RGB uint8 (EXIF orientation applied)."""
    if not data:
        raise ClientError(
            400, f"'{field}' is empty: expected a JPEG, PNG or WebP file", field=field
        )
    if len(data) > limits.max_bytes:
        raise ClientError(
            413,
            f"'{field}' is {len(data)} bytes: the limit is {limits.max_bytes} bytes",
            field=field,
            limit=limits.max_bytes,
        )
    fmt = sniff(data)
    if fmt is None:
        other = next((f for m, f in OTHER_IMAGE_MAGIC.items() if data.startswith(m)), None)
        got = f"a {other} image" if other else "data that is not a JPEG, PNG or WebP image"
        raise ClientError(
            415,
            f"'{field}': expected image/jpeg, image/png or image/webp, got {got}",
            field=field,
            accepted=sorted(ACCEPTED.values()),
        )
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise ClientError(
                    413,
                    f"'{field}' is {w}x{h} = {w * h} pixels: the limit is "
                    f"{limits.max_pixels} pixels",
                    field=field,
                    limit=limits.max_pixels,
                )
            im.load()
            img = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(img)
    except ClientError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        raise ClientError(
            400, f"'{field}' could not be decoded as {fmt}: {type(e).__name__}: {e}", field=field
        ) from e


def parse_bool(value, name: str, default: bool) -> bool:
    """A form/query flag: true/false, 1/0, yes/no, on/off (any case); otherwise a 422."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ClientError(
        422, f"'{name}': expected true or false (or 1/0, yes/no, on/off), got {value!r}", field=name
    )


def parse_number(
    value, name: str, lo: float, hi: float, default: float, integer: bool = False
) -> float:
    """A query/form parameter as a number in ``[lo, hi]``; otherwise a 422 naming it."""
    if value is None or value == "":
        return default
    try:
        v = float(value)
        if integer and v != int(v):
            raise ValueError
        v = int(v) if integer else v
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ClientError(
            422, f"'{name}': expected {kind} in [{lo}, {hi}], got {value!r}", field=name
        ) from None
    if not lo <= v <= hi:
        raise ClientError(422, f"'{name}': expected a value in [{lo}, {hi}], got {v}", field=name)
    return v
