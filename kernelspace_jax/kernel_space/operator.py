"""F as a forward operator for inverse problems: y = F(x, k) + noise, k from a Gaussian prior.

    op = kernelspace_jax.BlurOperator(ksj.load("GOPRO_wVAE.pth"))          # or dtype=jnp.bfloat16
    k = op.sample_kernel(key, x.shape, scale=1.2)    # k ~ N(0, scale^2 I): the DPS line of work's prior
    y = op(x, k)                                     # F(x, k): (B, H, W, 3), not clamped
    k_fit = op.extract(x, y)                         # G's kernel mean for a pair

A pytree (the model's parameters are its leaves), so it goes into `jax.jit`, `vmap`, `grad` and
`lax.scan` as an argument; gradients flow to x and k. docs/operator.md has a posterior-sampling loop.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from kernelspace_jax.kernel_space.model import KernelSpaceModel


class BlurOperator(struct.PyTreeNode):
    """The non-linear blur operator F of a kernel space, with its kernel prior and G.

    Images (B, H, W, 3) floats in [0, 1], H, W >= 32; kernels (B, *self.kernel_shape(H, W)).
    """

    model: KernelSpaceModel

    @classmethod
    def create(cls, model: KernelSpaceModel, *, dtype: Any = None) -> BlurOperator:
        """The operator of `model`, computing in `dtype` (default: the model's; parameters stay float32)."""
        return cls(model if dtype is None else model.with_dtype(dtype))

    def __call__(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """F(x, k): (B, H, W, 3), in x's dtype, not clamped."""
        return self.model.blur(x, kernel)

    def kernel_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(h, w, kernel_dim) of one kernel for a height x width image."""
        return self.model.kernel_shape(height, width)

    def sample_kernel(self, key: jax.Array, image_shape: tuple[int, ...], *, scale: float = 1.0) -> jax.Array:
        """Kernels ~ N(0, scale^2 I) for images of `image_shape` (B, H, W, C): (B, h, w, kernel_dim) float32.

        For a VAE model this is its prior (the reference samples at scale 1.2); DPS-style papers draw k
        this way for a non-linear blur problem.
        """
        batch, height, width = image_shape[:3]
        return scale * jax.random.normal(key, (batch, *self.kernel_shape(height, width)), jnp.float32)

    def extract(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """G's kernel mean for sharp x and blurry y, both (B, H, W, 3): (B, h, w, kernel_dim)."""
        return self.model.extract(x, y)[0]
