"""Seeded synthetic sharp/blurry pairs: camera-shake kernels, (non-)uniform blur, random crops.

    config = SyntheticBlurConfig(crop_size=(256, 256), seed=0)
    train = SyntheticPairs(config, split="train", num=1000)
    record = train[17]        # dict(sharp=(256, 256, 3), blurry=(256, 256, 3), kernel=(3, 3, 31, 31))
    write_paired_folders(SyntheticPairs(config, split="test", num=100), "datasets/synthetic/test")

Kernels follow Boracchi & Foi, "Modeling the performance of image restoration from motion blur"
(IEEE TIP 2012), as re-implemented by DeblurGAN: the trajectory of a particle whose velocity gets
random inertial and impulsive (shake) perturbations, rasterised with sub-pixel bilinear splatting.
Everything is numpy with explicit `np.random.Generator`s; record `i` of a split depends only on
(seed, split, i), so a random-access data source (grain, TFDS) can wrap `SyntheticPairs` as is.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sp_fft

from kernelspace_jax.io.images import IMAGE_SUFFIXES, to_uint8, write_png

SPLITS = ("train", "val", "test")
# Fixed codes, not hashes of the names, so the per-record random streams never change.
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}

# scikit-image's bundled photographs (no download needed). The held-out ones feed 'val' and 'test'.
SKIMAGE_TRAIN_IMAGES = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "coins",
    "moon",
    "brick",
    "grass",
)
SKIMAGE_HELD_OUT_IMAGES = ("chelsea", "camera", "gravel")

# Boracchi & Foi draw these per trajectory as U(0, 1) times the constant.
CENTRIPETAL_MAX = 0.7  # pull towards the starting point: keeps long paths compact
GAUSSIAN_SHAKE_MAX = 10.0  # strength of the random (inertial) change of direction
BIG_SHAKE_FREQ_MAX = 0.2  # per-step probability of an impulsive jerk, times the anxiety
NUM_STEPS = 2000  # trajectory samples (B&F's numT); steps stay far below a pixel
REFERENCE_LENGTH = 60.0  # B&F's MaxTotalLength, the path length the dynamics are tuned for


# ---------------------------------------------------------------------------------------------
# Camera-shake kernels
# ---------------------------------------------------------------------------------------------


def random_trajectory(
    rng: np.random.Generator, length: float, anxiety: float, num_steps: int = NUM_STEPS
) -> np.ndarray:
    """Boracchi-Foi camera-shake trajectory: complex positions (num_steps,), x + iy in pixels.

    The particle starts at 0 in a random direction and moves in num_steps - 1 steps of equal
    length d. At each step its velocity v (|v| = d) becomes
        v + jerk + anxiety * (g * xi - c * x) * d,  renormalised to |v| = d,
    with xi a complex standard normal, g ~ U(0, 10), c ~ U(0, 0.7) drawn per trajectory, and
    jerk = 2 v exp(i (pi + u - 0.5)), u ~ U(0, 1) (a near reversal), happening with probability
    anxiety * p per step, p ~ U(0, 0.2). `anxiety` in [0, 1] is the shake intensity: 0 gives a
    straight line, DeblurGAN uses 0.003 to 0.01, B&F 0.1 * U(0, 1) (very shaky).
    The dynamics run at B&F's scale (a REFERENCE_LENGTH-pixel path) and the result is scaled to
    `length` pixels, so the distribution of shapes does not depend on the kernel size.
    """
    if num_steps < 2 or length < 0 or not 0 <= anxiety <= 1:
        raise ValueError(
            f"need num_steps >= 2, length >= 0 and 0 <= anxiety <= 1, got {num_steps}, {length}, {anxiety}"
        )
    centripetal = CENTRIPETAL_MAX * rng.uniform()
    gaussian = GAUSSIAN_SHAKE_MAX * rng.uniform()
    big_shake = BIG_SHAKE_FREQ_MAX * rng.uniform() * anxiety
    heading = np.exp(2j * np.pi * rng.uniform())
    n = num_steps - 1
    shakes = (rng.uniform(size=n) < big_shake).tolist()
    turns = np.exp(1j * (np.pi + rng.uniform(size=n) - 0.5)).tolist()
    noise = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).tolist()
    step = REFERENCE_LENGTH / n
    # Sequential by nature; Python complex scalars beat numpy calls here.
    v, x, path = complex(heading) * step, 0j, [0j]
    for t in range(n):
        dv = anxiety * (gaussian * noise[t] - centripetal * x) * step
        if shakes[t]:
            dv += 2 * v * turns[t]
        v += dv
        v *= step / abs(v)
        x += v
        path.append(x)
    return np.asarray(path) * (length / REFERENCE_LENGTH)


def rasterize_trajectory(trajectory: np.ndarray, size: int) -> np.ndarray:
    """Kernel (size, size) float32, >= 0, sum 1, from complex positions (N,) (real = column).

    Every sample gets the same exposure time and is splatted bilinearly, so the kernel is the
    time-integral of the (sub-pixel) position. The path is shifted so its centroid lands on the
    centre pixel (the blur then does not translate the image; bilinear splatting preserves the
    centroid) and shrunk about it if it would leave the grid.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    pos = np.stack([trajectory.imag, trajectory.real], axis=-1)  # (N, 2) as (row, col)
    pos = pos - pos.mean(axis=0)
    half = (size - 1) / 2
    extent = np.abs(pos).max()
    if extent > half:
        pos *= half / extent
    pos = np.clip(pos + half, 0, size - 1)
    base = np.minimum(np.floor(pos), size - 2).astype(np.int64)
    frac = pos - base
    kernel = np.zeros(size * size)
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
        kernel += np.bincount((base[:, 0] + dr) * size + base[:, 1] + dc, weight, minlength=size * size)
    return (kernel / kernel.sum()).reshape(size, size).astype(np.float32)


def random_kernel(
    rng: np.random.Generator,
    size: int,
    length: float | None = None,
    anxiety: float | None = None,
    num_steps: int = NUM_STEPS,
) -> np.ndarray:
    """Camera-shake kernel (size, size) float32, >= 0, sum 1; `size` odd >= 3.

    `length` (path length in pixels) defaults to U(0.5, 2) * (size - 1) and `anxiety` to
    U(0, 0.01), about DeblurGAN's range (above 0.02 most paths curl into small blobs). Paths
    that would leave the grid are shrunk to fit, so smooth ones fill it and shaky ones stay compact.
    """
    if length is None:
        length = rng.uniform(0.5, 2.0) * (size - 1)
    if anxiety is None:
        anxiety = rng.uniform(0.0, 0.01)
    return rasterize_trajectory(random_trajectory(rng, length, anxiety, num_steps), size)


# ---------------------------------------------------------------------------------------------
# Blurring
# ---------------------------------------------------------------------------------------------


def _blur_stack(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolves (H, W, C) with each of (n, kh, kw), reflect boundary: (n, H, W, C) float32."""
    if image.ndim != 3 or kernels.ndim != 3:
        raise ValueError(f"expected image (H, W, C), kernels (n, kh, kw); got {image.shape}, {kernels.shape}")
    kh, kw = kernels.shape[1:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sides must be odd, got {kernels.shape[1:]}")
    h, w = image.shape[:2]
    padded = np.pad(np.asarray(image, np.float32), ((kh // 2,) * 2, (kw // 2,) * 2, (0, 0)), mode="reflect")
    # Circular convolution of the padded image is exact on the 'valid' window, so no extra zeros.
    shape = tuple(sp_fft.next_fast_len(n, real=True) for n in padded.shape[:2])
    image_f = sp_fft.rfft2(padded, shape, axes=(0, 1))
    kernels_f = sp_fft.rfft2(np.asarray(kernels, np.float32), shape, axes=(1, 2))
    full = sp_fft.irfft2(image_f[None] * kernels_f[..., None], shape, axes=(1, 2))
    return full[:, kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]


def uniform_blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolves each channel of (H, W, C) with kernel (kh, kw) (odd sides): (H, W, C) float32.

    A true convolution (the kernel is flipped, as in scipy.ndimage.convolve) with 'same' output
    size and the boundary mirrored about the edge pixels (numpy 'reflect', torch ReflectionPad2d).
    """
    return _blur_stack(image, np.asarray(kernel)[None])[0]


def region_weights(height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """Smooth partition of unity (gh, gw, height, width) float32 over a gh x gw grid of regions.

    Region (a, b) weighs 1 at its centre and falls to 0 at the neighbouring centres with a
    raised cosine (C1-smooth, unlike bilinear hats); the weights sum to 1 at every pixel.
    """

    def axis_weights(n: int, length: int) -> np.ndarray:
        weights = np.zeros((n, length))
        if n == 1:
            return weights + 1
        spacing = length / n
        u = np.clip((np.arange(length) + 0.5) / spacing - 0.5, 0, n - 1)  # position in centre units
        lower = np.minimum(np.floor(u), n - 2).astype(np.int64)
        t = u - lower
        cols = np.arange(length)
        weights[lower, cols] = np.cos(np.pi / 2 * t) ** 2
        weights[lower + 1, cols] = np.sin(np.pi / 2 * t) ** 2
        return weights

    gh, gw = grid
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    rows, cols = axis_weights(gh, height), axis_weights(gw, width)
    return (rows[:, None, :, None] * cols[None, :, None, :]).astype(np.float32)


def nonuniform_blur(image: np.ndarray, kernels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Spatially varying blur of (H, W, C) by kernels (gh, gw, kh, kw): (H, W, C) float32.

    The result is sum_r weights[r] * uniform_blur(image, kernels[r]), i.e. pixel p is blurred by
    the interpolated kernel sum_r weights[r, p] * kernels[r]. `weights` (gh, gw, H, W) defaults to
    `region_weights(H, W, (gh, gw))`; they should sum to 1 at every pixel.
    """
    kernels = np.asarray(kernels, np.float32)
    if kernels.ndim != 4:
        raise ValueError(f"kernels must be (gh, gw, kh, kw), got {kernels.shape}")
    gh, gw, kh, kw = kernels.shape
    if weights is None:
        weights = region_weights(image.shape[0], image.shape[1], (gh, gw))
    if weights.shape != (gh, gw, *image.shape[:2]):
        raise ValueError(f"weights must be {(gh, gw, *image.shape[:2])}, got {weights.shape}")
    blurred = _blur_stack(image, kernels.reshape(gh * gw, kh, kw))
    return np.einsum("rhw,rhwc->hwc", weights.reshape(gh * gw, *image.shape[:2]), blurred)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Adds N(0, sigma^2) noise and clips to [0, 1]: same shape, float32."""
    noisy = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(noisy, 0.0, 1.0, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Sharp images
# ---------------------------------------------------------------------------------------------


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)  # drops alpha


@functools.lru_cache(maxsize=32)
def load_source(source: str, min_height: int, min_width: int) -> np.ndarray:
    """Read-only (H, W, 3) uint8 of "skimage:<name>" or an image file, upscaled to the minimum size."""
    from PIL import Image

    if source.startswith("skimage:"):
        import skimage.data

        image = Image.fromarray(_to_rgb_uint8(getattr(skimage.data, source.removeprefix("skimage:"))()))
    else:
        with Image.open(source) as opened:
            image = opened.convert("RGB")
    scale = max(min_height / image.height, min_width / image.width)
    if scale > 1:
        size = (max(min_width, round(image.width * scale)), max(min_height, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    array.flags.writeable = False  # shared through the cache
    return array


def image_sources(image_dir: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """Sharp-image sources per split: {'train': (...), 'val': (...), 'test': (...)}.

    Without `image_dir`: scikit-image's bundled photographs ("skimage:<name>"), a fixed subset
    held out for 'val' and 'test'. With it: every image (IMAGE_SUFFIXES) below the folder, about a quarter held
    out by a hash of the relative path (stable when files are added); folders too small for both
    sides share all images between the splits.
    """
    if image_dir is None:
        train = tuple(f"skimage:{name}" for name in SKIMAGE_TRAIN_IMAGES)
        held_out = tuple(f"skimage:{name}" for name in SKIMAGE_HELD_OUT_IMAGES)
    else:
        root = Path(image_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root}")
        # A cryptographic hash: CRCs of similar names (img_01, img_02, ...) share their low bits.
        held = [hashlib.sha256(p.relative_to(root).as_posix().encode()).digest()[0] % 4 == 0 for p in files]
        train = tuple(str(p) for p, h in zip(files, held, strict=True) if not h)
        held_out = tuple(str(p) for p, h in zip(files, held, strict=True) if h)
        if not train or not held_out:
            warnings.warn(
                f"{root}: {len(files)} images are too few to hold some out; all splits use all of them",
                stacklevel=2,
            )
            train = held_out = tuple(str(p) for p in files)
    return {"train": train, "val": held_out, "test": held_out}


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def _pair(values: Any, name: str, kind: type[int] | type[float]) -> tuple:
    """(lo, hi) of python ints/floats from a number or a pair of numbers (numpy ones included)."""
    pair = (values, values) if isinstance(values, numbers.Number) else tuple(values)
    abstract = numbers.Integral if kind is int else numbers.Real
    if len(pair) != 2 or not all(isinstance(v, abstract) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be a {kind.__name__} or a pair of them, got {values!r}")
    return tuple(kind(v) for v in pair)


@dataclasses.dataclass(frozen=True)
class SyntheticBlurConfig:
    """How synthetic pairs are made. Ranges are inclusive (lo, hi); a scalar means (v, v).

    Attributes:
      crop_size: (H, W) of the sharp/blurry crops.
      kernel_size_range: odd kernel support, drawn once per record (its regions share it); the
        kernels are zero-padded to the largest so that records stack into batches.
      length_range: trajectory length as a multiple of (kernel size - 1).
      anxiety_range: Boracchi-Foi shake intensity in [0, 1].
      nonuniform_prob: probability that a record is blurred non-uniformly over `grid`.
      grid: (gh, gw) regions of a non-uniform blur, each with its own kernel.
      noise_sigma_range: std of the Gaussian noise added to the blurry image (pixels in [0, 1]).
      seed: root seed; records depend only on (seed, split, index).
      split: one of SPLITS; 'val' and 'test' use held-out images and their own kernel streams.
      num_examples: dataset length.
      image_dir: folder of sharp images (IMAGE_SUFFIXES); None uses scikit-image's bundled photographs.
    """

    crop_size: tuple[int, int] = (256, 256)
    kernel_size_range: tuple[int, int] = (9, 31)
    length_range: tuple[float, float] = (0.5, 2.0)
    anxiety_range: tuple[float, float] = (0.0, 0.01)
    nonuniform_prob: float = 0.3
    grid: tuple[int, int] = (3, 3)
    noise_sigma_range: tuple[float, float] = (0.0, 0.01)
    seed: int = 0
    split: str = "train"
    num_examples: int = 1000
    image_dir: str | None = None

    def __post_init__(self):
        for name, kind in (
            ("crop_size", int),
            ("kernel_size_range", int),
            ("length_range", float),
            ("anxiety_range", float),
            ("grid", int),
            ("noise_sigma_range", float),
        ):
            object.__setattr__(self, name, _pair(getattr(self, name), name, kind))
        if min(self.crop_size) < 1 or min(self.grid) < 1:
            raise ValueError(f"crop_size and grid must be positive, got {self.crop_size}, {self.grid}")
        lo, hi = self.kernel_size_range
        if lo % 2 == 0 or hi % 2 == 0 or not 3 <= lo <= hi:
            raise ValueError(f"kernel_size_range must be odd, 3 <= lo <= hi; got {self.kernel_size_range}")
        for name in ("length_range", "anxiety_range", "noise_sigma_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}")
        if self.anxiety_range[1] > 1:
            raise ValueError(f"anxiety_range must lie in [0, 1], got {self.anxiety_range}")
        if not 0 <= self.nonuniform_prob <= 1:
            raise ValueError(f"nonuniform_prob must be in [0, 1], got {self.nonuniform_prob}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.num_examples < 0 or self.seed < 0:
            raise ValueError(f"num_examples and seed must be >= 0, got {self.num_examples}, {self.seed}")

    @property
    def kernel_size(self) -> int:
        """Side of the (zero-padded) kernels in every record."""
        return self.kernel_size_range[1]


class SyntheticPairs:
    """Random-access synthetic pairs: `len(ds)`, `ds[i] -> record`, deterministic per (seed, split, i).

    A record is a dict of numpy arrays:
      sharp: (H, W, 3) float32 in [0, 1], a randomly flipped crop of a sharp image;
      blurry: (H, W, 3) float32 in [0, 1], sharp blurred, plus noise, clipped;
      kernel: (gh, gw, K, K) float32, each >= 0 with sum 1; pixel p was blurred by
        sum_r region_weights(H, W, grid)[r, p] * kernel[r] (all equal for a uniform blur);
      uniform: bool scalar; noise_sigma: float32 scalar.
    The blur sees the image around the crop, not a mirrored border. Kernel random streams of
    different splits are disjoint, and 'val'/'test' crop only held-out images.
    """

    def __init__(self, config: SyntheticBlurConfig | None = None, split: str | None = None, num: int | None = None):
        config = config or SyntheticBlurConfig()
        overrides = {k: v for k, v in (("split", split), ("num_examples", num)) if v is not None}
        self.config = dataclasses.replace(config, **overrides)
        self.sources = image_sources(self.config.image_dir)[self.config.split]

    def __len__(self) -> int:
        return self.config.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        cfg = self.config
        # One SeedSequence per record, keyed by split and index: independent of access order, and the
        # kernel stream of one split never reappears in another.
        record_seq = np.random.SeedSequence(cfg.seed, spawn_key=(_SPLIT_CODE[cfg.split], index))
        kernel_seq, image_seq = record_seq.spawn(2)
        kernel_rng, image_rng = np.random.default_rng(kernel_seq), np.random.default_rng(image_seq)

        kernels, uniform = self._kernels(kernel_rng)
        (h, w), pad = cfg.crop_size, cfg.kernel_size // 2
        # Crop with a margin of half a kernel so the blur uses the real surroundings.
        source = load_source(self.sources[image_rng.integers(len(self.sources))], h + 2 * pad, w + 2 * pad)
        top = image_rng.integers(source.shape[0] - h - 2 * pad + 1)
        left = image_rng.integers(source.shape[1] - w - 2 * pad + 1)
        window = source[top : top + h + 2 * pad, left : left + w + 2 * pad]
        if image_rng.uniform() < 0.5:
            window = window[:, ::-1]
        if image_rng.uniform() < 0.5:
            window = window[::-1]
        window = window.astype(np.float32) / 255.0

        if uniform:
            blurred = uniform_blur(window, kernels[0, 0])
        else:
            # Only the weights inside the crop matter; the margin's outputs are cut away.
            margin = ((0, 0), (0, 0), (pad, pad), (pad, pad))
            weights = np.pad(region_weights(h, w, cfg.grid), margin, mode="edge")
            blurred = nonuniform_blur(window, kernels, weights)
        sigma = np.float32(image_rng.uniform(*cfg.noise_sigma_range))
        crop = (slice(pad, pad + h), slice(pad, pad + w))
        return {
            "sharp": np.ascontiguousarray(window[crop]),
            "blurry": add_noise(blurred[crop], sigma, image_rng),
            "kernel": kernels,
            "uniform": np.bool_(uniform),
            "noise_sigma": sigma,
        }

    def _kernels(self, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """(gh, gw, K, K) kernels of one record, and whether they are all the same."""
        cfg = self.config
        uniform = bool(rng.uniform() >= cfg.nonuniform_prob)
        lo, hi = cfg.kernel_size_range
        size = 2 * int(rng.integers(lo // 2, hi // 2 + 1)) + 1
        count = 1 if uniform else cfg.grid[0] * cfg.grid[1]
        kernels = np.stack(
            [
                random_kernel(
                    rng,
                    size,
                    length=rng.uniform(*cfg.length_range) * (size - 1),
                    anxiety=rng.uniform(*cfg.anxiety_range),
                )
                for _ in range(count)
            ]
        )
        border = (cfg.kernel_size - size) // 2
        kernels = np.pad(kernels, ((0, 0), (border, border), (border, border)))
        drawn = kernels.reshape(*((1, 1) if uniform else cfg.grid), cfg.kernel_size, cfg.kernel_size)
        shape = (*cfg.grid, cfg.kernel_size, cfg.kernel_size)
        return np.ascontiguousarray(np.broadcast_to(drawn, shape)), uniform


def synthetic_pairs(
    config: SyntheticBlurConfig | None = None, split: str | None = None, num: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Records 0..num-1 of a split in order (see `SyntheticPairs`); split/num override the config."""
    dataset = SyntheticPairs(config, split, num)  # built now, so a bad config fails here
    return (dataset[index] for index in range(len(dataset)))


# ---------------------------------------------------------------------------------------------
# Paired folders
# ---------------------------------------------------------------------------------------------


def write_paired_folders(
    dataset: Sequence[dict[str, np.ndarray]],
    root: str | os.PathLike,
    blurry_dir: str = "blur",
    sharp_dir: str = "sharp",
    frames_per_seq: int = 100,
) -> list[str]:
    """Writes records as 8-bit PNGs in the reference's paired-folder layout; returns their keys.

    Record i goes to root/<blurry_dir>/<seq>/<name>.png and root/<sharp_dir>/<seq>/<name>.png with
    seq = f"{i // frames_per_seq:03d}" and name = f"{i % frames_per_seq:08d}" (the layout of the
    reference's regrouped GOPRO folders); keys are "<seq>_<name>" as in its meta_info.pkl.
    """
    if frames_per_seq < 1:
        raise ValueError(f"frames_per_seq must be >= 1, got {frames_per_seq}")
    root, keys = Path(root), []
    for index in range(len(dataset)):
        record = dataset[index]
        seq, name = f"{index // frames_per_seq:03d}", f"{index % frames_per_seq:08d}"
        write_png(root / blurry_dir / seq / f"{name}.png", to_uint8(record["blurry"]))
        write_png(root / sharp_dir / seq / f"{name}.png", to_uint8(record["sharp"]))
        keys.append(f"{seq}_{name}")
    return keys
