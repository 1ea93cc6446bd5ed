"""Images are read upright: an EXIF Orientation tag is applied as Pillow's ImageOps.exif_transpose applies
it, by read_image, inspect_image's size, load_rgb8 (the training data) and the paired-folder scan."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from kernelspace_jax.data import paired_folders
from kernelspace_jax.io.images import inspect_image, read_image

# (format, suffix, save options): lossless where the format allows, so pixels compare exactly
FORMATS = [
    ("PNG", ".png", {}),
    ("JPEG", ".jpg", {"quality": 95}),
    ("TIFF", ".tif", {}),
    ("WEBP", ".webp", {"lossless": True}),
]


def stored(height=64, width=96):
    """A (height, width) picture, black with a red 16x16 block at the top-left corner."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:16, :16] = (255, 0, 0)
    return pixels


def save_oriented(path, pixels, fmt, options, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format=fmt, exif=exif, **options)


@pytest.mark.parametrize(("fmt", "suffix", "options"), FORMATS, ids=[f[0] for f in FORMATS])
def test_orientation_6_is_read_upright_everywhere(tmp_path, fmt, suffix, options):
    path = tmp_path / f"photo{suffix}"
    save_oriented(path, stored(), fmt, options, 6)  # stored 96x64 (WxH), to be turned 90 degrees clockwise
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert expected.shape == (96, 64, 3)

    pixels = paired_folders.load_rgb8(path)
    assert pixels.shape == (96, 64, 3)
    np.testing.assert_array_equal(pixels, expected)
    # The red corner went from the top-left to the top-right.
    assert pixels[2, -3, 0] > 200 and pixels[2, -3, 1:].max() < 60
    assert pixels[2, 2].max() < 60
    assert read_image(path).shape == (96, 64, 3)
    np.testing.assert_allclose(read_image(path), expected / 255.0, atol=1e-6)

    inspected = inspect_image("photo", path, min_side=32, max_pixels=10**6)
    assert (inspected.height, inspected.width) == (96, 64)


@pytest.mark.parametrize("orientation", [1, 3, 8])
def test_other_orientations_match_exif_transpose(tmp_path, orientation):
    path = tmp_path / "photo.png"
    save_oriented(path, stored(), "PNG", {}, orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(paired_folders.load_rgb8(path), expected)
    inspected = inspect_image("photo", path, min_side=32, max_pixels=10**6)
    assert (inspected.height, inspected.width) == expected.shape[:2]


def test_sixteen_bit_gray_is_turned_upright_too(tmp_path):
    path = tmp_path / "gray16.png"
    gray = np.zeros((64, 96), np.uint16)
    gray[:16, :16] = 65535
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gray).save(path, exif=exif)
    pixels = paired_folders.load_rgb8(path)
    assert pixels.shape == (96, 64, 3) and pixels[2, -3, 0] == 255 and pixels[2, 2, 0] == 0


def test_paired_folders_compare_upright_sizes_and_store_upright_pixels(tmp_path):
    """A sharp image stored sideways with orientation 6 pairs with its upright blurry image, and what
    TFDS would store for it is the upright picture, not the file as stored."""
    upright = stored(96, 64)
    (tmp_path / "blur").mkdir()
    (tmp_path / "sharp").mkdir()
    Image.fromarray(upright).save(tmp_path / "blur" / "a.png")
    save_oriented(tmp_path / "sharp" / "a.png", np.ascontiguousarray(np.rot90(upright, 1)), "PNG", {}, 6)
    pairs, report = paired_folders.scan_paired_folders(tmp_path / "blur", tmp_path / "sharp")
    assert report.num_bad == 0 and [(p.height, p.width) for p in pairs] == [(96, 64)]
    np.testing.assert_array_equal(paired_folders.load_rgb8(pairs[0].sharp), upright)

    stored_for_tfds = paired_folders.png_for_tfds(pairs[0].sharp)
    assert isinstance(stored_for_tfds, bytes)  # re-encoded upright, not the sideways file
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored_for_tfds))), upright)
    assert paired_folders.png_for_tfds(pairs[0].blurry) == pairs[0].blurry  # upright 8-bit RGB: as is
