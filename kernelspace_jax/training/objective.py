"""The training objective of the kernel space (the reference's `ImageBaseModel.optimize_parameters`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.model import Params, reblur
from kernelspace_jax.training import losses


def kernel_space_loss(
    params: Params,
    sharp: jax.Array,
    blurry: jax.Array,
    eps: jax.Array,
    *,
    config: KernelSpaceConfig,
    pixel_weight: float = 1.0,
    kl_weight: float = 0.0,
    dtype=jnp.float32,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """pixel_weight * Charbonnier_sum(F(x, mean + sigma * eps), y) [+ kl_weight * KL_sum with a VAE],
    (mean, sigma) = G(x, y); computed by `reblur` (the features of x once for both networks).

    Args:
      sharp, blurry: (B, H, W, C) in [0, 1]. eps: N(0, 1) noise shaped like the kernel,
        (B, *kernel_shape(config, H, W)); it only matters with a VAE.
    Returns:
      (total, {"pixel": ..., "kl": ...}); sums over the batch, as in the reference.
    """
    fake, mean, sigma = reblur(params, sharp, blurry, eps, config=config, dtype=dtype)
    pixel = pixel_weight * losses.charbonnier_sum(fake, blurry)
    kl = kl_weight * losses.kl_divergence_sum(mean, sigma) if config.use_vae else jnp.zeros((), jnp.float32)
    return pixel + kl, {"pixel": pixel, "kl": kl}
