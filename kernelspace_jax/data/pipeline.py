"""grain input pipelines of sharp/blurry pairs: augmented training crops and deterministic eval batches.

    source = SyntheticPairs(SyntheticBlurConfig(crop_size=(320, 320)), "train", num=1000)
    # or tfds.data_source("gopro", split="train"): records with uint8 'sharp'/'blurry' of any size
    train = make_train_iterator(source, crop_size=256, batch_size=16, seed=0)
    batch = next(train)   # dict(sharp=(16, 256, 256, 3) float32 in [0, 1], blurry=..., index=(16,) int32)
    for batch in make_eval_batches(test_source, batch_size=4):
        ...               # + valid=(4,) bool: False on the padding of the last batch

A source is anything with `__len__` and `__getitem__(i) -> dict` holding 'sharp' and 'blurry',
(H, W, C) arrays of one shape: uint8 (scaled by 1/255) or floating (cast to float32, values kept).
Other keys ('kernel', 'id', ...) are dropped. Images smaller than the crop raise a ValueError naming
the record rather than being padded: padding would feed the networks borders that no real blurry
photograph has, and the reference (GOPRO_dataset.py) never meets such images.

Training follows the reference (data/GOPRO_dataset.py, data/util.py::augment): one random crop at
the same place in both images, then independently with probability 1/2 each a horizontal flip, a
vertical flip and a transpose (the last two are its "rotation"; together the 8 symmetries of the
square), applied identically to sharp and blurry.

The training iterator is a `grain.DatasetIterator`: `get_state()` / `set_state()` take a small
JSON-able dict ({'next_index': n}, the next batch, without worker processes), and in an Orbax
checkpoint it is saved with `grain.checkpoint.CheckpointSave` and restored in place with
`grain.checkpoint.CheckpointRestore` (one JSON file per process):

    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state), data=grain.checkpoint.CheckpointSave(train)))
    manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(train)))

A restored iterator yields exactly the batches the uninterrupted one would have, provided the
pipeline is rebuilt with the same source and arguments (the state records a position, not them).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import grain
import jax
import numpy as np
from absl import flags


class PairSource(Protocol):
    """Random-access records with 'sharp' and 'blurry' (H, W, C) images (e.g. a TFDS data source)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def _crop_hw(crop_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"crop_size must be a positive int or (height, width), got {crop_size}")
    return int(hw[0]), int(hw[1])


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    # Resolved at call time: reading jax.process_index() at import would initialise the backend.
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {index}, {count}")
    return index, count


def _name(index: int, record: dict[str, Any]) -> str:
    """'record 17' or, for TFDS records, "record 17 (id 'GOPR0372_07_00/000047')"."""
    record_id = record.get("id")
    if isinstance(record_id, bytes):
        record_id = record_id.decode(errors="replace")
    return f"record {index}" + (f" (id {record_id!r})" if record_id is not None else "")


def _images(index: int, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The record's sharp and blurry images as arrays (H, W, C) of one shape, dtype unchanged."""
    try:
        sharp, blurry = np.asarray(record["sharp"]), np.asarray(record["blurry"])
    except KeyError as e:
        raise KeyError(f"{_name(index, record)} has no {e}; keys: {sorted(record)}") from None
    if sharp.ndim != 3 or sharp.shape != blurry.shape:
        raise ValueError(
            f"{_name(index, record)}: sharp and blurry must be (H, W, C) of one shape, "
            f"got {sharp.shape} and {blurry.shape}"
        )
    return sharp, blurry


def _to_float(image: np.ndarray, index: int, record: dict[str, Any]) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    raise TypeError(f"{_name(index, record)}: images must be uint8 or floating, got {image.dtype}")


def _check_fits(shape: tuple[int, ...], crop: tuple[int, int], index: int, record: dict[str, Any]):
    if shape[0] < crop[0] or shape[1] < crop[1]:
        raise ValueError(
            f"{_name(index, record)}: image {shape[0]}x{shape[1]} is smaller than the crop "
            f"{crop[0]}x{crop[1]}; use a smaller crop_size or drop the record from the source"
        )


@dataclasses.dataclass(frozen=True)
class _WithIndex:
    """(position, record) -> (record's index in the source, record)."""

    num_records: int

    def __call__(self, position: int, record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # After `repeat`, positions run past the end (epoch * num_records + index).
        return position % self.num_records, record


@dataclasses.dataclass(frozen=True)
class _RandomCropAugment:
    """(index, record) -> dict(sharp, blurry (h, w, C) float32, index int32 scalar), as the reference.

    A module-level class rather than a closure so that grain can pickle it into worker processes.
    """

    crop: tuple[int, int]
    flips: bool
    rotations: bool

    def __call__(self, element: tuple[int, dict[str, Any]], rng: np.random.Generator) -> dict[str, Any]:
        index, record = element
        sharp, blurry = _images(index, record)
        _check_fits(sharp.shape, self.crop, index, record)
        (h, w), (height, width) = self.crop, sharp.shape[:2]
        top = rng.integers(height - h + 1)
        left = rng.integers(width - w + 1)
        # Always draw all three so one record's stream does not depend on the options.
        hflip, vflip, transpose = rng.uniform(size=3) < 0.5
        out = {}
        # Cropping before the float conversion converts 256x256, not the whole 720x1280 frame.
        for key, image in (("sharp", sharp), ("blurry", blurry)):
            image = image[top : top + h, left : left + w]
            if self.flips and hflip:
                image = image[:, ::-1]
            if self.rotations and vflip:
                image = image[::-1]
            if self.rotations and transpose:
                image = image.transpose(1, 0, 2)
            out[key] = _to_float(image, index, record)
        out["index"] = np.int32(index)
        return out


_PARENT_POLL_S = 0.5


def _exit_when_orphaned(parent_pid: int) -> None:
    """Ends this process as soon as `parent_pid` is no longer its parent (the parent died and the
    process was handed to init or a subreaper)."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _leave_stop_signals_to_main(worker_index: int, worker_count: int) -> None:
    """In a data worker: ignore Ctrl-C and SIGTERM sent to the whole process group (a terminal, a job
    scheduler), so that the trainer, which saves a checkpoint on them, still has its workers; grain
    ends them with SIGKILL when the iterator closes.

    Since the worker ignores both, it would outlive a trainer killed with SIGKILL (holding its memory,
    and keeping multiprocessing's resource tracker, which unlinks the workers' shared memory once no
    process holds its pipe, alive too): a daemon thread ends it within `_PARENT_POLL_S` of the
    trainer's death. grain starts workers with the 'spawn' method from helper threads, so their
    parent is the trainer process (PR_SET_PDEATHSIG would fire when that helper thread ends instead).
    """
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The pid the trainer recorded when it made the worker: os.getppid() here could already be
    # init's if the trainer died while this worker was starting.
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None and parent.pid is not None else os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="exit-with-trainer", daemon=True).start()


def make_train_iterator(
    source: PairSource,
    *,
    crop_size: int | Sequence[int],
    batch_size: int,
    seed: int,
    flips: bool = True,
    rotations: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch_batches: int = 4,
    worker_count: int = 0,
) -> grain.DatasetIterator:
    """Shuffled, augmented training batches of this host's shard; a checkpointable iterator.

    Yields dict(sharp=(B, h, w, C) float32, blurry=(B, h, w, C) float32, index=(B,) int32), where
    B = batch_size, (h, w) = crop_size, values in [0, 1] for uint8 sources (float sources keep
    theirs) and `index` is each crop's record in `source` (for debugging; a train step can ignore it).

    Every epoch, all hosts draw one permutation of the records (from `seed` and the epoch number)
    and host `shard_index` takes every `shard_count`-th record of it, so the hosts' shards
    partition the epoch; the len(source) % shard_count records at the end of the permutation are
    left out so that all hosts hold the same number of records, and each host drops its last
    partial batch, so all hosts run the same number of steps. Batches never straddle epochs: an
    epoch has (len(source) // shard_count) // batch_size batches per host. Crops and flips are
    drawn per (seed, epoch, position in the permutation), so a run is the same every time, and
    the hosts' crops are not correlated. `num_epochs=None` repeats forever.

    shard_index / shard_count default to jax.process_index() / jax.process_count().
    `num_threads` threads assemble batches and keep up to `prefetch_batches` ready;
    `worker_count` > 0 builds them in that many processes instead (grain's mp_prefetch; source
    and records must then be picklable). The batches do not depend on either setting, but the
    saved state does: restore into an iterator built with the same `worker_count`.
    """
    crop = _crop_hw(crop_size)
    if rotations and crop[0] != crop[1]:
        raise ValueError(f"rotations transpose the crop, so it must be square; got {crop[0]}x{crop[1]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    shard_index, shard_count = _shard(shard_index, shard_count)
    per_shard = len(source) // shard_count
    if per_shard < batch_size:
        raise ValueError(
            f"{len(source)} records over {shard_count} shard(s) give {per_shard} per shard, "
            f"fewer than batch_size={batch_size}: not one full batch per epoch"
        )

    ds = grain.MapDataset.source(source).map_with_index(_WithIndex(len(source)))
    ds = ds.seed(seed).shuffle()
    # Augment before sharding: the random stream is keyed by the position in the global
    # permutation, which differs between hosts (after slicing, every host would reuse positions 0, 1, ...).
    ds = ds.random_map(_RandomCropAugment(crop, flips, rotations))
    ds = ds[shard_index : per_shard * shard_count : shard_count]
    # Batching the MapDataset (before repeat) keeps each batch inside one epoch and makes a batch
    # one unit of work, so worker processes and threads share out whole batches and cannot
    # change their contents.
    ds = ds.batch(batch_size, drop_remainder=True).repeat(num_epochs)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
    iter_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # grain 0.2.18 reads an absl flag when starting workers in a process that imported jax and
            # fails unless flags were parsed (google/grain#1355, fixed upstream by #1362). Scripts not
            # run by absl.app take the flags' defaults.
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count), worker_init_fn=_leave_stop_signals_to_main
        )
    return iter(iter_ds)


@dataclasses.dataclass(frozen=True)
class _EvalExample:
    """Position in this host's padded shard -> dict(sharp, blurry, index, valid), centre-cropped."""

    source: PairSource
    crop: tuple[int, int] | None
    shard_index: int
    shard_count: int

    def __call__(self, position: int) -> dict[str, Any]:
        index = self.shard_index + position * self.shard_count
        valid = index < len(self.source)
        # Padding repeats record 0 (it exists and has a plausible size) and is flagged invalid.
        index = index if valid else 0
        record = self.source[index]
        sharp, blurry = _images(index, record)
        if self.crop is not None:
            _check_fits(sharp.shape, self.crop, index, record)
            (h, w), (height, width) = self.crop, sharp.shape[:2]
            top, left = (height - h) // 2, (width - w) // 2
            sharp, blurry = (x[top : top + h, left : left + w] for x in (sharp, blurry))
        return {
            "sharp": _to_float(sharp, index, record),
            "blurry": _to_float(blurry, index, record),
            "index": np.int32(index if valid else -1),
            "valid": np.bool_(valid),
        }


def _stack_eval(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    shapes = {ex["sharp"].shape for ex in examples}
    if len(shapes) > 1:
        sizes = ", ".join(f"record {ex['index']}: {ex['sharp'].shape}" for ex in examples)
        raise ValueError(f"cannot batch full images of different sizes ({sizes}); pass crop_size or batch_size=1")
    return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}


def make_eval_batches(
    source: PairSource,
    *,
    batch_size: int,
    crop_size: int | Sequence[int] | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch_batches: int = 4,
) -> grain.IterDataset:
    """Deterministic evaluation batches of this host's shard, every record exactly once over all hosts.

    An iterable (iterate it again for each evaluation) of dict(sharp=(B, h, w, C) float32,
    blurry=..., index=(B,) int32, valid=(B,) bool), B = batch_size: centre crops of (h, w) =
    crop_size, or the full images when crop_size is None (all records of a batch must then share
    a size). No augmentation. Host `shard_index` takes records shard_index, shard_index +
    shard_count, ...; every host yields ceil(ceil(len(source) / shard_count) / batch_size)
    batches, all of shape B, so that a jitted step compiles once and hosts stay in step: the
    missing places are filled with copies of record 0 with valid=False and index=-1. Average
    metrics over `valid` only.
    """
    crop = None if crop_size is None else _crop_hw(crop_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(source) == 0:
        raise ValueError("the evaluation source is empty")
    shard_index, shard_count = _shard(shard_index, shard_count)
    per_shard = math.ceil(len(source) / shard_count)
    padded = math.ceil(per_shard / batch_size) * batch_size
    ds = grain.MapDataset.range(padded).map(_EvalExample(source, crop, shard_index, shard_count))
    ds = ds.batch(batch_size, batch_fn=_stack_eval)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
    return ds.to_iter_dataset(read_options)
