"""Finds and validates sharp/blurry image pairs on disk: GoPro, REDS and generic paired folders.

    pairs, report = scan_gopro("datasets/GOPRO_Large", split="train", blur="blur")
    pairs[0]   # PairRecord(id='GOPR0372_07_00/000047', sharp=..., blurry=..., height=720, width=1280)

Layouts (only `*.png` files count; hidden files such as macOS's `._x.png` are ignored):
  GoPro (GOPRO_Large): root/{train,test}/<seq>/{blur,blur_gamma,sharp}/<name>.png
  REDS: root/{train,val}_{blur,sharp}/<seq>/<name>.png
  paired folders (the reference README's custom layout, also what `synthetic.write_paired_folders`
  writes): <blurry root>/<seq>/<name>.png mirrored by <sharp root>/<seq>/<name>.png.
Pairs are matched by path relative to the blurry/sharp roots; the id is that path without '.png'.

Every image is decoded once, so the report catches files that only fail past their header:
  - unmatched files (a blurry image without its sharp one, or the reverse), sharp/blurry pairs of
    different sizes and unreadable files are *bad*: the scan raises `BadPairsError` with the report
    unless `skip_bad=True`, which drops those pairs and logs the report;
  - anything other than an 8-bit RGB PNG is *converted* by `load_rgb8` (listed in the report, kept).
Images are read upright: an EXIF Orientation tag (JPEG, PNG, TIFF, WebP) is applied as Pillow's
`ImageOps.exif_transpose` applies it, and sizes are those of the upright image.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

SUFFIX = ".png"
GOPRO_SPLITS = ("train", "test")
GOPRO_BLUR_VARIANTS = ("blur", "blur_gamma")
REDS_SPLITS = ("train", "val")
REPORT_EXAMPLES = 5  # examples printed per problem; the report object keeps all of them

BLURRY_WITHOUT_SHARP = "blurry image without a sharp one"
SHARP_WITHOUT_BLURRY = "sharp image without a blurry one"
SIZE_MISMATCH = "sharp and blurry sizes differ"
UNREADABLE = "unreadable image"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
_SIXTEEN_BIT_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L")
_ORIENTATION = 0x0112  # the EXIF Orientation tag; 5-8 turn the image by 90 degrees
# Decoding releases the GIL, so threads overlap it; more than a few only fight over the disk.
_SCAN_THREADS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """One sharp/blurry pair: id '<seq>/<name>', the two files, and their common size in pixels."""

    id: str
    sharp: Path
    blurry: Path
    height: int
    width: int

    @property
    def sequence(self) -> str:
        """The id's folder part ('' for a file directly under the roots)."""
        return self.id.rpartition("/")[0]


@dataclasses.dataclass
class ScanReport:
    """What a scan found: `num_pairs` usable pairs, every bad one by problem, and conversions."""

    source: str
    num_pairs: int = 0
    problems: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    converted: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_bad(self) -> int:
        return sum(len(examples) for examples in self.problems.values())

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.num_pairs} usable pairs, {self.num_bad} problems"]
        sections = [*self.problems.items()]
        if self.converted:
            sections.append(("converted to 8-bit RGB (kept)", self.converted))
        for problem, examples in sections:
            lines.append(f"  {len(examples)} x {problem}, e.g.:")
            lines += [f"    {example}" for example in examples[:REPORT_EXAMPLES]]
        return "\n".join(lines)


class BadPairsError(ValueError):
    """A scan found bad pairs and was not allowed to skip them; `.report` has the details."""

    def __init__(self, report: ScanReport):
        super().__init__(f"{report}\nFix or remove these files, or pass skip_bad=True to drop the pairs.")
        self.report = report


# ---------------------------------------------------------------------------------------------
# Reading images
# ---------------------------------------------------------------------------------------------


def describe_image_file(image: Image.Image, path: Path) -> str | None:
    """None for an 8-bit RGB PNG without transparency (usable as is), else what the file holds."""
    if image.format != "PNG":
        return f"{image.format} data in a .png file"
    with open(path, "rb") as file:
        head = file.read(26)  # signature, IHDR length and type, width, height, bit depth, colour type
    depth, color = head[24], head[25]
    if depth == 8 and color == 2 and "transparency" not in image.info:
        return None
    alpha = " with transparency" if "transparency" in image.info else ""
    return f"{depth}-bit {_PNG_COLOR_TYPES.get(color, f'colour type {color}')}{alpha}"


def orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1-8) still to apply to an opened image; 1 (upright) without one.

    Loads the image first: a PNG may carry its eXIf chunk after the pixels, and Pillow's TIFF reader
    turns the image upright on load (and drops the tag), so only after load() does this say what
    `ImageOps.exif_transpose` will do."""
    image.load()
    try:
        value = int(image.getexif().get(_ORIENTATION, 1))
    except (TypeError, ValueError):  # a malformed tag: exif_transpose ignores it too
        return 1
    return value if 2 <= value <= 8 else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image once turned upright by its EXIF Orientation (loads it)."""
    width, height = image.size
    return (width, height) if orientation(image) in (5, 6, 7, 8) else (height, width)


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_GRAY_MODES:
        # Pillow would clip these to 255 in convert("RGB"); take the high byte as for 16-bit colour.
        gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def load_rgb8(path: str | os.PathLike) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 RGB in [0, 255], by this rule for files that are not 8-bit RGB:

    grayscale -> R = G = B; palette -> its colours; alpha (RGBA, gray+alpha, tRNS) -> dropped,
    colours kept as stored (no compositing); 16-bit samples v -> v >> 8 (the high byte, what Pillow
    gives for 16-bit colour PNGs). An EXIF Orientation turns the image upright (`ImageOps.exif_transpose`):
    a 96x64 (WxH) photo stored with orientation 6 is read as (96, 64, 3). Raises what Pillow raises for
    unreadable files.
    """
    with Image.open(path) as image:
        if orientation(image) != 1:
            ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb8(image)


def png_for_tfds(path: str | os.PathLike) -> Path | bytes:
    """The file itself if it is an 8-bit RGB PNG stored upright, else PNG bytes of `load_rgb8(path)`.

    Either form is what `tfds.features.Image` stores without TensorFlow (numpy arrays need it).
    """
    path = Path(path)
    with Image.open(path) as image:
        turn = orientation(image)
        if describe_image_file(image, path) is None and turn == 1:
            return path
        if turn != 1:
            ImageOps.exif_transpose(image, in_place=True)
        buffer = io.BytesIO()
        Image.fromarray(_to_rgb8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class _FileInfo:
    height: int = 0
    width: int = 0
    conversion: str | None = None
    error: str | None = None


def _inspect(path: Path) -> _FileInfo:
    try:
        with Image.open(path) as image:
            image.load()  # truncated or corrupt data often passes the header
            return _FileInfo(*upright_size(image), describe_image_file(image, path))
    except Exception as error:  # any decoder failure makes the file unusable, whatever its kind
        return _FileInfo(error=f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


def _images_under(root: Path) -> dict[str, Path]:
    """{relative path without suffix (posix): file} of the PNGs anywhere below root."""
    return {
        path.relative_to(root).with_suffix("").as_posix(): path
        for path in root.rglob(f"*{SUFFIX}")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    }


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist (or is not a folder)")


def match_pairs(
    blurry: dict[str, Path], sharp: dict[str, Path], source: str, skip_bad: bool = False
) -> tuple[list[PairRecord], ScanReport]:
    """Pairs up {id: file} maps, decodes every matched file, and validates (see the module doc).

    Returns the good pairs sorted by id and the report; raises BadPairsError if any pair is bad
    and not `skip_bad`, or ValueError if no good pair is left.
    """
    report = ScanReport(source)

    def bad(problem: str, example: str) -> None:
        report.problems.setdefault(problem, []).append(example)

    for key in sorted(blurry.keys() - sharp.keys()):
        bad(BLURRY_WITHOUT_SHARP, str(blurry[key]))
    for key in sorted(sharp.keys() - blurry.keys()):
        bad(SHARP_WITHOUT_BLURRY, str(sharp[key]))
    ids = sorted(blurry.keys() & sharp.keys())
    with ThreadPoolExecutor(_SCAN_THREADS) as pool:
        infos = list(pool.map(_inspect, [sharp[key] for key in ids] + [blurry[key] for key in ids]))

    pairs = []
    for key, sharp_info, blurry_info in zip(ids, infos[: len(ids)], infos[len(ids) :], strict=True):
        files = {"sharp": (sharp[key], sharp_info), "blurry": (blurry[key], blurry_info)}
        errors = [f"{path}: {info.error}" for path, info in files.values() if info.error]
        if errors:
            for error in errors:
                bad(UNREADABLE, error)
            continue
        if (sharp_info.height, sharp_info.width) != (blurry_info.height, blurry_info.width):
            bad(
                SIZE_MISMATCH,
                f"{key}: sharp {sharp_info.height}x{sharp_info.width}, "
                f"blurry {blurry_info.height}x{blurry_info.width} (HxW)",
            )
            continue
        report.converted += [f"{path} ({info.conversion})" for path, info in files.values() if info.conversion]
        pairs.append(PairRecord(key, sharp[key], blurry[key], sharp_info.height, sharp_info.width))
    report.num_pairs = len(pairs)

    if report.problems and not skip_bad:
        raise BadPairsError(report)
    if not pairs:
        raise ValueError(f"{report}\nNo usable sharp/blurry pairs of {SUFFIX} files in {source}.")
    if report.problems or report.converted:
        logger.warning("%s", report)
    return pairs, report


def scan_paired_folders(
    blurry_root: str | os.PathLike, sharp_root: str | os.PathLike, *, skip_bad: bool = False
) -> tuple[list[PairRecord], ScanReport]:
    """Pairs blurry_root/<seq>/<name>.png with sharp_root/<seq>/<name>.png (any depth)."""
    blurry_root, sharp_root = Path(blurry_root), Path(sharp_root)
    _require_dir(blurry_root, "blurry image")
    _require_dir(sharp_root, "sharp image")
    source = f"{blurry_root} vs {sharp_root}"
    return match_pairs(_images_under(blurry_root), _images_under(sharp_root), source, skip_bad)


def scan_reds(
    root: str | os.PathLike, split: str = "train", *, skip_bad: bool = False
) -> tuple[list[PairRecord], ScanReport]:
    """REDS pairs of root/<split>_blur and root/<split>_sharp; split in REDS_SPLITS."""
    if split not in REDS_SPLITS:
        raise ValueError(f"REDS split must be one of {REDS_SPLITS}, got {split!r}")
    root = Path(root)
    return scan_paired_folders(root / f"{split}_blur", root / f"{split}_sharp", skip_bad=skip_bad)


def _gopro_files(sequences: Iterable[Path], folder: str) -> dict[str, Path]:
    return {
        f"{seq.name}/{path.stem}": path
        for seq in sequences
        for path in (seq / folder).glob(f"*{SUFFIX}")
        if path.is_file() and not path.name.startswith(".")
    }


def scan_gopro(
    root: str | os.PathLike, split: str = "train", blur: str = "blur", *, skip_bad: bool = False
) -> tuple[list[PairRecord], ScanReport]:
    """GOPRO_Large pairs of root/<split>/<seq>/{<blur>,sharp}/<name>.png; ids '<seq>/<name>'.

    `blur` picks the blurry images: 'blur' (frames averaged linearly, what the reference trains on)
    or 'blur_gamma' (averaged after a gamma curve).
    """
    if split not in GOPRO_SPLITS:
        raise ValueError(f"GoPro split must be one of {GOPRO_SPLITS}, got {split!r}")
    if blur not in GOPRO_BLUR_VARIANTS:
        raise ValueError(f"GoPro blur variant must be one of {GOPRO_BLUR_VARIANTS}, got {blur!r}")
    split_dir = Path(root) / split
    _require_dir(split_dir, f"GoPro {split}")
    sequences = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    blurry, sharp = _gopro_files(sequences, blur), _gopro_files(sequences, "sharp")
    return match_pairs(blurry, sharp, f"{split_dir} ({blur} vs sharp)", skip_bad)
