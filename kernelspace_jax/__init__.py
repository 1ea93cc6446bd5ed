"""kernelspace-jax: learned blur-kernel spaces and blind deblurring in JAX.

    import jax, kernelspace_jax as ksj
    model = ksj.load("GOPRO_wVAE.pth")            # or ksj.load_shipped(), or an Orbax folder
    mean, sigma = model.extract(sharp, blurry)    # G: (B, H, W, 3) x2 -> (B, h, w, kernel_dim) x2
    blurry_again = model.blur(sharp, mean)        # F: (B, H, W, 3), kernel -> (B, H, W, 3)
    result = ksj.deblur(model, jax.random.key(0), blurry, config=ksj.configs.get("deblur_generic:fast"))

Argument order everywhere: models first, then the PRNG key, then arrays; options are keyword-only.
"""

from kernelspace_jax import xla_options

xla_options.set_process_flags()  # before anything starts jax's backends

from kernelspace_jax import configs, synthesis
from kernelspace_jax.assets import load_shipped
from kernelspace_jax.deblurring.dip import deblur
from kernelspace_jax.deblurring.engine import DeblurResult
from kernelspace_jax.deblurring.stylegan2.prior import load_prior as load_stylegan2_prior
from kernelspace_jax.deblurring.stylegan2.search import deblur_stylegan2
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
    reblur,
    sample,
)
from kernelspace_jax.kernel_space.operator import BlurOperator
from kernelspace_jax.synthesis import build_bank, interpolate, load_bank, make_augmentation, save_bank, transfer

__all__ = [
    "MIN_SIDE",
    "BlurOperator",
    "DeblurResult",
    "KernelSpaceConfig",
    "KernelSpaceModel",
    "blur",
    "build_bank",
    "configs",
    "deblur",
    "deblur_stylegan2",
    "extract",
    "init",
    "init_params",
    "interpolate",
    "kernel_shape",
    "load",
    "load_bank",
    "load_shipped",
    "load_stylegan2_prior",
    "make_augmentation",
    "padded_size",
    "reblur",
    "sample",
    "save",
    "save_bank",
    "synthesis",
    "transfer",
]
