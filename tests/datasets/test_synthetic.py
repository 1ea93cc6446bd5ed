"""Synthetic sharp/blurry pairs: kernels, blur operators, dataset determinism, splits, folders."""

import dataclasses

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kernelspace_jax.data.synthetic import (
    SyntheticBlurConfig,
    SyntheticPairs,
    image_sources,
    nonuniform_blur,
    random_kernel,
    random_trajectory,
    rasterize_trajectory,
    region_weights,
    synthetic_pairs,
    uniform_blur,
    write_paired_folders,
)
from kernelspace_jax.io.images import to_uint8

# Small crops keep every record cheap; kernels still span the full default size range.
SMALL = SyntheticBlurConfig(crop_size=(48, 40), kernel_size_range=(9, 15), seed=3)


def _image(shape=(40, 36, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def _covariance_trace(kernel):
    rows, cols = np.indices(kernel.shape)
    mean_r, mean_c = (kernel * rows).sum(), (kernel * cols).sum()
    return (kernel * ((rows - mean_r) ** 2 + (cols - mean_c) ** 2)).sum(), (mean_r, mean_c)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [9, 15, 31])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_is_a_centred_distribution(size, seed):
    kernel = random_kernel(np.random.default_rng(seed), size)
    assert kernel.shape == (size, size) and kernel.dtype == np.float32
    assert kernel.min() >= 0
    np.testing.assert_allclose(kernel.sum(dtype=np.float64), 1.0, atol=1e-5)
    _, centroid = _covariance_trace(kernel.astype(np.float64))
    np.testing.assert_allclose(centroid, ((size - 1) / 2,) * 2, atol=1e-3)
    assert kernel.max() < 0.9  # a blur, not a delta


def test_kernels_differ_across_seeds_and_repeat_for_equal_seeds():
    kernels = [random_kernel(np.random.default_rng(seed), 15) for seed in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(kernels[i] - kernels[j]).max() > 1e-3
    np.testing.assert_array_equal(random_kernel(np.random.default_rng(3), 15), kernels[3])


def test_straight_trajectory_rasterises_to_a_segment():
    # anxiety 0 is a straight segment of the requested length: its kernel has the variance of a
    # uniform distribution on it (L^2 / 12) plus that of bilinear splatting (1/6 per axis on average).
    length = 20.0
    path = random_trajectory(np.random.default_rng(0), length, anxiety=0.0)
    np.testing.assert_allclose(np.abs(np.diff(path)).sum(), length, rtol=1e-9)
    trace, _ = _covariance_trace(rasterize_trajectory(path, 31).astype(np.float64))
    np.testing.assert_allclose(trace, length**2 / 12 + 1 / 3, rtol=0.02)


def test_long_trajectory_is_shrunk_into_the_grid():
    kernel = rasterize_trajectory(random_trajectory(np.random.default_rng(1), 500.0, anxiety=0.0), 15)
    np.testing.assert_allclose(kernel.sum(dtype=np.float64), 1.0, atol=1e-5)
    # The segment runs from border to border (through the centre) instead of being cut off.
    border = np.zeros_like(kernel, dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    assert kernel[border].sum() > 0 and kernel[7, 7] > 0


def test_anxiety_makes_shakier_kernels():
    # Same path length: straight segments spread far more than shaky, curling ones.
    def mean_spread(anxiety):
        traces = [
            _covariance_trace(random_kernel(np.random.default_rng(s), 31, length=30.0, anxiety=anxiety))[0]
            for s in range(6)
        ]
        return np.mean(traces)

    assert mean_spread(0.05) < 0.5 * mean_spread(0.0)


# ---------------------------------------------------------------------------------------------
# Blur operators
# ---------------------------------------------------------------------------------------------


def test_delta_kernel_is_identity_and_offset_delta_shifts():
    image = _image()
    delta = np.zeros((7, 7), np.float32)
    delta[3, 3] = 1
    np.testing.assert_allclose(uniform_blur(image, delta), image, atol=1e-6)
    shifted = np.zeros((7, 7), np.float32)
    shifted[3, 4] = 1  # convolution: out[y, x] = image[y, x - 1]
    np.testing.assert_allclose(uniform_blur(image, shifted)[:, 1:], image[:, :-1], atol=1e-6)


def test_uniform_blur_matches_direct_convolution_with_mirror_boundary():
    image = _image()
    kernel = random_kernel(np.random.default_rng(4), 11)
    expected = np.stack(
        [ndimage.convolve(image[..., c].astype(np.float64), kernel, mode="mirror") for c in range(3)], -1
    )
    np.testing.assert_allclose(uniform_blur(image, kernel), expected, atol=1e-5)


def test_blur_preserves_a_constant_image():
    image = np.full((32, 30, 3), 0.37, np.float32)
    kernel = random_kernel(np.random.default_rng(5), 15)
    np.testing.assert_allclose(uniform_blur(image, kernel), image, atol=1e-5)
    kernels = np.stack([random_kernel(np.random.default_rng(s), 15) for s in range(4)]).reshape(2, 2, 15, 15)
    np.testing.assert_allclose(nonuniform_blur(image, kernels), image, atol=1e-5)


def test_region_weights_are_a_partition_of_unity():
    weights = region_weights(99, 60, (3, 2))
    assert weights.shape == (3, 2, 99, 60) and weights.min() >= 0
    np.testing.assert_allclose(weights.sum(axis=(0, 1)), 1.0, atol=1e-6)
    # Region centres (rows 16, 49, 82; cols 14.5, 44.5) get their own region only.
    np.testing.assert_allclose(weights[1, :, 49, :].sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights[:, 0, :, 0].sum(axis=0), 1.0, atol=1e-6)
    assert weights[0, 0, 0, 0] == 1 and weights[2, 1, -1, -1] == 1
    np.testing.assert_allclose(weights[1, 0, 49, 29], 0.5, atol=0.06)  # half-way between columns


def test_nonuniform_blur_with_one_kernel_everywhere_is_uniform_blur():
    image = _image((45, 50, 3))
    kernel = random_kernel(np.random.default_rng(6), 9)
    same = np.broadcast_to(kernel, (3, 3, 9, 9))
    np.testing.assert_allclose(nonuniform_blur(image, same), uniform_blur(image, kernel), atol=1e-5)


def test_nonuniform_blur_uses_each_regions_kernel_at_its_centre():
    image = _image((45, 45, 3), seed=1)
    kernels = np.stack([random_kernel(np.random.default_rng(s), 9) for s in range(9)]).reshape(3, 3, 9, 9)
    out = nonuniform_blur(image, kernels)
    for a, b in [(0, 0), (1, 2), (2, 1)]:
        y, x = 7 + 15 * a, 7 + 15 * b  # region centres of a 45-pixel side split in 3
        np.testing.assert_allclose(out[y, x], uniform_blur(image, kernels[a, b])[y, x], atol=1e-5)
    assert np.abs(out - uniform_blur(image, kernels[1, 1])).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def _assert_records_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_records_have_the_documented_layout():
    dataset = SyntheticPairs(dataclasses.replace(SMALL, nonuniform_prob=0.5), num=6)
    records = list(dataset)
    assert len(records) == 6
    for record in records:
        assert record["sharp"].shape == record["blurry"].shape == (48, 40, 3)
        assert record["sharp"].dtype == record["blurry"].dtype == np.float32
        assert record["kernel"].shape == (3, 3, 15, 15) and record["kernel"].dtype == np.float32
        for name in ("sharp", "blurry"):
            assert 0 <= record[name].min() and record[name].max() <= 1
        np.testing.assert_allclose(record["kernel"].sum(axis=(2, 3), dtype=np.float64), 1.0, atol=1e-5)
        assert record["kernel"].min() >= 0
    assert {bool(r["uniform"]) for r in records} == {True, False}


def test_records_depend_only_on_seed_split_and_index():
    forward = [SyntheticPairs(SMALL, num=5)[i] for i in range(5)]
    backward = SyntheticPairs(SMALL, num=50)
    for i in reversed(range(5)):
        _assert_records_equal(backward[i], forward[i])
    _assert_records_equal(SyntheticPairs(SMALL, num=5)[-1], forward[4])
    _assert_records_equal(next(synthetic_pairs(SMALL, num=1)), forward[0])
    assert not np.array_equal(forward[0]["kernel"], forward[1]["kernel"])
    other_seed = SyntheticPairs(dataclasses.replace(SMALL, seed=4), num=1)[0]
    assert not np.array_equal(other_seed["kernel"], forward[0]["kernel"])
    with pytest.raises(IndexError):
        SyntheticPairs(SMALL, num=5)[5]


@pytest.mark.parametrize("nonuniform_prob", [0.0, 1.0])
def test_blurry_is_the_sharp_crop_blurred_by_the_record_kernels(nonuniform_prob):
    config = dataclasses.replace(SMALL, nonuniform_prob=nonuniform_prob, noise_sigma_range=(0.0, 0.0))
    record = SyntheticPairs(config, num=1)[0]
    assert bool(record["uniform"]) == (nonuniform_prob == 0)
    expected = nonuniform_blur(record["sharp"], record["kernel"])
    # Away from the border; there the blur saw the real image around the crop, not a mirror.
    r = config.kernel_size // 2
    np.testing.assert_allclose(record["blurry"][r:-r, r:-r], expected[r:-r, r:-r], atol=1e-5)


def test_noise_has_the_recorded_sigma():
    config = dataclasses.replace(SMALL, crop_size=(96, 96), nonuniform_prob=0.0, noise_sigma_range=(0.02, 0.05))
    record = SyntheticPairs(config, num=1)[0]
    clean = uniform_blur(record["sharp"], record["kernel"][0, 0])
    residual = (record["blurry"] - clean)[8:-8, 8:-8]
    inside = (clean[8:-8, 8:-8] > 0.2) & (clean[8:-8, 8:-8] < 0.8)  # away from clipping
    assert 0.02 <= record["noise_sigma"] <= 0.05
    np.testing.assert_allclose(residual[inside].std(), record["noise_sigma"], rtol=0.1)


def test_train_and_test_kernels_and_images_are_disjoint():
    train = SyntheticPairs(SMALL, split="train", num=12)
    test = SyntheticPairs(SMALL, split="test", num=12)
    assert set(train.sources).isdisjoint(test.sources) and train.sources and test.sources
    train_kernels = [k for i in range(len(train)) for k in train[i]["kernel"].reshape(-1, 15 * 15)]
    test_kernels = [k for i in range(len(test)) for k in test[i]["kernel"].reshape(-1, 15 * 15)]
    for kernel in test_kernels:
        assert min(np.abs(kernel - other).max() for other in train_kernels) > 1e-4


def test_image_folder_sources(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, (30 + i, 70, 3), dtype=np.uint8)  # smaller than the crop: upscaled
        image = Image.fromarray(pixels[..., 0] if i % 3 == 0 else pixels)  # some grayscale
        image.save(tmp_path / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "notes.txt").write_text("not an image")
    sources = image_sources(tmp_path)
    assert sorted(sources["train"] + sources["test"]) == sorted(str(p) for p in tmp_path.glob("img_*"))
    assert sources["test"] and set(sources["train"]).isdisjoint(sources["test"])
    record = SyntheticPairs(dataclasses.replace(SMALL, image_dir=str(tmp_path)), split="test", num=1)[0]
    assert record["sharp"].shape == (48, 40, 3)
    with pytest.warns(UserWarning, match="too few"):
        single = tmp_path / "single"
        single.mkdir()
        Image.fromarray(pixels).save(single / "only.png")
        assert image_sources(single)["train"] == image_sources(single)["test"]


def test_config_validation():
    with pytest.raises(ValueError, match="odd"):
        SyntheticBlurConfig(kernel_size_range=(9, 30))
    with pytest.raises(ValueError, match="split"):
        SyntheticBlurConfig(split="validation")
    with pytest.raises(TypeError):
        SyntheticBlurConfig(crop_size=(64.5, 64))
    assert SyntheticBlurConfig(crop_size=np.int64(64), noise_sigma_range=0).crop_size == (64, 64)


# ---------------------------------------------------------------------------------------------
# Paired folders
# ---------------------------------------------------------------------------------------------


def test_written_folders_read_back_to_the_same_8bit_values(tmp_path):
    dataset = SyntheticPairs(SMALL, split="val", num=4)
    keys = write_paired_folders(dataset, tmp_path, frames_per_seq=3)
    assert keys == ["000_00000000", "000_00000001", "000_00000002", "001_00000000"]
    for index, key in enumerate(keys):
        seq, name = key.split("_")
        for folder, field in (("blur", "blurry"), ("sharp", "sharp")):
            with Image.open(tmp_path / folder / seq / f"{name}.png") as image:
                assert image.mode == "RGB"
                np.testing.assert_array_equal(np.asarray(image), to_uint8(dataset[index][field]))
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(f"{d}/{k[:3]}/{k[4:]}.png" for d in ("blur", "sharp") for k in keys)
