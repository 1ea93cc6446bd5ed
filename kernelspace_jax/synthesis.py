"""Blur synthesis in a kernel space: transfer a pair's blur, sample new blur, walk between kernels.

    from kernelspace_jax import synthesis
    blurry, kernel = synthesis.transfer(model, key, source_sharp, source_blurry, target_sharp)
    blurry, kernel = synthesis.sample(model, key, sharp)                # VAE models: k ~ N(0, 1.2^2)
    path = synthesis.interpolate(kernel_a, kernel_b, 8, "spherical")    # (8, *kernel_a.shape)
    bank = synthesis.build_bank(model, pairs, batch_size=8, crop=256)   # G over a dataset, once
    synthesis.save_bank(bank, "bank.npz"); bank = synthesis.load_bank("bank.npz", model)
    augment = synthesis.make_augmentation(model, bank)                  # or bank=None: the prior
    blurry = augment(key, sharp)                                        # inside your jitted step

Images are NHWC floats in [0, 1] of any size with sides >= 32; kernels are (B, h, w, kernel_dim) as
`model.kernel_shape` gives them. Synthesised images are clipped to [0, 1] (F's output is not).

Randomness comes only from `key`: one PRNG key for the batch, or a (B,) array of keys, one per image;
with per-image keys image i depends on keys[i] alone, not on the batch it is in. One key is split
into B per-image keys, so `f(key, x)` equals `f(jax.random.split(key, B), x)`.

A kernel extracted at one image size is applied to another by `fit_kernel`: the (h, w) grid of
latent cells, one per 128x128 pixels, is resized bilinearly to the target's grid, so a blur that
varies over the source frame varies the same way over the target frame, and each cell's blur (in
pixels) is kept; G is not run again on a resized pair, which would rescale the blur. On held-out
non-uniform synthetic blurs with true PSFs standing in for the cells, resizing reproduces the
target's blur best (37.8 dB, against 36.6 for the spatial mean and 35.3 for tiling the grid;
`python benchmarks/synthesis.py --fit-check`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm import tqdm

from kernelspace_jax import xla_options
from kernelspace_jax.model import MIN_SIDE, KernelSpaceModel

DEFAULT_SCALE = 1.2  # std of the prior samples, as the reference's generate_blur.py
FIT_METHODS = ("resize", "tile", "mean")
INTERPOLATIONS = ("linear", "spherical")
BANK_FORMAT = "kernelspace_jax.kernel_bank/1"


# ---------------------------------------------------------------------------------------------
# Keys and kernels
# ---------------------------------------------------------------------------------------------


def image_keys(key: jax.Array, batch: int) -> jax.Array:
    """(B,) per-image keys from one key (split) or from B keys (returned as they are).

    Accepts typed keys (`jax.random.key`) and raw uint32 ones (`jax.random.PRNGKey`).
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    single_ndim = 0 if typed else 1
    if key.ndim == single_ndim:
        return jax.random.split(key, batch)
    if key.ndim != single_ndim + 1 or key.shape[0] != batch:
        raise ValueError(f"key must be one PRNG key or {batch} of them (one per image), got shape {key.shape}")
    return key


def _normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """(B, *shape) standard normal float32, row i from keys[i]."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def fit_kernel(kernel: jax.Array, grid: tuple[int, int], method: str = "resize") -> jax.Array:
    """Kernels (B, h, w, C) -> (B, *grid, C) for an image of another size.

    method: 'resize' (bilinear, antialiased when shrinking: the default, see the module doc),
    'tile' (the grid repeated, then cut) or 'mean' (the spatial mean everywhere, a uniform blur).
    Returns `kernel` itself when the grid already fits.
    """
    if method not in FIT_METHODS:
        raise ValueError(f"fit method must be one of {FIT_METHODS}, got {method!r}")
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be (batch, h, w, kernel_dim), got shape {kernel.shape}")
    batch, height, width, channels = kernel.shape
    grid = tuple(int(g) for g in grid)
    if grid == (height, width):
        return kernel
    if method == "resize":
        return jax.image.resize(kernel, (batch, *grid, channels), "linear", antialias=True)
    if method == "tile":
        reps = (1, math.ceil(grid[0] / height), math.ceil(grid[1] / width), 1)
        return jnp.tile(kernel, reps)[:, : grid[0], : grid[1]]
    return jnp.broadcast_to(kernel.mean(axis=(1, 2), keepdims=True), (batch, *grid, channels))


def _check_sharp(name: str, images: jax.Array) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name} must be (batch, height, width, 3), got {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if min(shape[1:3]) < MIN_SIDE:
        raise ValueError(f"{name} is {shape[1]}x{shape[2]}; both sides must be at least {MIN_SIDE}")


def _require_vae(model: KernelSpaceModel, what: str) -> None:
    if not model.config.use_vae:
        raise ValueError(
            f"{what} needs a VAE model (config.use_vae=True), whose kernels are distributed as N(0, 1); "
            "this model has no VAE. Transfer kernels from pairs instead (a kernel bank)."
        )


@xla_options.jit(static_argnames="fit")
def apply_kernel(model: KernelSpaceModel, sharp: jax.Array, kernel: jax.Array, fit: str = "resize") -> jax.Array:
    """F(sharp, kernel fitted to sharp's grid), clipped: (B, H, W, 3) in [0, 1]. Jitted.

    kernel: (B, h, w, kernel_dim) of any grid (see `fit_kernel`).
    """
    _check_sharp("sharp", sharp)
    grid = model.kernel_shape(*sharp.shape[1:3])[:2]
    return jnp.clip(model.blur(sharp, fit_kernel(kernel, grid, fit)), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Transfer, sampling, interpolation
# ---------------------------------------------------------------------------------------------


def transfer(
    model: KernelSpaceModel,
    key: jax.Array,
    source_sharp: jax.Array,
    source_blurry: jax.Array,
    target_sharp: jax.Array,
    fit: str = "resize",
) -> tuple[jax.Array, jax.Array]:
    """The blur of each source pair applied to the target image of the same batch index.

    k = mean + sigma * eps with (mean, sigma) = G(source_sharp, source_blurry), eps ~ N(0, 1)
    (k = mean without a VAE); returns (F(target_sharp, k fitted to the target) clipped to [0, 1],
    (B, Ht, Wt, 3); k, (B, *model.kernel_shape(Hs, Ws))). F(source_sharp, k) is the reference's
    check of k: `apply_kernel(model, source_sharp, k)` should be close to source_blurry.

    source_sharp, source_blurry: (B, Hs, Ws, 3) in [0, 1]; target_sharp: (B, Ht, Wt, 3) in [0, 1].
    """
    _check_sharp("target_sharp", target_sharp)
    _check_sharp("source_sharp", source_sharp)
    if source_sharp.shape[0] != target_sharp.shape[0]:
        raise ValueError(
            f"source and target batches differ: {source_sharp.shape[0]} source pairs for "
            f"{target_sharp.shape[0]} target images (repeat the sources with jnp.repeat to share them)"
        )
    mean, sigma = model.extract(source_sharp, source_blurry)
    kernel = mean + sigma * _normal(image_keys(key, mean.shape[0]), mean.shape[1:])
    return apply_kernel(model, target_sharp, kernel, fit), kernel


def prior_kernels(
    model: KernelSpaceModel, key: jax.Array, batch: int, height: int, width: int, scale: float = DEFAULT_SCALE
) -> jax.Array:
    """Kernels ~ N(0, scale^2) for `batch` images of height x width: (B, *model.kernel_shape(H, W)).

    VAE models only (raises ValueError otherwise).
    """
    _require_vae(model, "sampling kernels from the prior")
    return scale * _normal(image_keys(key, batch), model.kernel_shape(height, width))


def sample(
    model: KernelSpaceModel, key: jax.Array, sharp: jax.Array, scale: float = DEFAULT_SCALE
) -> tuple[jax.Array, jax.Array]:
    """New blur for each image from the VAE prior: (F(sharp, k) clipped to [0, 1], k).

    sharp: (B, H, W, 3) in [0, 1]; k ~ N(0, scale^2), (B, *model.kernel_shape(H, W)); scale 1.2 as the
    reference. VAE models only: a model without a VAE raises ValueError.
    """
    _check_sharp("sharp", sharp)
    kernel = prior_kernels(model, key, *sharp.shape[:3], scale=scale)
    return apply_kernel(model, sharp, kernel), kernel


def interpolate(kernel_a: jax.Array, kernel_b: jax.Array, num: int, method: str = "linear") -> jax.Array:
    """`num` kernels from kernel_a to kernel_b (both included): (num, *kernel_a.shape).

    method: 'linear' ((1 - t) a + t b), or 'spherical' (slerp of each kernel as one vector: the
    angle is interpolated, and the norm too when they differ); prefer 'spherical' between prior
    samples, whose norms concentrate near scale * sqrt(size) where straight lines pass inside.
    Kernels of any shape (..., h, w, C); each (h, w, C) block is one vector.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation method must be one of {INTERPOLATIONS}, got {method!r}")
    if num < 2:
        raise ValueError(f"num must be at least 2 (the two ends), got {num}")
    if kernel_a.shape != kernel_b.shape or kernel_a.ndim < 3:
        raise ValueError(
            f"kernels must have one shape (..., h, w, kernel_dim), got {kernel_a.shape} and {kernel_b.shape}"
        )
    t = jnp.linspace(0.0, 1.0, num, dtype=jnp.float32).reshape(num, *([1] * kernel_a.ndim))
    if method == "linear":
        return (1 - t) * kernel_a + t * kernel_b
    axes = (-3, -2, -1)
    norm_a = jnp.sqrt(jnp.sum(kernel_a**2, axis=axes, keepdims=True))
    norm_b = jnp.sqrt(jnp.sum(kernel_b**2, axis=axes, keepdims=True))
    unit_a = kernel_a / jnp.maximum(norm_a, 1e-12)
    unit_b = kernel_b / jnp.maximum(norm_b, 1e-12)
    cos = jnp.clip(jnp.sum(unit_a * unit_b, axis=axes, keepdims=True), -1.0, 1.0)
    angle = jnp.arccos(cos)
    sin = jnp.sin(angle)
    # Nearly parallel directions: slerp's weights tend to the linear ones (and sin -> 0 would divide).
    parallel = sin < 1e-6
    safe_sin = jnp.where(parallel, 1.0, sin)
    weight_a = jnp.where(parallel, 1 - t, jnp.sin((1 - t) * angle) / safe_sin)
    weight_b = jnp.where(parallel, t, jnp.sin(t * angle) / safe_sin)
    direction = weight_a * unit_a + weight_b * unit_b
    direction = direction / jnp.maximum(jnp.sqrt(jnp.sum(direction**2, axis=axes, keepdims=True)), 1e-12)
    return direction * ((1 - t) * norm_a + t * norm_b)


# ---------------------------------------------------------------------------------------------
# Kernel bank
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelBank:
    """The kernels G finds in a paired dataset, extracted once (host numpy arrays).

    Attributes:
      mean, sigma: (N, h, w, kernel_dim) float32 (sigma is zeros without a VAE).
      ids: (N,) str, the source records' ids.
      psnr: (N,) float32, PSNR (dB) of F(x, k) clipped against y, k = mean + sigma * eps with eps from
        (seed, record index): the reference's reconstruction log; identity_psnr: of x against y.
      image_size: (H, W) of the images the kernels were extracted from.
      fingerprint: `model_fingerprint` of the model that extracted them.
      meta: what built it (source, crop, seed, ...), JSON-able.
    """

    mean: np.ndarray
    sigma: np.ndarray
    ids: np.ndarray
    psnr: np.ndarray
    identity_psnr: np.ndarray
    image_size: tuple[int, int]
    fingerprint: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        if n == 0:
            raise ValueError("a kernel bank needs at least one kernel; the source had no pairs")
        if self.mean.ndim != 4 or self.mean.shape != self.sigma.shape or self.mean.shape[0] != n:
            raise ValueError(
                f"bank mean and sigma must both be (N={n}, h, w, kernel_dim), got {self.mean.shape} "
                f"and {self.sigma.shape}"
            )
        if self.psnr.shape != (n,) or self.identity_psnr.shape != (n,):
            raise ValueError(f"bank psnr and identity_psnr must be ({n},)")

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, name: str) -> int:
        """The position of a record id, or of a decimal index given as a string."""
        matches = np.flatnonzero(self.ids == name)
        if matches.size:
            return int(matches[0])
        if name.lstrip("-").isdigit() and -len(self) <= int(name) < len(self):
            return int(name) % len(self)
        raise KeyError(f"no kernel with id or index {name!r} in the bank ({len(self)} kernels)")


def model_fingerprint(model: KernelSpaceModel) -> str:
    """A short hash of the model's configuration and parameters (kernels only mean something to it)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(model.params):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()[:16]


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


@xla_options.jit
def _extract_step(model: KernelSpaceModel, keys: jax.Array, sharp: jax.Array, blurry: jax.Array):
    """G's (mean, sigma) and the kernel mean + sigma * eps of each pair, eps from keys[i]."""
    mean, sigma = model.extract(sharp, blurry)
    return mean, sigma, mean + sigma * _normal(keys, mean.shape[1:])


def _psnr(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(B,) PSNR in dB of images in [0, 1] against references, as dm_pix.psnr."""
    mse = np.mean((images.astype(np.float64) - references) ** 2, axis=(1, 2, 3))
    return (-10 * np.log10(np.maximum(mse, 1e-20))).astype(np.float32)


def build_bank(
    model: KernelSpaceModel,
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    crop: int | None = None,
    seed: int = 0,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> KernelBank:
    """Runs G over every pair of `source` once (batched, jitted) and keeps the kernels with their ids.

    source: random-access records with 'sharp' and 'blurry' (H, W, 3), uint8 or floats in [0, 1], and
    optionally 'id' (e.g. `evaluate.open_source(...)`, a TFDS data source, `SyntheticPairs`).
    crop: centre-crop side; without it all pairs must share one size. The reparameterisation noise of
    the logged reconstruction comes from (seed, record index).
    """
    base = jax.random.key(seed)
    parts: dict[str, list] = {"mean": [], "sigma": [], "psnr": [], "identity_psnr": [], "ids": []}
    size = None
    with tqdm(total=len(source), desc="bank", unit="pair", disable=not progress) as bar:
        for batch in pair_batches(source, batch_size, crop):
            size = size or batch["sharp"].shape[1:3]
            if batch["sharp"].shape[1:3] != size:
                raise ValueError(
                    f"pairs of different sizes ({size} and {batch['sharp'].shape[1:3]}); a bank needs one "
                    "size: pass a crop"
                )
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(batch["index"])
            mean, sigma, kernel = _extract_step(model, keys, batch["sharp"], batch["blurry"])
            reconstruction = np.asarray(apply_kernel(model, batch["sharp"], kernel))
            valid = batch["valid"]
            out = {
                "mean": mean,
                "sigma": sigma,
                "psnr": _psnr(reconstruction, batch["blurry"]),
                "identity_psnr": _psnr(batch["sharp"], batch["blurry"]),
            }
            for name, value in out.items():
                parts[name].append(np.asarray(value, np.float32)[valid])
            parts["ids"] += [i for i, ok in zip(batch["ids"], valid, strict=True) if ok]
            bar.update(int(valid.sum()))
    return KernelBank(
        mean=np.concatenate(parts["mean"]),
        sigma=np.concatenate(parts["sigma"]),
        ids=np.asarray(parts["ids"], dtype=str),
        psnr=np.concatenate(parts["psnr"]),
        identity_psnr=np.concatenate(parts["identity_psnr"]),
        image_size=(int(size[0]), int(size[1])),
        fingerprint=model_fingerprint(model),
        meta={"crop": crop, "seed": seed, **(meta or {})},
    )


def save_bank(bank: KernelBank, path: str | os.PathLike) -> None:
    """Writes the bank to one .npz file atomically (readers see the old file or the whole new one)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    header = {
        "format": BANK_FORMAT,
        "image_size": list(bank.image_size),
        "fingerprint": bank.fingerprint,
        "meta": bank.meta,
    }
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(
                file,
                mean=bank.mean,
                sigma=bank.sigma,
                ids=bank.ids,
                psnr=bank.psnr,
                identity_psnr=bank.identity_psnr,
                header=np.asarray(json.dumps(header)),
            )
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_bank(path: str | os.PathLike, model: KernelSpaceModel | None = None) -> KernelBank:
    """Reads a bank written by `save_bank`; with `model`, checks that this model extracted it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no kernel bank at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in ("mean", "sigma", "ids", "psnr", "identity_psnr")}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is not a kernel bank written by save_bank: {error}") from None
    if header.get("format") != BANK_FORMAT:
        raise ValueError(f"{path}: unknown bank format {header.get('format')!r}, expected {BANK_FORMAT!r}")
    bank = KernelBank(
        **arrays,
        image_size=tuple(header["image_size"]),
        fingerprint=header["fingerprint"],
        meta=header["meta"],
    )
    if model is not None:
        check_bank(bank, model)
    return bank


def check_bank(bank: KernelBank, model: KernelSpaceModel) -> None:
    """Raises ValueError unless `model` is the one whose G filled the bank."""
    if bank.mean.shape[-1] != model.config.kernel_dim:
        raise ValueError(
            f"the bank's kernels have {bank.mean.shape[-1]} channels, the model's kernel_dim is "
            f"{model.config.kernel_dim}: it was built with another model"
        )
    if bank.fingerprint != model_fingerprint(model):
        raise ValueError(
            f"the bank was built by another model (fingerprint {bank.fingerprint}, this model's is "
            f"{model_fingerprint(model)}); its kernels only mean something to that model: rebuild it"
        )


def bank_indices(keys: jax.Array, size: int) -> jax.Array:
    """(B,) int32 bank entries drawn uniformly, entry i from keys[i] (as `Augmentation` draws them)."""
    return jax.vmap(lambda k: jax.random.randint(jax.random.split(k)[0], (), 0, size))(keys)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


class Augmentation(struct.PyTreeNode):
    """Random blur for a batch of sharp images: `augment(key, sharp) -> blurry`, jit/vmap/grad-safe.

    A pytree: pass it into your jitted step as an argument (closing over it would embed the model
    and the bank in the compiled program as constants). Kernels come from the bank, mean + sigma *
    eps of a uniformly drawn entry fitted to the image's grid, or without a bank from the VAE prior
    N(0, scale^2).
    """

    model: KernelSpaceModel
    mean: jax.Array | None = None
    sigma: jax.Array | None = None
    scale: float = struct.field(pytree_node=False, default=DEFAULT_SCALE)
    fit: str = struct.field(pytree_node=False, default="resize")

    def kernels(self, key: jax.Array, batch: int, height: int, width: int) -> tuple[jax.Array, jax.Array]:
        """(kernels (B, *model.kernel_shape(H, W)), bank entries (B,) int32, -1 for prior samples)."""
        keys = image_keys(key, batch)
        if self.mean is None:
            return prior_kernels(self.model, keys, batch, height, width, self.scale), jnp.full(batch, -1, jnp.int32)
        index = bank_indices(keys, self.mean.shape[0])
        # The second half of each image's key: bank_indices used the first for the entry.
        eps = _normal(jax.vmap(lambda k: jax.random.split(k)[1])(keys), self.mean.shape[1:])
        kernel = self.mean[index] + self.sigma[index] * eps
        return fit_kernel(kernel, self.model.kernel_shape(height, width)[:2], self.fit), index

    def __call__(self, key: jax.Array, sharp: jax.Array) -> jax.Array:
        """sharp (B, H, W, 3) in [0, 1] -> blurry (B, H, W, 3) in [0, 1]."""
        _check_sharp("sharp", sharp)
        kernel, _ = self.kernels(key, *sharp.shape[:3])
        return apply_kernel(self.model, sharp, kernel, fit=self.fit)


def make_augmentation(
    model: KernelSpaceModel, bank: KernelBank | None = None, scale: float = DEFAULT_SCALE, fit: str = "resize"
) -> Augmentation:
    """An `Augmentation` drawing kernels from `bank` (built by this model) or, with none, from the prior.

    The prior needs a VAE model (ValueError otherwise); `scale` is its std, `fit` how bank kernels
    meet other image sizes (see `fit_kernel`).
    """
    if fit not in FIT_METHODS:
        raise ValueError(f"fit method must be one of {FIT_METHODS}, got {fit!r}")
    if bank is None:
        _require_vae(model, "sampling kernels from the prior (no kernel bank given)")
        return Augmentation(model, scale=scale, fit=fit)
    check_bank(bank, model)
    return Augmentation(model, jnp.asarray(bank.mean), jnp.asarray(bank.sigma), scale=scale, fit=fit)


__all__ = [
    "DEFAULT_SCALE",
    "Augmentation",
    "KernelBank",
    "apply_kernel",
    "bank_indices",
    "build_bank",
    "center_crop",
    "check_bank",
    "fit_kernel",
    "image_keys",
    "interpolate",
    "load_bank",
    "make_augmentation",
    "model_fingerprint",
    "pair_batches",
    "prior_kernels",
    "read_pair",
    "sample",
    "save_bank",
    "transfer",
]
