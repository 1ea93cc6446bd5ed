"""The StyleGAN2 prior of domain-specific deblurring: a generator and the Gaussian fit of its W space.

    prior = load_prior("stylegan2-ffhq-256.pt")   # rosinality checkpoint; fit cached beside it
    prior.generator, prior.variables              # models.stylegan2.Generator and its {"params"}
    prior.mean, prior.std                         # (style_dim,): DSD searches w with x = G(lrelu(w * std + mean))

The reference (`DSDStyleGAN2.initialize_mapping_network`) maps 1,000,000 z ~ N(0, 1) once with seed 0
and saves the mean and std of leaky_relu(mapping(z), 5) as gaussian_fit_stylegan2.pt; here the fit is
cached as <checkpoint>.gaussian_fit.npz, tied to the checkpoint's bytes by their SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from kernelspace_jax import xla_options
from kernelspace_jax.deblurring.stylegan2.checkpoints import load_stylegan2
from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.models.stylegan2 import Generator

FIT_SEED, FIT_BATCH = 0, 10_000  # the Gaussian fit: a fixed key, mapped this many z at a time
log = logging.getLogger(__name__)


class StyleGAN2Prior(struct.PyTreeNode):
    """A StyleGAN2 generator with the Gaussian fit of its W space (a pytree: pass it through jit).

    variables: {"params": ...} of `generator`; mean, std: (style_dim,) float32.
    """

    variables: Any
    mean: jax.Array
    std: jax.Array
    generator: Generator = struct.field(pytree_node=False)

    @property
    def size(self) -> int:
        return self.generator.size


def gaussian_fit(generator: Generator, params: Any, key: jax.Array, num_samples: int) -> dict[str, np.ndarray]:
    """Mean and std (unbiased) over z ~ N(0, 1) of leaky_relu(mapping(z), 5): {"mean", "std"}, (style_dim,).

    The slope 5 undoes the mapping's final leaky ReLU(0.2), so w is roughly Gaussian there. `params` is
    the generator's "params" collection; the z are drawn FIT_BATCH at a time from fold_in(key, i) and the
    batch moments merged in float64 (Chan et al.).
    """
    if num_samples < 2:
        raise ValueError(f"gaussian_fit needs num_samples >= 2, got {num_samples}")
    batch = min(FIT_BATCH, num_samples)

    @xla_options.jit
    def moments(params, i, count):
        z = jax.random.normal(jax.random.fold_in(key, i), (batch, generator.style_dim))
        w = generator.apply({"params": params}, z, method=Generator.get_latent)
        w = nn.leaky_relu(w, 5.0)
        mask = (jnp.arange(batch) < count)[:, None]
        mean = jnp.sum(jnp.where(mask, w, 0), axis=0) / count
        return mean, jnp.sum(jnp.where(mask, jnp.square(w - mean), 0), axis=0)

    total, mean, m2 = 0, np.zeros(generator.style_dim), np.zeros(generator.style_dim)
    for i, start in enumerate(range(0, num_samples, batch)):
        count = min(batch, num_samples - start)
        batch_mean, batch_m2 = (np.asarray(a, np.float64) for a in moments(params, np.int32(i), np.int32(count)))
        delta = batch_mean - mean
        mean = mean + delta * count / (total + count)
        m2 = m2 + batch_m2 + delta**2 * total * count / (total + count)
        total += count
    return {"mean": mean.astype(np.float32), "std": np.sqrt(m2 / (total - 1)).astype(np.float32)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gaussian_fit_cache_path(checkpoint: str | os.PathLike) -> Path:
    """Where `cached_gaussian_fit` keeps the fit of `checkpoint`: <checkpoint>.gaussian_fit.npz beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".gaussian_fit.npz")


def cached_gaussian_fit(
    checkpoint: str | os.PathLike,
    generator: Generator,
    params: Any,
    num_samples: int,
    echo: Callable[[str], None] = log.info,
) -> dict[str, np.ndarray]:
    """`gaussian_fit` with key(FIT_SEED), read from or written to `gaussian_fit_cache_path(checkpoint)`.

    The cache holds the checkpoint file's SHA-256 and num_samples; a file made for other bytes or another
    count is recomputed and replaced. An unwritable folder only costs the recomputation next time.
    """
    cache, digest = gaussian_fit_cache_path(checkpoint), _sha256(Path(checkpoint))
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                if str(stored["checkpoint_sha256"]) == digest and int(stored["num_samples"]) == num_samples:
                    return {"mean": stored["mean"], "std": stored["std"]}
        except (OSError, ValueError, KeyError) as error:
            echo(f"ignoring unreadable Gaussian fit cache {cache}: {error}")
    echo(f"fitting a Gaussian to the mapping network of {checkpoint} ({num_samples} samples; once, cached)")
    fit = gaussian_fit(generator, params, jax.random.key(FIT_SEED), num_samples)
    try:
        with atomic_write(cache) as file:
            np.savez(file, **fit, checkpoint_sha256=digest, num_samples=num_samples, seed=FIT_SEED)
    except OSError as error:
        echo(f"could not cache the Gaussian fit in {cache}: {error}")
    return fit


def load_prior(
    checkpoint: str | os.PathLike, *, num_samples: int = 1_000_000, echo: Callable[[str], None] = log.info
) -> StyleGAN2Prior:
    """A rosinality StyleGAN2 checkpoint (`load_stylegan2`; its errors are ValueErrors) with its cached fit."""
    loaded = load_stylegan2(checkpoint)
    params = loaded.variables["params"]
    fit = cached_gaussian_fit(checkpoint, loaded.generator, params, num_samples, echo)
    return StyleGAN2Prior({"params": params}, jnp.asarray(fit["mean"]), jnp.asarray(fit["std"]), loaded.generator)


__all__ = [
    "StyleGAN2Prior",
    "cached_gaussian_fit",
    "gaussian_fit",
    "gaussian_fit_cache_path",
    "load_prior",
]
