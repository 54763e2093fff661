"""Masks on disk: the VOC colour map, RGB masks to class indices and back, palette PNGs, and the
errors that name the file and the first bad pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vision.data.colormap import VOID_RGB, index_to_rgb, mask_colors, rgb_to_index, voc_colormap
from vision.data.io import read_mask, write_palette_png
from vision.errors import DataError

# the VOC devkit's colours of the first classes (background, aeroplane, bicycle, bird, ...)
VOC_FIRST = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)]


def test_voc_colormap_is_the_devkits():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    assert [tuple(int(v) for v in c) for c in cmap[:6]] == VOC_FIRST
    assert tuple(int(v) for v in cmap[255]) == VOID_RGB == (224, 224, 192)


def test_rgb_to_index_maps_every_class_and_void():
    idx = np.array([[0, 1, 2, 3], [4, 5, 20, 255]], np.uint8)
    rgb = index_to_rgb(idx)
    assert rgb.shape == (2, 4, 3) and tuple(rgb[1, 3]) == VOID_RGB
    got = rgb_to_index(rgb)  # the defaults: 256 classes, void -> 255
    assert got.dtype == np.uint8 and np.array_equal(got, idx)
    got = rgb_to_index(rgb, num_classes=21, ignore_index=200)
    assert got.tolist() == [[0, 1, 2, 3], [4, 5, 20, 200]]
    assert index_to_rgb(np.array([[7, 9]]), ignore_index=9).tolist() == [
        [list(voc_colormap()[7]), list(VOID_RGB)]
    ]


def test_rgb_to_index_names_the_first_colour_outside_the_map():
    rgb = index_to_rgb(np.zeros((3, 5), np.uint8))
    rgb[1, 3] = (255, 255, 255)  # above every colour of the map
    rgb[2, 0] = (1, 2, 3)
    with pytest.raises(ValueError) as e:
        rgb_to_index(rgb, num_classes=21)
    assert str(e.value) == (
        "mask: expected colours of the VOC colour map (21 classes or void (224, 224, 192)), "
        "got (255, 255, 255) at pixel (x=3, y=1)"
    )
    rgb[1, 3] = 0  # a class colour beyond num_classes is outside the map too
    rgb[0, 1] = voc_colormap()[21]
    with pytest.raises(ValueError, match=r"^m\.png: .* got \(128, 64, 128\) at pixel \(x=1, y=0\)"):
        rgb_to_index(rgb, num_classes=21, where="m.png")


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 4), (4, 5, 1)])
def test_rgb_to_index_wants_three_channels(shape):
    with pytest.raises(ValueError) as e:
        rgb_to_index(np.zeros(shape, np.uint8))
    assert str(e.value) == f"mask: expected an RGB mask (H, W, 3), got shape {shape}"


def test_mask_colors_from_the_dataset_or_the_voc_map():
    assert mask_colors(3) == VOC_FIRST[:3]
    assert mask_colors(2, [[1, 2, 3], (4, 5, 6)]) == [(1, 2, 3), (4, 5, 6)]
    with pytest.raises(ValueError, match="expected 3 RGB triples, got 2"):
        mask_colors(3, [[1, 2, 3], [4, 5, 6]])


def test_palette_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 2], [20, 255, 7]], np.int64)
    path = tmp_path / "m.png"
    write_palette_png(mask, path)
    with Image.open(path) as im:
        assert im.mode == "P"
        palette = np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)
        assert palette.shape == (256, 3) and np.array_equal(palette, voc_colormap())
        assert np.array_equal(np.asarray(im), mask)
    got = read_mask(path)
    assert got.dtype == np.uint8 and np.array_equal(got, mask)
    # the same mask saved as RGB reads back to the same indices
    Image.fromarray(index_to_rgb(mask.astype(np.uint8))).save(tmp_path / "rgb.png")
    assert np.array_equal(read_mask(tmp_path / "rgb.png", 21, 255), mask)


def test_read_mask_grey_16_bit_and_errors(tmp_path):
    Image.fromarray(np.array([[0, 3], [255, 1]], np.uint8), mode="L").save(tmp_path / "l.png")
    assert read_mask(tmp_path / "l.png").tolist() == [[0, 3], [255, 1]]
    Image.fromarray(np.array([[0, 3], [255, 1]], np.uint16)).save(tmp_path / "i16.png")
    got = read_mask(tmp_path / "i16.png")
    assert got.dtype == np.uint8 and got.tolist() == [[0, 3], [255, 1]]
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "big.png")
    assert str(e.value) == f"{tmp_path / 'big.png'}: expected mask values <= 255, got max 300"
    with pytest.raises(DataError, match=r"missing\.png: expected a mask PNG, got no such file"):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"bad\.png: expected a readable PNG mask, got \w+Error"):
        read_mask(tmp_path / "bad.png")
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[1, 2] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "rgb.png", 21)
    assert str(e.value) == (
        f"{tmp_path / 'rgb.png'}: expected an index mask or an RGB mask in the VOC colour map, "
        "got (9, 9, 9) at pixel (x=2, y=1)"
    )


def test_read_mask_keeps_indices_of_any_palette_and_wide_integer_masks(tmp_path):
    p = Image.fromarray(np.array([[0, 1, 2]], np.uint8), mode="L").convert("P")
    p.putpalette([255, 255, 255, 9, 9, 9, 200, 0, 0] + [0] * 759)  # not the VOC colours
    p.save(tmp_path / "p.png")
    m = read_mask(tmp_path / "p.png", 3)
    assert m.tolist() == [[0, 1, 2]] and m.flags.writeable  # an array of its own
    Image.fromarray(np.array([[0, 5, 255]], np.int32)).save(tmp_path / "i32.tif")  # mode "I"
    assert read_mask(tmp_path / "i32.tif").tolist() == [[0, 5, 255]]
    Image.fromarray(np.array([[0, 256]], np.uint16)).save(tmp_path / "i16.png")
    with pytest.raises(DataError, match="expected mask values <= 255, got max 256"):
        read_mask(tmp_path / "i16.png")


def test_read_mask_rgba_void_index_and_a_folder_named_got(tmp_path):
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1], rgb[0, 2] = voc_colormap()[2], VOID_RGB
    alpha = np.full((1, 3, 1), 255, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], 2), mode="RGBA").save(tmp_path / "a.png")
    assert read_mask(tmp_path / "a.png", 3).tolist() == [[0, 2, 255]]
    assert read_mask(tmp_path / "a.png", 3, ignore_index=7).tolist() == [[0, 2, 7]]
    (tmp_path / "i got it").mkdir()
    rgb[0, 0] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "i got it/b.png")
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "i got it/b.png", 3)
    assert str(e.value) == (
        f"{tmp_path / 'i got it/b.png'}: expected an index mask or an RGB mask in the VOC colour "
        "map, got (9, 9, 9) at pixel (x=0, y=0)"
    )
