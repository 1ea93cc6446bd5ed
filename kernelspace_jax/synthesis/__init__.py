"""Blur synthesis in a kernel space: transfer a pair's blur, sample new blur, walk between kernels.

    from kernelspace_jax import synthesis
    blurry, kernel = synthesis.transfer(model, key, source_sharp, source_blurry, target_sharp)
    blurry, kernel = synthesis.sample(model, key, sharp)                # VAE models: k ~ N(0, 1.2^2)
    path = synthesis.interpolate(kernel_a, kernel_b, 8, method="spherical")   # (8, *kernel_a.shape)
    bank = synthesis.build_bank(model, pairs, batch_size=8, crop=256)   # G over a dataset, once
    synthesis.save_bank(bank, "bank.npz"); bank = synthesis.load_bank("bank.npz", model=model)
    augment = synthesis.make_augmentation(model, bank=bank)             # or no bank: the VAE prior
    blurry = augment(key, sharp)                                        # inside your jitted step

Images are NHWC floats in [0, 1] of any size with sides >= 32; kernels are (B, h, w, kernel_dim) as
`model.kernel_shape` gives them. Synthesised images are clipped to [0, 1] (F's output is not).

Randomness comes only from `key`: one PRNG key for the batch, or a (B,) array of keys, one per image;
with per-image keys image i depends on keys[i] alone, not on the batch it is in. One key is split
into B per-image keys, so `f(key, x)` equals `f(jax.random.split(key, B), x)`.

A kernel extracted at one image size meets another by `fit_kernel` (kernels.py says how).
"""

from kernelspace_jax.kernel_space.inputs import image_keys
from kernelspace_jax.synthesis.augmentation import Augmentation, make_augmentation
from kernelspace_jax.synthesis.bank import (
    KernelBank,
    bank_indices,
    build_bank,
    check_bank,
    load_bank,
    model_fingerprint,
    save_bank,
)
from kernelspace_jax.synthesis.kernels import (
    DEFAULT_SCALE,
    FIT_METHODS,
    INTERPOLATIONS,
    apply_kernel,
    fit_kernel,
    interpolate,
    prior_kernels,
    sample,
    transfer,
)

__all__ = [
    "DEFAULT_SCALE",
    "FIT_METHODS",
    "INTERPOLATIONS",
    "Augmentation",
    "KernelBank",
    "apply_kernel",
    "bank_indices",
    "build_bank",
    "check_bank",
    "fit_kernel",
    "image_keys",
    "interpolate",
    "load_bank",
    "make_augmentation",
    "model_fingerprint",
    "prior_kernels",
    "sample",
    "save_bank",
    "transfer",
]
