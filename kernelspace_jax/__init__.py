"""kernelspace-jax: learned blur-kernel spaces and blind deblurring in JAX.

import kernelspace_jax as ksj
model = ksj.load("GOPRO_wVAE.pth")            # or an Orbax folder written by this package
mean, sigma = model.extract(sharp, blurry)    # G: (B, H, W, 3) x2 -> (B, h, w, kernel_dim) x2
blurry_again = model.blur(sharp, mean)        # F: (B, H, W, 3), kernel -> (B, H, W, 3)
"""

from kernelspace_jax.kernel_space.checkpoints import load, save
from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.model import (
    MIN_SIDE,
    KernelSpaceModel,
    blur,
    extract,
    init,
    init_params,
    kernel_shape,
    padded_size,
    sample,
)

__all__ = [
    "MIN_SIDE",
    "KernelSpaceConfig",
    "KernelSpaceModel",
    "blur",
    "extract",
    "init",
    "init_params",
    "kernel_shape",
    "load",
    "padded_size",
    "sample",
    "save",
]
