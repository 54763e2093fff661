"""Reading images and masks from disk with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vision.data.colormap import rgb_to_index
from vision.errors import DataError


def read_image(path: Path | str, exif: bool = True) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)``; EXIF orientation applied by default."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "an image file", "no such file")
    return decode_image(path.read_bytes(), exif, where=str(path))


def decode_image(data: bytes, exif: bool = True, where: str = "image") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 ``(H, W, 3)``; EXIF orientation applied."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if exif:
                im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(where, "a readable JPEG/PNG image", f"{type(e).__name__}: {e}") from e


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
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(str(path), "a readable PNG mask", f"{type(e).__name__}: {e}") from e
    try:
        return rgb_to_index(rgb, num_classes, ignore_index, where=str(path))
    except ValueError as e:
        raise DataError(
            str(path),
            "an index mask or an RGB mask in the VOC colour map",
            str(e).split("got ", 1)[-1],
        ) from e


def write_palette_png(mask: np.ndarray, path: Path | str) -> None:
    """Write a class-index mask as a palette PNG with the VOC colour map (as VOC ships them)."""
    from vision.data.colormap import voc_colormap

    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(voc_colormap().reshape(-1).tolist())
    im.save(path, optimize=False)
