"""grain input pipelines: shapes, aligned augmentations, determinism, sharding, resumable state."""

import itertools
import os
import pathlib
import select
import signal
import subprocess
import sys
import time

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from kernelspace_jax.data.pipeline import make_eval_batches, make_train_iterator
from kernelspace_jax.data.synthetic import SyntheticBlurConfig, SyntheticPairs

SIZE, CROP, OFFSET = 96, 64, 40
SINGLE = {"shard_index": 0, "shard_count": 1}


def coordinate_records(num, height=SIZE, width=SIZE):
    """uint8 records whose sharp pixel (y, x) holds (y, x, index) and blurry = sharp + OFFSET.

    Any crop then shows where each of its pixels came from, and sharp/blurry alignment is exact.
    """
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    records = []
    for i in range(num):
        sharp = np.stack([y, x, np.full_like(y, i)], axis=-1).astype(np.uint8)
        records.append({"sharp": sharp, "blurry": sharp + np.uint8(OFFSET), "id": f"seq/{i:04d}"})
    return records


def orientation(sharp, index):
    """Checks one (h, w, 3) float crop of coordinate_records; returns its (dy/di, dy/dj, dx/di, dx/dj)."""
    u8 = np.round(sharp * 255).astype(int)
    np.testing.assert_array_equal(u8[..., 2], index)
    y, x = u8[..., 0], u8[..., 1]
    grads = (y[1, 0] - y[0, 0], y[0, 1] - y[0, 0], x[1, 0] - x[0, 0], x[0, 1] - x[0, 0])
    i, j = np.meshgrid(np.arange(y.shape[0]), np.arange(y.shape[1]), indexing="ij")
    # An exact rigid window: every pixel is where the first pixel and the steps say.
    np.testing.assert_array_equal(y, y[0, 0] + grads[0] * i + grads[1] * j)
    np.testing.assert_array_equal(x, x[0, 0] + grads[2] * i + grads[3] * j)
    return tuple(int(g) for g in grads)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticPairs(SyntheticBlurConfig(crop_size=(SIZE, SIZE), kernel_size_range=(9, 15)), "train", num=24)


def test_synthetic_batches(synthetic):
    it = make_train_iterator(synthetic, crop_size=CROP, batch_size=4, seed=0, **SINGLE)
    batch = next(it)
    assert sorted(batch) == ["blurry", "index", "sharp"]
    for key in ("sharp", "blurry"):
        assert batch[key].shape == (4, CROP, CROP, 3) and batch[key].dtype == np.float32
        assert 0 <= batch[key].min() and batch[key].max() <= 1
    assert batch["index"].dtype == np.int32 and batch["index"].shape == (4,)
    # Each crop is a window of its record, in one of the 8 orientations, at the same place in both.
    span = SIZE - CROP + 1
    for b, index in enumerate(batch["index"]):
        record = synthetic[int(index)]
        found = []
        for hflip, vflip, transpose in itertools.product((False, True), repeat=3):
            undone = {}
            for key in ("sharp", "blurry"):
                image = batch[key][b].transpose(1, 0, 2) if transpose else batch[key][b]
                image = image[::-1] if vflip else image
                undone[key] = image[:, ::-1] if hflip else image
            # Candidate corners by the first pixel, then the whole windows.
            for top, left in np.argwhere(np.all(record["sharp"][:span, :span] == undone["sharp"][0, 0], axis=-1)):
                window = (slice(top, top + CROP), slice(left, left + CROP))
                if all(np.array_equal(record[key][window], undone[key]) for key in undone):
                    found.append((top, left))
        assert found, f"crop {b} is not an aligned window of record {index}"


@pytest.mark.parametrize(
    "flips, rotations, expected",
    [
        (False, False, {(1, 0, 0, 1)}),
        (True, False, {(1, 0, 0, 1), (1, 0, 0, -1)}),
        # All 8 symmetries of the square: flips, transposes and rotations by 90, 180 and 270 degrees.
        (
            True,
            True,
            {(a, 0, 0, d) for a in (-1, 1) for d in (-1, 1)} | {(0, b, c, 0) for b in (-1, 1) for c in (-1, 1)},
        ),
    ],
)
def test_aligned_crops_and_augmentations(flips, rotations, expected):
    records = coordinate_records(8)
    it = make_train_iterator(records, crop_size=CROP, batch_size=8, seed=1, flips=flips, rotations=rotations, **SINGLE)
    seen = set()
    for batch in take(it, 8):
        assert batch["sharp"].dtype == np.float32 and batch["sharp"].shape == (8, CROP, CROP, 3)
        diff = np.round(batch["blurry"] * 255) - np.round(batch["sharp"] * 255)
        np.testing.assert_array_equal(diff, OFFSET)
        seen.update(orientation(s, i) for s, i in zip(batch["sharp"], batch["index"], strict=True))
    assert seen == expected


def test_rectangular_crops_without_rotations():
    records = coordinate_records(4, height=50, width=120)
    batch = next(make_train_iterator(records, crop_size=(32, 100), batch_size=4, seed=0, rotations=False, **SINGLE))
    assert batch["sharp"].shape == (4, 32, 100, 3)
    with pytest.raises(ValueError, match="square"):
        make_train_iterator(records, crop_size=(32, 100), batch_size=4, seed=0, **SINGLE)


def test_seeds_and_epochs():
    records = coordinate_records(24)

    def batches(seed, n, **kw):
        return take(make_train_iterator(records, crop_size=CROP, batch_size=5, seed=seed, **SINGLE, **kw), n)

    first = batches(0, 8)
    assert_same_batches(first, batches(0, 8))
    assert not np.array_equal(first[0]["sharp"], batches(1, 1)[0]["sharp"])
    # 24 records in batches of 5: 4 per epoch, 20 distinct records each, reshuffled every epoch.
    epochs = [np.concatenate([b["index"] for b in first[e * 4 : e * 4 + 4]]) for e in range(2)]
    assert all(len(set(e.tolist())) == 20 for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    finite = make_train_iterator(records, crop_size=CROP, batch_size=5, seed=0, num_epochs=2, **SINGLE)
    assert_same_batches(list(finite), first)


def test_shards_partition_each_epoch():
    records = coordinate_records(25)
    shards = [
        take(
            make_train_iterator(records, crop_size=CROP, batch_size=3, seed=0, shard_index=s, shard_count=2),
            8,
        )
        for s in range(2)
    ]
    for epoch in range(2):
        parts = [np.concatenate([b["index"] for b in shard[epoch * 4 : epoch * 4 + 4]]) for shard in shards]
        # 12 records per host (the 25th of the permutation is left out so hosts stay in step).
        assert [len(set(p.tolist())) for p in parts] == [12, 12]
        assert not set(parts[0].tolist()) & set(parts[1].tolist())
    # Hosts draw their own crops: the same stream would put their k-th crops at the same place.
    assert not np.array_equal(shards[0][0]["sharp"][..., :2], shards[1][0]["sharp"][..., :2])


def test_resume_from_state():
    records = coordinate_records(24)

    def make():
        return make_train_iterator(records, crop_size=CROP, batch_size=5, seed=3, **SINGLE)

    uninterrupted = take(make(), 10)
    it = make()
    take(it, 6)  # into the second epoch
    state = it.get_state()
    resumed = make()
    resumed.set_state(state)
    assert_same_batches(take(resumed, 4), uninterrupted[6:])


def test_resume_through_orbax(tmp_path):
    records = coordinate_records(24)

    def make():
        return make_train_iterator(records, crop_size=CROP, batch_size=4, seed=5, **SINGLE)

    uninterrupted = take(make(), 9)
    it = make()
    take(it, 7)
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        manager.save(
            7,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"step": np.array(7)}),
                data=grain.checkpoint.CheckpointSave(it),
            ),
        )
        manager.wait_until_finished()
    resumed = make()
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore({"step": np.array(0)}),
                data=grain.checkpoint.CheckpointRestore(resumed),
            ),
        )
    assert restored["data"] is resumed and int(restored["state"]["step"]) == 7
    assert_same_batches(take(resumed, 2), uninterrupted[7:])


def test_worker_processes_give_the_same_batches():
    records = coordinate_records(8)
    kwargs = {"crop_size": CROP, "batch_size": 2, "seed": 0, **SINGLE}
    it = make_train_iterator(records, worker_count=1, **kwargs)
    try:
        assert_same_batches(take(it, 3), take(make_train_iterator(records, **kwargs), 3))
    finally:
        it.close()


_KILLED_TRAINER = """
import time
import numpy as np
from kernelspace_jax.data.pipeline import make_train_iterator

records = [{"sharp": np.full((8, 8, 3), i, np.uint8), "blurry": np.zeros((8, 8, 3), np.uint8)} for i in range(8)]
it = make_train_iterator(records, crop_size=4, batch_size=2, seed=0, shard_index=0, shard_count=1, worker_count=2)
next(it)
print("ready", flush=True)
time.sleep(300)
"""


def _children(pid):
    """{pid: command line} of the live processes whose parent is `pid` (from /proc)."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (ValueError, OSError):  # not a process, or one that just ended
            continue
    return found


def _alive(pid):
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie (not yet reaped by its new parent) has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    """kill -9 of the trainer: its data workers (which ignore SIGINT/SIGTERM) exit within seconds,
    and then multiprocessing's resource tracker, which unlinks their shared memory, does too."""
    with open(tmp_path / "stderr", "w") as stderr:
        trainer = subprocess.Popen(
            [sys.executable, "-c", _KILLED_TRAINER], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    children = {}
    try:
        ready, _, _ = select.select([trainer.stdout], [], [], 120)
        line = trainer.stdout.readline() if ready else ""
        assert line == "ready\n", (tmp_path / "stderr").read_text()[-3000:]
        children = _children(trainer.pid)
        workers = [pid for pid, cmd in children.items() if "spawn_main" in cmd]
        trackers = [pid for pid, cmd in children.items() if "resource_tracker" in cmd]
        assert len(workers) == 2 and len(trackers) == 1, children
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait()
        killed = time.monotonic()
        while any(map(_alive, children)) and time.monotonic() < killed + 20:
            time.sleep(0.1)
        left = {pid: cmd for pid, cmd in children.items() if _alive(pid)}
        assert not left, f"still running {time.monotonic() - killed:.1f} s after the trainer was killed: {left}"
    finally:
        trainer.kill()
        trainer.wait()
        trainer.stdout.close()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_bad_records():
    small = coordinate_records(4)
    small[2] = coordinate_records(1, height=40, width=SIZE)[0] | {"id": "seq/small"}
    it = make_train_iterator(small, crop_size=CROP, batch_size=4, seed=0, **SINGLE)
    with pytest.raises(ValueError, match=r"record 2 \(id 'seq/small'\): image 40x96 is smaller than the crop 64x64"):
        next(it)
    wide = [r | {"sharp": r["sharp"].astype(np.uint16)} for r in coordinate_records(2)]
    with pytest.raises(TypeError, match="uint8 or floating"):
        next(make_train_iterator(wide, crop_size=CROP, batch_size=2, seed=0, **SINGLE))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_train_iterator(coordinate_records(5), crop_size=CROP, batch_size=3, seed=0, shard_index=0, shard_count=2)


def test_eval_covers_every_record_once():
    records = coordinate_records(11)
    shards = [
        list(make_eval_batches(records, batch_size=2, crop_size=CROP, shard_index=s, shard_count=3)) for s in range(3)
    ]
    # ceil(11 / 3) = 4 places per host, 2 batches each; host 2 has 3 records and one padding place.
    assert [len(s) for s in shards] == [2, 2, 2]
    indices = []
    for batch in itertools.chain(*shards):
        assert batch["sharp"].shape == (2, CROP, CROP, 3) and batch["valid"].dtype == bool
        np.testing.assert_array_equal(batch["index"] == -1, ~batch["valid"])
        for sharp, blurry, index, valid in zip(
            batch["sharp"], batch["blurry"], batch["index"], batch["valid"], strict=True
        ):
            assert orientation(sharp, index if valid else 0) == (1, 0, 0, 1)
            np.testing.assert_array_equal(np.round(sharp[0, 0, :2] * 255), [16, 16])  # (96 - 64) / 2
            np.testing.assert_array_equal(np.round((blurry - sharp) * 255), OFFSET)
        indices += batch["index"][batch["valid"]].tolist()
    assert sorted(indices) == list(range(11))
    # An iterable: every evaluation sees the same batches.
    ds = make_eval_batches(records, batch_size=4, **SINGLE)
    assert_same_batches(list(ds), list(ds))


def test_eval_full_images(synthetic):
    batches = list(make_eval_batches(synthetic, batch_size=5, **SINGLE))
    assert [b["valid"].sum() for b in batches] == [5, 5, 5, 5, 4]
    np.testing.assert_array_equal(batches[1]["sharp"][2], synthetic[7]["sharp"])
    mixed = coordinate_records(2) + coordinate_records(1, height=80)
    with pytest.raises(ValueError, match="different sizes"):
        list(make_eval_batches(mixed, batch_size=3, **SINGLE))
