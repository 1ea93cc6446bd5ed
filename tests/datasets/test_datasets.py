"""Sharp/blurry pair datasets: folder scans and validation, TFDS builders read back without TensorFlow."""

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from tensorflow_datasets.core import shuffle as tfds_shuffle

from kernelspace_jax.data import tfds_builders
from kernelspace_jax.data.paired_folders import (
    BLURRY_WITHOUT_SHARP,
    SIZE_MISMATCH,
    UNREADABLE,
    BadPairsError,
    load_rgb8,
    scan_gopro,
    scan_paired_folders,
    scan_reds,
)
from kernelspace_jax.data.synthetic import SyntheticBlurConfig, SyntheticPairs, write_paired_folders
from kernelspace_jax.data.tfds_builders import MixedSource, build, data_source
from kernelspace_jax.io.images import to_uint8

HEIGHT, WIDTH = 48, 64
GOPRO_SEQUENCES = {"train": {"GOPR0372_07_00": 2, "GOPR0384_11_01": 1}, "test": {"GOPR0384_11_00": 2}}
REDS_SEQUENCES = {"train": {"000": 2, "001": 1}, "val": {"000": 1}}


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _random_rgb(rng, height=HEIGHT, width=WIDTH):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save_rgb48(path, rgb):
    """Writes (H, W, 3) uint16 as a 16-bit-per-channel RGB PNG, which Pillow cannot write."""
    height, width = rgb.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16-bit, colour type RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def _write_gopro(root, rng):
    """GOPRO_Large-like tree; returns {split: {id: {'sharp' | 'blur' | 'blur_gamma': (H, W, 3) uint8}}}."""
    expected = {}
    for split, sequences in GOPRO_SEQUENCES.items():
        for seq, frames in sequences.items():
            for frame in range(frames):
                images = {kind: _random_rgb(rng) for kind in ("sharp", "blur", "blur_gamma")}
                for kind, image in images.items():
                    _save(root / split / seq / kind / f"{frame:06d}.png", image)
                expected.setdefault(split, {})[f"{seq}/{frame:06d}"] = images
    (root / "train" / "GOPR0372_07_00" / "frames X offset 0.txt").write_text("not an image")
    return expected


def _write_reds(root, rng, sequences=REDS_SEQUENCES):
    """REDS-like tree; returns {split: {id: {'sharp' | 'blurry': (H, W, 3) uint8}}}."""
    expected = {}
    for split, seqs in sequences.items():
        for seq, frames in seqs.items():
            for frame in range(frames):
                images = {"sharp": _random_rgb(rng), "blurry": _random_rgb(rng)}
                _save(root / f"{split}_sharp" / seq / f"{frame:08d}.png", images["sharp"])
                _save(root / f"{split}_blur" / seq / f"{frame:08d}.png", images["blurry"])
                expected.setdefault(split, {})[f"{seq}/{frame:08d}"] = images
    return expected


def _assert_split(source, expected, blurry_key="blurry"):
    """The split holds exactly the expected pairs, in id order, pixel for pixel."""
    ids = sorted(expected)
    assert len(source) == len(ids)
    for index, key in enumerate(ids):
        record = source[index]
        assert record["id"].decode() == key
        assert record["sequence"].decode() == key.rpartition("/")[0]
        for feature, name in (("sharp", "sharp"), ("blurry", blurry_key)):
            assert record[feature].dtype == np.uint8
            np.testing.assert_array_equal(record[feature], expected[key][name], err_msg=f"{key} {feature}")


@pytest.fixture(scope="module")
def gopro(tmp_path_factory):
    """A GoPro tree built into a TFDS data dir, both blur variants: (manual dir, data dir, expected)."""
    root = tmp_path_factory.mktemp("gopro")
    expected = _write_gopro(root / "GOPRO_Large", np.random.default_rng(0))
    for name in ("gopro", "gopro/blur_gamma"):
        build(name, root / "GOPRO_Large", root / "tfds")
    return root / "GOPRO_Large", root / "tfds", expected


@pytest.fixture(scope="module")
def reds(tmp_path_factory):
    root = tmp_path_factory.mktemp("reds")
    expected = _write_reds(root / "REDS", np.random.default_rng(1))
    build("reds", root / "REDS", root / "tfds")
    return root / "REDS", root / "tfds", expected


# ---------------------------------------------------------------------------------------------
# Good trees
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blur", ["blur", "blur_gamma"])
def test_gopro_round_trip(gopro, blur):
    _, data_dir, expected = gopro
    name = "gopro" if blur == "blur" else f"gopro/{blur}"
    for split in ("train", "test"):
        _assert_split(data_source(name, split, data_dir), expected[split], blurry_key=blur)


def test_gopro_scan_records(gopro):
    manual_dir, _, expected = gopro
    pairs, report = scan_gopro(manual_dir, "test", blur="blur_gamma")
    assert [p.id for p in pairs] == sorted(expected["test"])
    pair = pairs[0]
    assert (pair.height, pair.width, pair.sequence) == (HEIGHT, WIDTH, "GOPR0384_11_00")
    assert pair.blurry == manual_dir / "test" / "GOPR0384_11_00" / "blur_gamma" / "000000.png"
    assert pair.sharp == manual_dir / "test" / "GOPR0384_11_00" / "sharp" / "000000.png"
    assert report.num_pairs == 2 and not report.problems and not report.converted


def test_build_reuses_a_built_dataset(gopro):
    manual_dir, data_dir, _ = gopro
    builder = build("gopro", manual_dir, data_dir)
    assert builder.is_prepared() and builder.scan_reports == {}  # nothing scanned or written again


def test_reds_round_trip(reds):
    _, data_dir, expected = reds
    for split in ("train", "val"):
        _assert_split(data_source("reds", split, data_dir), expected[split])


def test_big_splits_are_sharded_without_tensorflow(tmp_path, monkeypatch):
    """TFDS's own writer spills splits past its shuffle buffer through tf.io.gfile; ours never does."""
    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 0)
    monkeypatch.setattr(tfds_builders, "SHARD_BYTES", 1)  # one pair per shard
    expected = _write_reds(tmp_path / "REDS", np.random.default_rng(4))
    builder = build("reds", tmp_path / "REDS", tmp_path / "tfds")
    assert builder.info.splits["train"].shard_lengths == [1, 1, 1]
    assert len(list((tmp_path / "tfds" / "reds" / "default" / "1.0.0").glob("reds-train.array_record-*"))) == 3
    for split in ("train", "val"):
        _assert_split(data_source("reds", split, tmp_path / "tfds"), expected[split])


def test_paired_folders_on_synthetic_tree(tmp_path):
    config = SyntheticBlurConfig(crop_size=(HEIGHT, WIDTH), kernel_size_range=(9, 9), nonuniform_prob=0.0, seed=5)
    datasets = {split: SyntheticPairs(config, split=split, num=3) for split in ("train", "test")}
    expected = {}
    for split, dataset in datasets.items():
        keys = write_paired_folders(dataset, tmp_path / "synthetic" / split, frames_per_seq=2)
        records = [dataset[i] for i in range(len(dataset))]
        expected[split] = {
            key.replace("_", "/"): {"sharp": to_uint8(r["sharp"]), "blurry": to_uint8(r["blurry"])}
            for key, r in zip(keys, records, strict=True)
        }
    assert sorted(expected["train"]) == ["000/00000000", "000/00000001", "001/00000000"]
    build("paired_folders/synthetic", tmp_path / "synthetic", tmp_path / "tfds")
    for split in ("train", "test"):
        _assert_split(data_source("paired_folders/synthetic", split, tmp_path / "tfds"), expected[split])


def test_paired_folders_custom_splits(reds, tmp_path):
    """The reference README's layout: arbitrary folder names, one split per (blurry, sharp) pair."""
    manual_dir, _, expected = reds
    build("paired_folders/reds_val", manual_dir, tmp_path, splits={"test": ("val_blur", "val_sharp")})
    _assert_split(data_source("paired_folders/reds_val", "test", tmp_path), expected["val"])


def test_mix_concatenates_sources(gopro, reds):
    gopro_dir, reds_dir = gopro[1], reds[1]
    parts = [data_source("gopro", "train", gopro_dir), data_source("reds", "train", reds_dir)]
    mix = MixedSource(parts, repeats=[2, 1])
    assert len(mix) == 2 * len(parts[0]) + len(parts[1]) == 9
    ids = [mix[i]["id"] for i in range(len(mix))]
    gopro_ids, reds_ids = ([s[i]["id"] for i in range(len(s))] for s in parts)
    assert ids == gopro_ids * 2 + reds_ids
    np.testing.assert_array_equal(mix[-1]["sharp"], parts[1][len(parts[1]) - 1]["sharp"])
    with pytest.raises(IndexError, match="out of range"):
        mix[len(mix)]
    # Through data_source: names sharing one data dir, sizes summed.
    mixed = data_source(["gopro", "gopro/blur_gamma"], "test", gopro_dir)
    assert len(mixed) == 2 * len(data_source("gopro", "test", gopro_dir))


def test_reading_needs_neither_this_package_nor_tensorflow(gopro):
    """A fresh process reads the dataset with plain TFDS (read-only builder from the files)."""
    code = (
        "import sys, tensorflow_datasets as tfds\n"
        f"src = tfds.data_source('gopro', split='test', data_dir={str(gopro[1])!r})\n"
        "print(len(src), src[0]['id'].decode(), src[0]['sharp'].shape)\n"
        "assert 'tensorflow' not in sys.modules and 'kernelspace_jax' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "GOPR0384_11_00/000000", f"({HEIGHT},", f"{WIDTH},", "3)"]


# ---------------------------------------------------------------------------------------------
# Bad trees
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_reds(tmp_path):
    """REDS tree, 'train' with 2 good pairs, 3 pairs to convert and 3 bad pairs; returns (root, expected)."""
    rng = np.random.default_rng(2)
    root = tmp_path / "REDS"
    expected = _write_reds(root, rng, {"train": {"000": 2}, "val": {"000": 1}})["train"]
    sharp, blurry = root / "train_sharp" / "001", root / "train_blur" / "001"

    gray = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    rgba = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    rgb48 = rng.integers(0, 65536, (HEIGHT, WIDTH, 3), dtype=np.uint16)
    good = [_random_rgb(rng) for _ in range(3)]
    _save(sharp / "00000000.png", gray)
    _save(blurry / "00000000.png", good[0])
    _save(sharp / "00000001.png", good[1])
    _save(blurry / "00000001.png", rgba)
    _save(sharp / "00000002.png", gray16)
    _save_rgb48(blurry / "00000002.png", rgb48)
    # Documented rule: gray -> R=G=B, alpha dropped, 16-bit v -> v >> 8.
    expected["001/00000000"] = {"sharp": np.repeat(gray[..., None], 3, -1), "blurry": good[0]}
    expected["001/00000001"] = {"sharp": good[1], "blurry": rgba[..., :3]}
    expected["001/00000002"] = {
        "sharp": np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, -1),
        "blurry": (rgb48 >> 8).astype(np.uint8),
    }

    _save(sharp / "00000003.png", _random_rgb(rng))  # its blurry file is truncated
    truncated = blurry / "00000003.png"
    _save(truncated, _random_rgb(rng))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    _save(blurry / "00000004.png", _random_rgb(rng))  # no sharp image
    _save(sharp / "00000005.png", _random_rgb(rng))
    _save(blurry / "00000005.png", _random_rgb(rng, HEIGHT, WIDTH - 8))
    (blurry / "._00000000.png").write_bytes(b"macOS metadata, not an image")  # ignored: hidden
    return root, expected


def test_bad_tree_fails_with_report(bad_reds, tmp_path):
    root, _ = bad_reds
    with pytest.raises(BadPairsError) as caught:
        scan_reds(root, "train")
    report = caught.value.report
    assert {problem: len(examples) for problem, examples in report.problems.items()} == {
        BLURRY_WITHOUT_SHARP: 1,
        UNREADABLE: 1,
        SIZE_MISMATCH: 1,
    }
    assert report.num_pairs == 5 and len(report.converted) == 4
    message = str(caught.value)
    for text in (
        "5 usable pairs, 3 problems",
        f"1 x {BLURRY_WITHOUT_SHARP}",
        "train_blur/001/00000004.png",
        f"1 x {UNREADABLE}",
        "train_blur/001/00000003.png: OSError",
        f"1 x {SIZE_MISMATCH}",
        "001/00000005: sharp 48x64, blurry 48x56 (HxW)",
        "4 x converted to 8-bit RGB (kept)",
        "train_sharp/001/00000002.png (16-bit grayscale)",
        "train_blur/001/00000001.png (8-bit RGBA)",
        "skip_bad=True",
    ):
        assert text in message
    with pytest.raises(BadPairsError):
        build("reds", root, tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="not built"):  # nothing half-written is left to read
        data_source("reds", "train", tmp_path / "tfds")


def test_skip_bad_keeps_good_and_converted_pairs(bad_reds, tmp_path):
    root, expected = bad_reds
    pairs, report = scan_reds(root, "train", skip_bad=True)
    assert [p.id for p in pairs] == sorted(expected) and report.num_bad == 3
    np.testing.assert_array_equal(load_rgb8(pairs[4].blurry), expected["001/00000002"]["blurry"])
    builder = build("reds", root, tmp_path / "tfds", skip_bad=True)
    assert builder.scan_reports["train"].num_bad == 3 and builder.scan_reports["val"].num_bad == 0
    _assert_split(data_source("reds", "train", tmp_path / "tfds"), expected)


def test_report_prints_first_examples_only(tmp_path):
    rng = np.random.default_rng(3)
    _save(tmp_path / "sharp" / "s" / "a.png", _random_rgb(rng, 8, 8))
    _save(tmp_path / "blur" / "s" / "a.png", _random_rgb(rng, 8, 8))
    for i in range(7):
        _save(tmp_path / "sharp" / "s" / f"only{i}.png", _random_rgb(rng, 8, 8))
    pairs, report = scan_paired_folders(tmp_path / "blur", tmp_path / "sharp", skip_bad=True)
    assert [p.id for p in pairs] == ["s/a"]
    text = str(report)
    assert "7 x sharp image without a blurry one" in text
    assert "only4.png" in text and "only5.png" not in text


def test_clear_errors(gopro, tmp_path):
    manual_dir, data_dir, _ = gopro
    with pytest.raises(ValueError, match="unknown dataset 'gopr'"):
        build("gopr", manual_dir, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"manual dir .*missing"):
        build("reds", tmp_path / "missing", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_blur"):
        build("reds", manual_dir, tmp_path)
    with pytest.raises(ValueError, match="need a config name"):
        build("paired_folders", manual_dir, tmp_path, splits={"train": ("a", "b")})
    with pytest.raises(ValueError, match="blur variant"):
        scan_gopro(manual_dir, "train", blur="blurry")
    with pytest.raises(ValueError, match="GoPro split"):
        scan_gopro(manual_dir, "val")
    (tmp_path / "empty" / "blur").mkdir(parents=True)
    (tmp_path / "empty" / "sharp").mkdir()
    with pytest.raises(ValueError, match="No usable"):
        scan_paired_folders(tmp_path / "empty" / "blur", tmp_path / "empty" / "sharp")
    with pytest.raises(FileNotFoundError, match="not built"):
        data_source("reds", "train", data_dir)


def test_build_command_line_with_the_default_layout(tmp_path, capsys):
    from kernelspace_jax.cli import build_data as build_cli

    config = SyntheticBlurConfig(crop_size=(HEIGHT, WIDTH), kernel_size_range=(5, 5), nonuniform_prob=0.0)
    for split, num in (("train", 3), ("test", 2)):
        write_paired_folders(SyntheticPairs(config, split=split, num=num), tmp_path / "pairs" / split)
    assert (
        build_cli.main(
            ["paired_folders", "--manual_dir", str(tmp_path / "pairs"), "--data_dir", str(tmp_path / "tfds")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "train: 3 pairs" in out and "test: 2 pairs" in out
    assert len(data_source("paired_folders", "test", tmp_path / "tfds")) == 2
    assert build_cli.main(["gopro", "--manual_dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["gopro", "reds"])
def test_built_datasets_feed_the_training_pipeline(dataset, gopro, reds):
    from kernelspace_jax.configs.common import reference_recipe
    from kernelspace_jax.data import pipeline, sources

    _, data_dir, expected = {"gopro": gopro, "reds": reds}[dataset]
    data = reference_recipe("micro_wovae").data
    data.update(names=(dataset,), data_dir=str(data_dir), crop_size=(32, 32), batch_size=2)
    train, held_out = sources.build(data)
    assert len(held_out) == len(expected["test" if dataset == "gopro" else "val"])
    batch = next(pipeline.make_train_iterator(train, crop_size=(32, 32), batch_size=2, seed=0))
    assert batch["sharp"].shape == batch["blurry"].shape == (2, 32, 32, 3)
    assert batch["sharp"].dtype == np.float32 and 0 <= batch["sharp"].min() <= batch["sharp"].max() <= 1
