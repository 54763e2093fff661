"""Client errors of the REST service: the HTTP status each mistake deserves, and request
parameters parsed with messages that say what was expected. Images are decoded by the
project's one decoder (``vision.data.io.decode_image``, through ``Predictor.prepare``) with
the upload limits; its ``ImageError`` becomes a ``ClientError`` here."""

from __future__ import annotations

import math

from vision.data.io import DecodeLimits, ImageError

Limits = DecodeLimits  # the upload limits: VISION_MAX_BYTES, VISION_MAX_PIXELS

# HTTP status of each ImageError reason
STATUS = {"empty": 400, "corrupt": 400, "too_large": 413, "unsupported": 415, "unusable": 422}


class ClientError(Exception):
    """A request error: ``status`` (4xx or 503) and a JSON-able ``detail``."""

    def __init__(self, status: int, error: str, **detail):
        super().__init__(error)
        self.status, self.detail = status, {"error": error, **detail}


def image_error(e: ImageError, field: str = "image") -> ClientError:
    """The client error of an image that could not be used."""
    return ClientError(
        STATUS.get(e.reason, 400),
        f"'{field}': expected {e.expected}, got {e.got}",
        field=field,
        **e.detail,
    )


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
    """A query/form parameter as a finite number in ``[lo, hi]``; otherwise a 422 naming it."""
    if value is None or value == "":
        return default
    kind = "an integer" if integer else "a number"
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if not math.isfinite(v) or (integer and v != math.floor(v)):
        raise ClientError(
            422, f"'{name}': expected {kind} in [{lo}, {hi}], got {str(value)[:40]!r}", field=name
        )
    if not lo <= v <= hi:
        raise ClientError(
            422, f"'{name}': expected {kind} in [{lo}, {hi}], got {str(value)[:40]}", field=name
        )
    return int(v) if integer else v
