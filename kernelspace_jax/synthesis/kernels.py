"""Kernels in a kernel space: fitting a kernel grid to another image size, applying F,
transferring a pair's blur, sampling the VAE prior, interpolating between kernels.

A kernel extracted at one image size is applied to another by `fit_kernel`: the (h, w) grid of
latent cells, one per 128x128 pixels, is resized bilinearly to the target's grid, so a blur that
varies over the source frame varies the same way over the target frame, and each cell's blur (in
pixels) is kept; G is not run again on a resized pair, which would rescale the blur. On held-out
non-uniform synthetic blurs with true PSFs standing in for the cells, resizing reproduces the
target's blur better than the spatial mean or tiling the grid (`python benchmarks/synthesis.py
--fit-check`; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from kernelspace_jax import xla_options
from kernelspace_jax.kernel_space.inputs import check_images, image_keys
from kernelspace_jax.kernel_space.model import KernelSpaceModel

DEFAULT_SCALE = 1.2  # std of the prior samples, as the reference's generate_blur.py


FIT_METHODS = ("resize", "tile", "mean")


INTERPOLATIONS = ("linear", "spherical")


def _normal(keys: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """(B, *shape) standard normal float32, row i from keys[i]."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def fit_kernel(kernel: jax.Array, grid: tuple[int, int], *, method: str = "resize") -> jax.Array:
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


def _require_vae(model: KernelSpaceModel, what: str) -> None:
    if not model.config.use_vae:
        raise ValueError(
            f"{what} needs a VAE model (config.use_vae=True), whose kernels are distributed as N(0, 1); "
            "this model has no VAE. Transfer kernels from pairs instead (a kernel bank)."
        )


@xla_options.jit(static_argnames="fit")
def apply_kernel(model: KernelSpaceModel, sharp: jax.Array, kernel: jax.Array, *, fit: str = "resize") -> jax.Array:
    """F(sharp, kernel fitted to sharp's grid), clipped: (B, H, W, 3) in [0, 1]. Jitted.

    kernel: (B, h, w, kernel_dim) of any grid (see `fit_kernel`).
    """
    check_images("sharp", sharp)
    grid = model.kernel_shape(*sharp.shape[1:3])[:2]
    return jnp.clip(model.blur(sharp, fit_kernel(kernel, grid, method=fit)), 0.0, 1.0)


def transfer(
    model: KernelSpaceModel,
    key: jax.Array,
    source_sharp: jax.Array,
    source_blurry: jax.Array,
    target_sharp: jax.Array,
    *,
    fit: str = "resize",
) -> tuple[jax.Array, jax.Array]:
    """The blur of each source pair applied to the target image of the same batch index.

    k = mean + sigma * eps with (mean, sigma) = G(source_sharp, source_blurry), eps ~ N(0, 1)
    (k = mean without a VAE); returns (F(target_sharp, k fitted to the target) clipped to [0, 1],
    (B, Ht, Wt, 3); k, (B, *model.kernel_shape(Hs, Ws))). F(source_sharp, k) is the reference's
    check of k: `apply_kernel(model, source_sharp, k)` should be close to source_blurry.

    source_sharp, source_blurry: (B, Hs, Ws, 3) in [0, 1]; target_sharp: (B, Ht, Wt, 3) in [0, 1].
    """
    check_images("target_sharp", target_sharp)
    check_images("source_sharp", source_sharp)
    if source_sharp.shape[0] != target_sharp.shape[0]:
        raise ValueError(
            f"source and target batches differ: {source_sharp.shape[0]} source pairs for "
            f"{target_sharp.shape[0]} target images (repeat the sources with jnp.repeat to share them)"
        )
    mean, sigma = model.extract(source_sharp, source_blurry)
    kernel = mean + sigma * _normal(image_keys(key, mean.shape[0]), mean.shape[1:])
    return apply_kernel(model, target_sharp, kernel, fit=fit), kernel


def prior_kernels(
    model: KernelSpaceModel, key: jax.Array, batch: int, height: int, width: int, *, scale: float = DEFAULT_SCALE
) -> jax.Array:
    """Kernels ~ N(0, scale^2) for `batch` images of height x width: (B, *model.kernel_shape(H, W)).

    VAE models only (raises ValueError otherwise).
    """
    _require_vae(model, "sampling kernels from the prior")
    return scale * _normal(image_keys(key, batch), model.kernel_shape(height, width))


def sample(
    model: KernelSpaceModel, key: jax.Array, sharp: jax.Array, *, scale: float = DEFAULT_SCALE
) -> tuple[jax.Array, jax.Array]:
    """New blur for each image from the VAE prior: (F(sharp, k) clipped to [0, 1], k).

    sharp: (B, H, W, 3) in [0, 1]; k ~ N(0, scale^2), (B, *model.kernel_shape(H, W)); scale 1.2 as the
    reference. VAE models only: a model without a VAE raises ValueError.
    """
    check_images("sharp", sharp)
    kernel = prior_kernels(model, key, *sharp.shape[:3], scale=scale)
    return apply_kernel(model, sharp, kernel), kernel


def interpolate(kernel_a: jax.Array, kernel_b: jax.Array, num: int, *, method: str = "linear") -> jax.Array:
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
