"""Pair specs: one grammar for every command that reads sharp/blurry pairs (data.pairs.open_pairs)."""

import pytest

from kernelspace_jax.data.pairs import FolderPairs, open_pairs
from kernelspace_jax.data.synthetic import SyntheticBlurConfig, SyntheticPairs, write_paired_folders

OPTIONS = {"data_dir": "unused", "num": 2, "seed": 5}


def test_synthetic_specs():
    default = open_pairs("synthetic", **OPTIONS)
    assert isinstance(default, SyntheticPairs) and len(default) == 2
    assert default.config == SyntheticBlurConfig(seed=5, split="test", num_examples=2)
    cropped = open_pairs("synthetic:val", **OPTIONS, crop=64)
    assert cropped.config == SyntheticBlurConfig(crop_size=64, seed=5, split="val", num_examples=2)
    with pytest.raises(ValueError, match="--data: synthetic split must be one of"):
        open_pairs("synthetic:nope", **OPTIONS, flag="--data")


def test_folder_specs_and_errors(tmp_path):
    write_paired_folders(SyntheticPairs(SyntheticBlurConfig(crop_size=32, kernel_size_range=5), "test", 2), tmp_path)
    for spec in (str(tmp_path), f"folders:{tmp_path / 'blur'}:{tmp_path / 'sharp'}"):
        pairs = open_pairs(spec, **OPTIONS)
        assert isinstance(pairs, FolderPairs) and [r.id for r in pairs.records] == ["000/00000000", "000/00000001"]
        assert pairs[1]["sharp"].shape == (32, 32, 3) and pairs[1]["id"] == "000/00000001"
    with pytest.raises(FileNotFoundError, match=r"--source: .* has no blur/ and sharp/ folders"):
        open_pairs(str(tmp_path / "blur"), **OPTIONS, flag="--source")
    with pytest.raises(ValueError, match=r"--data must be synthetic\[:<split>\], tfds:.*got 'nothing'"):
        open_pairs("nothing", **OPTIONS, flag="--data")
