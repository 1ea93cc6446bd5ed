"""Losses of the reference, with its conventions (sums, not means, where it sums)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def charbonnier_sum(prediction: jax.Array, target: jax.Array, eps: float = 1e-6) -> jax.Array:
    """`CharbonnierLoss`: SUM over all elements of sqrt((prediction - target)^2 + eps); any equal shapes."""
    diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.sum(jnp.sqrt(diff * diff + eps))


def kl_divergence_sum(mean: jax.Array, sigma: jax.Array) -> jax.Array:
    """The reference's VAE term: SUM(mean^2 + sigma^2 - log(1e-8 + sigma^2) - 1), no 1/2; sigma used raw."""
    var = jnp.square(sigma.astype(jnp.float32))
    return jnp.sum(jnp.square(mean.astype(jnp.float32)) + var - jnp.log(1e-8 + var) - 1.0)
