"""Random blur as data augmentation: `make_augmentation(model, bank=bank)(key, sharp) -> blurry`, a pytree for
jitted training steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from kernelspace_jax.kernel_space.inputs import check_images, image_keys
from kernelspace_jax.kernel_space.model import KernelSpaceModel
from kernelspace_jax.synthesis.bank import KernelBank, bank_indices, check_bank
from kernelspace_jax.synthesis.kernels import (
    DEFAULT_SCALE,
    FIT_METHODS,
    _normal,
    _require_vae,
    apply_kernel,
    fit_kernel,
    prior_kernels,
)


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
            return prior_kernels(self.model, keys, batch, height, width, scale=self.scale), jnp.full(
                batch, -1, jnp.int32
            )
        index = bank_indices(keys, self.mean.shape[0])
        # The second half of each image's key: bank_indices used the first for the entry.
        eps = _normal(jax.vmap(lambda k: jax.random.split(k)[1])(keys), self.mean.shape[1:])
        kernel = self.mean[index] + self.sigma[index] * eps
        return fit_kernel(kernel, self.model.kernel_shape(height, width)[:2], method=self.fit), index

    def __call__(self, key: jax.Array, sharp: jax.Array) -> jax.Array:
        """sharp (B, H, W, 3) in [0, 1] -> blurry (B, H, W, 3) in [0, 1]."""
        check_images("sharp", sharp)
        kernel, _ = self.kernels(key, *sharp.shape[:3])
        return apply_kernel(self.model, sharp, kernel, fit=self.fit)


def make_augmentation(
    model: KernelSpaceModel, *, bank: KernelBank | None = None, scale: float = DEFAULT_SCALE, fit: str = "resize"
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
    check_bank(model, bank)
    return Augmentation(model, jnp.asarray(bank.mean), jnp.asarray(bank.sigma), scale=scale, fit=fit)
