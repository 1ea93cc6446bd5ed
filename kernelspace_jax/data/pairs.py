"""Pair sources read as float images: a record {"sharp", "blurry", "id"} -> (H, W, 3) float32 in [0, 1],
centre-cropped, batched in order with padding (what the kernel bank and evaluation read)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kernelspace_jax.data.paired_folders import load_rgb8, scan_paired_folders

PAIR_SPECS = ("synthetic", "tfds", "folders")  # the <kind> of a '<kind>:...' pair spec (see `open_pairs`)


class FolderPairs:
    """Random-access pairs of a paired-folder layout: blurry_root/<seq>/<name>.png vs sharp_root/..."""

    def __init__(self, blurry_root: str | os.PathLike, sharp_root: str | os.PathLike):
        self.records, _ = scan_paired_folders(blurry_root, sharp_root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {"sharp": load_rgb8(record.sharp), "blurry": load_rgb8(record.blurry), "id": record.id}


def open_pairs(spec: str, *, data_dir: str, num: int, seed: int, crop: int | None = None, flag: str = "pairs"):
    """Random-access pairs {"sharp", "blurry", "id"} (H, W, 3) for a pair spec, one of
    synthetic[:<split>] | tfds:<name>:<split> | folders:<blurry root>:<sharp root> | a folder with blur/ and sharp/.

    synthetic: `num` pairs of the split (default test) seeded by `seed`, generated at crop x crop (default:
    SyntheticBlurConfig's crop_size); tfds: a data source built in `data_dir`. Errors name `flag`.
    """
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        from kernelspace_jax.data import synthetic

        split = rest or "test"
        if split not in synthetic.SPLITS:
            raise ValueError(f"{flag}: synthetic split must be one of {synthetic.SPLITS}, got {split!r}")
        if num < 1:
            raise ValueError(f"{flag}: need at least 1 synthetic pair, got num={num}")
        size = {} if crop is None else {"crop_size": crop}
        return synthetic.SyntheticPairs(synthetic.SyntheticBlurConfig(**size, seed=seed), split, num)
    if kind == "tfds":
        from kernelspace_jax.data import tfds_builders

        name, _, split = rest.rpartition(":")
        return tfds_builders.data_source(name, split, data_dir)
    if kind == "folders":
        blurry, _, sharp = rest.partition(":")
        return FolderPairs(blurry, sharp)
    root = Path(spec)
    if root.is_dir():
        if (root / "blur").is_dir() and (root / "sharp").is_dir():
            return FolderPairs(root / "blur", root / "sharp")
        raise FileNotFoundError(f"{flag}: {spec} has no blur/ and sharp/ folders (a paired-folder root)")
    raise ValueError(
        f"{flag} must be synthetic[:<split>], tfds:<name>:<split>, folders:<blurry>:<sharp> or a folder with "
        f"blur/ and sharp/; got {spec!r}"
    )


def _record_id(record: dict[str, Any], index: int) -> str:
    value = record.get("id", index)
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _as_float(image: Any, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    raise TypeError(f"{what}: images must be uint8 or floating, got {image.dtype}")


def center_crop(image: np.ndarray, crop: int | None, what: str) -> np.ndarray:
    """The centred crop x crop window of (H, W, C) (the image itself for crop=None)."""
    if crop is None:
        return image
    height, width = image.shape[:2]
    if min(height, width) < crop:
        raise ValueError(f"{what}: image {height}x{width} is smaller than the crop {crop}x{crop}")
    top, left = (height - crop) // 2, (width - crop) // 2
    return image[top : top + crop, left : left + crop]


def read_pair(source: Sequence[dict[str, Any]], index: int, crop: int | None) -> dict[str, Any]:
    """Record `index` of a pair source as dict(sharp, blurry (H, W, 3) float32 in [0, 1], id str)."""
    record = source[index]
    record_id = _record_id(record, index)
    what = f"pair {index} ({record_id})"
    sharp, blurry = (_as_float(record[k], what) for k in ("sharp", "blurry"))
    if sharp.shape != blurry.shape or sharp.ndim != 3:
        raise ValueError(f"{what}: sharp {sharp.shape} and blurry {blurry.shape} must be one (H, W, 3) shape")
    return {
        "sharp": center_crop(sharp, crop, what),
        "blurry": center_crop(blurry, crop, what),
        "id": record_id,
    }


def pair_batches(
    source: Sequence[dict[str, Any]], batch_size: int, crop: int | None = None, threads: int = 4
) -> Iterator[dict[str, Any]]:
    """Batches of a pair source in order: dict(sharp, blurry (B, H, W, 3), ids [str], index (B,), valid (B,)).

    Every batch has batch_size rows (the last is padded with copies of its last record, valid False),
    so a jitted function compiles once. Records are read in threads (image decoding releases the GIL).
    """
    if len(source) == 0:
        raise ValueError("the pair source is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(source), batch_size):
            indices = list(range(start, min(start + batch_size, len(source))))
            records = list(pool.map(lambda i: read_pair(source, i, crop), indices))
            shapes = {r["sharp"].shape for r in records}
            if len(shapes) > 1:
                raise ValueError(
                    f"pairs {indices[0]}..{indices[-1]} have different sizes {sorted(shapes)}; pass a crop "
                    "(--crop) or batch_size=1"
                )
            valid = [True] * len(records) + [False] * (batch_size - len(records))
            records += [records[-1]] * (batch_size - len(records))
            yield {
                "sharp": np.stack([r["sharp"] for r in records]),
                "blurry": np.stack([r["blurry"] for r in records]),
                "ids": [r["id"] for r in records],
                "index": np.asarray(indices + [indices[-1]] * (batch_size - len(indices)), np.int32),
                "valid": np.asarray(valid),
            }
