"""Image files for deblur.py: finding inputs, reading them as RGB floats, writing PNGs atomically.

Inputs are files, folders (searched recursively for IMAGE_SUFFIXES, hidden files skipped) or glob
patterns. An image's *name* is its path relative to the folder it was found in, without the suffix
(for a file or a glob match: its stem); outputs are written under that name.

Reading converts what is not 8-bit RGB by `data.paired_folders.load_rgb8`'s rule and says so:
grayscale -> R = G = B, palette -> its colours, alpha (RGBA, gray+alpha, PNG transparency) dropped
(colours as stored), 16-bit samples v -> v >> 8. Images are read upright: an EXIF Orientation tag is
applied as Pillow's `ImageOps.exif_transpose` applies it, and `inspect_image` reports the upright size.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from kernelspace_jax.data.paired_folders import describe_image_file, load_rgb8, upright_size
from kernelspace_jax.io.files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageInputError(ValueError):
    """An input image cannot be used (unreadable, too small, too large); the message names the file."""


@dataclasses.dataclass(frozen=True)
class InputImage:
    """One input: its output name, file, size in pixels, and how it is converted (None: 8-bit RGB)."""

    name: str
    path: Path
    height: int
    width: int
    conversion: str | None = None


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, file) of every image the specs (files, folders, globs) name, sorted by name.

    Raises FileNotFoundError for a spec that matches nothing and ValueError for two files that would
    get the same name (e.g. a.png and a.jpg).
    """
    found: dict[str, list[Path]] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
            named = [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]
        elif path.is_file():
            named = [(path.stem, path)]
        else:
            files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if _is_image(Path(p)))
            if not files:
                raise FileNotFoundError(f"{spec!r} is not a file or folder and matches no image")
            named = [(p.stem, p) for p in files]
        for name, file in named:
            found.setdefault(name, [])
            if file.resolve() not in [f.resolve() for f in found[name]]:
                found[name].append(file)
    clashes = {name: files for name, files in found.items() if len(files) > 1}
    if clashes:
        example = "; ".join(f"{name}: {', '.join(map(str, files))}" for name, files in list(clashes.items())[:5])
        raise ValueError(
            f"{len(clashes)} output names would be shared by several inputs ({example}); "
            "rename them or deblur them separately"
        )
    return sorted((name, files[0]) for name, files in found.items())


def _describe(image: Image.Image, path: Path) -> str | None:
    """None for 8-bit RGB without transparency, else what the file holds (e.g. '16-bit RGBA')."""
    if image.format == "PNG":
        return describe_image_file(image, path)
    return None if image.mode == "RGB" else f"{image.format} mode {image.mode}"


def inspect_image(name: str, path: str | os.PathLike, *, min_side: int, max_pixels: int) -> InputImage:
    """Checks `path` and its size: min_side <= both sides, H * W <= max_pixels, then decodes it once
    (pixels not kept), so that a file broken past its header (a truncated PNG) is found before any work.

    The size is the upright one (EXIF Orientation applied). Raises ImageInputError naming the file and
    what is wrong.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size  # the sides' product and minimum do not depend on the orientation
            conversion = _describe(image, path)
            if min(height, width) < min_side:
                raise ImageInputError(
                    f"{path} is {width}x{height} (WxH); both sides must be at least {min_side} pixels"
                )
            if height * width > max_pixels:  # checked before decoding: a huge file is refused unread
                raise ImageInputError(
                    f"{path} is {width}x{height} (WxH), {height * width / 1e6:.1f} Mpx, above max_pixels "
                    f"{max_pixels / 1e6:.1f} Mpx. Raise --config.max_pixels if the device has the memory "
                    "(see docs/deblurring.md#memory), or downscale the image"
                )
            height, width = upright_size(image)  # decodes the whole file
    except ImageInputError:
        raise
    except Exception as error:  # Pillow raises many kinds for a broken or foreign file
        raise ImageInputError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from error
    return InputImage(name, path, height, width, conversion)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1], converted as the module docstring says; ImageInputError if broken."""
    try:
        return load_rgb8(path).astype(np.float32) / 255.0
    except Exception as error:
        raise ImageInputError(f"{path}: cannot decode the image ({type(error).__name__}: {error})") from error


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8, rounded and clipped; same shape."""
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(rows: list[tuple[np.ndarray, ...]], gap: int = 4) -> np.ndarray:
    """Rows of equally sized (H, W, 3) images in [0, 1] side by side -> one uint8 picture."""
    height, width = rows[0][0].shape[:2]
    columns = len(rows[0])
    canvas = np.ones((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), np.float32)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            canvas[top : top + height, left : left + width] = np.clip(np.asarray(image, np.float32), 0, 1)
    return to_uint8(canvas)


def write_png(path: str | os.PathLike, image: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """Writes uint8 (H, W, 3) as a PNG with `text` chunks, atomically (`atomic_write`)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, str(value))
    with atomic_write(path) as file:
        Image.fromarray(image).save(file, format="PNG", pnginfo=info)


def png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG written by `write_png`."""
    with Image.open(path) as image:
        return dict(getattr(image, "text", {}))
