"""Public, pure-functional API of F and G: any image size, checked inputs, a pytree model object.

Images are NHWC floats in [0, 1]: (B, H, W, 3) with H, W >= MIN_SIDE. The networks need sides that
are multiples of 128 and at least 256, so images are reflect-padded at the bottom and right up to
`padded_size(config, H, W)` and outputs are cropped back. A latent kernel for an (H, W) image has the
shape `kernel_shape(config, H, W)` = (ceil'(H/128), ceil'(W/128), kernel_dim), ceil' at least 2 (at
least 1 for a G without ResNet blocks, whose reflect padding is what needs two cells).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.inputs import MIN_SIDE, check_images, pad_to
from kernelspace_jax.models import torch_init
from kernelspace_jax.models.kernel_space import KernelSpaceNetwork

Params = Any
KERNEL_STRIDE = 128  # pixels per kernel cell: 2 stride-2 convs in the features, 5 in G / the U-Net


def min_cells(config: KernelSpaceConfig) -> int:
    """Kernel cells per side at least: G's ResNet blocks reflect-pad its output by 1, which needs 2."""
    return 2 if config.extractor_blocks else 1


def padded_size(config: KernelSpaceConfig, height: int, width: int) -> tuple[int, int]:
    """The size the networks run at: multiples of 128, at least 128 * min_cells(config) (256 as released)."""
    cells = min_cells(config)
    return tuple(max(cells, math.ceil(s / KERNEL_STRIDE)) * KERNEL_STRIDE for s in (height, width))


def kernel_shape(config: KernelSpaceConfig, height: int, width: int) -> tuple[int, int, int]:
    """Shape of one latent kernel (no batch axis) for an image of height x width."""
    ph, pw = padded_size(config, height, width)
    return ph // KERNEL_STRIDE, pw // KERNEL_STRIDE, config.kernel_dim


def _check_kernel(config: KernelSpaceConfig, kernel: jax.Array, image: jax.Array) -> None:
    expected = (image.shape[0], *kernel_shape(config, *image.shape[1:3]))
    if getattr(kernel, "shape", None) != expected:
        raise ValueError(
            f"kernel for a batch of {image.shape[1]}x{image.shape[2]} images must have shape {expected} "
            f"(batch, H/128, W/128 rounded up (min 2), kernel_dim); got {getattr(kernel, 'shape', kernel)}"
        )
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise TypeError(f"kernel must be floating point, got {kernel.dtype}")


def _check_pair(config: KernelSpaceConfig, sharp: jax.Array, blurry: jax.Array) -> None:
    check_images("sharp", sharp, channels=config.image_channels)
    check_images("blurry", blurry, channels=config.image_channels)
    if sharp.shape != blurry.shape:
        raise ValueError(f"sharp and blurry must have the same shape, got {sharp.shape} and {blurry.shape}")


def network(config: KernelSpaceConfig, dtype=jnp.float32) -> KernelSpaceNetwork:
    """The Flax module for `config`, computing in `dtype` (parameters stay float32)."""
    return KernelSpaceNetwork(config, dtype=dtype)


def extract(
    params: Params, sharp: jax.Array, blurry: jax.Array, *, config: KernelSpaceConfig, dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """G(x, y): the latent kernel of the blur between `sharp` and `blurry`.

    Args:
      params: the parameter tree of `KernelSpaceNetwork(config)` (the `params` collection).
      sharp, blurry: (B, H, W, C) floats in [0, 1], the same shape.
    Returns:
      (mean, sigma), each (B, *kernel_shape(config, H, W)) float32; sigma is zeros without a VAE.
    """
    _check_pair(config, sharp, blurry)
    return _compiled_extract(params, sharp, blurry, config=config, dtype=dtype)


def blur(
    params: Params, sharp: jax.Array, kernel: jax.Array, *, config: KernelSpaceConfig, dtype=jnp.float32
) -> jax.Array:
    """F(x, k): blurs `sharp` (B, H, W, C) in [0, 1] with latent kernels (B, *kernel_shape(config, H, W)).

    Returns (B, H, W, C) in the dtype of `sharp`; not clamped (as in the reference).
    """
    check_images("sharp", sharp, channels=config.image_channels)
    _check_kernel(config, kernel, sharp)
    return _compiled_blur(params, sharp, kernel, config=config, dtype=dtype)


def reblur(
    params: Params,
    sharp: jax.Array,
    blurry: jax.Array,
    eps: jax.Array,
    *,
    config: KernelSpaceConfig,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """F(x, mean + sigma * eps) with (mean, sigma) = G(x, y), as the training objective uses them.

    The numbers of `blur(params, sharp, mean + sigma * eps)` after `extract(params, sharp, blurry)`,
    with the feature extractor run once on `sharp` for both networks (about 15% of a training step).

    Args:
      sharp, blurry: (B, H, W, C) floats in [0, 1], the same shape. eps: (B, *kernel_shape(config, H, W)).
    Returns:
      (F's output (B, H, W, C) in the dtype of `sharp`, mean, sigma), mean and sigma as `extract` returns.
    """
    _check_pair(config, sharp, blurry)
    _check_kernel(config, eps, sharp)
    return _compiled_reblur(params, sharp, blurry, eps, config=config, dtype=dtype)


# Checked above, compiled below: called outside jit (a notebook, a test), F and G run as one XLA
# program per shape instead of op by op (much faster than eager dispatch); inside a user's jit they inline.
@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _compiled_extract(params, sharp, blurry, *, config, dtype):
    net = network(config, dtype)
    size = padded_size(config, *sharp.shape[1:3])
    return net.apply({"params": params}, pad_to(sharp, size), pad_to(blurry, size), method=KernelSpaceNetwork.extract)


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _compiled_blur(params, sharp, kernel, *, config, dtype):
    height, width = sharp.shape[1:3]
    padded = pad_to(sharp, padded_size(config, height, width))
    out = network(config, dtype).apply({"params": params}, padded, kernel, method=KernelSpaceNetwork.blur)
    return out[:, :height, :width]


@functools.partial(jax.jit, static_argnames=("config", "dtype"))
def _compiled_reblur(params, sharp, blurry, eps, *, config, dtype):
    height, width = sharp.shape[1:3]
    size = padded_size(config, height, width)
    out, mean, sigma = network(config, dtype).apply(
        {"params": params}, pad_to(sharp, size), pad_to(blurry, size), eps, method=KernelSpaceNetwork.reblur
    )
    return out[:, :height, :width], mean, sigma


def sample(key: jax.Array, mean: jax.Array, sigma: jax.Array) -> jax.Array:
    """Reparameterised kernel mean + sigma * eps, eps ~ N(0, 1) (equal to `mean` without a VAE)."""
    chex.assert_equal_shape([mean, sigma])
    return mean + sigma * jax.random.normal(key, mean.shape, mean.dtype)


def abstract_params(config: KernelSpaceConfig) -> Params:
    """The parameter tree of `config` as jax.ShapeDtypeStructs (nothing is computed)."""
    size = KERNEL_STRIDE * min_cells(config)
    dummy = jax.ShapeDtypeStruct((1, size, size, config.image_channels), jnp.float32)
    variables = jax.eval_shape(network(config).init, jax.random.key(0), dummy, dummy)
    return variables["params"]


INIT_SCHEMES = ("reference", "kaiming")


def _init_rule(abstract: Params, scheme: str):
    kernels = torch_init.kernel_shapes(abstract)

    def rule(path, shape):
        # ResidualBlock_noBN re-initialises its convs: kaiming-normal (fan_in) x 0.1, zero bias.
        if path[0] in ("features", "reconstruction") and path[1].startswith("block_"):
            if path[-1] == "bias":
                return "constant", 0.0
            return "normal", 0.1 * math.sqrt(2.0 / torch_init.fan_in(shape))
        if scheme == "kaiming" and path[-1] == "kernel":
            gain = 0.1 if path[-2] == "conv_out" else 1.0  # F's last conv: F starts near the identity
            return "normal", gain * math.sqrt(2.0 / torch_init.fan_in(shape))
        return torch_init.conv_default(path, shape, kernels)

    return rule


def init_params(key: jax.Array, config: KernelSpaceConfig, *, scheme: str = "reference") -> Params:
    """Fresh float32 parameters for `config`.

    "reference": as the reference initialises `KernelWizard`: PyTorch defaults (weights and biases
    ~ U(+-1/sqrt(fan_in))), except the residual blocks: kaiming-normal weights x 0.1 and zero biases.
    F then starts close to the identity, but also nearly blind to its kernel: each default-initialised
    layer shrinks activations ~2.5x, and the kernel enters F at the bottom of its U-Net, so at the
    start |F(x, k) - F(x, 0)| is ~1e-9 (synthetic_tiny) and G's output ~1e-4.
    "kaiming" (an extension): the other weights kaiming-normal (fan_in), F's last conv x 0.1, so F
    still starts near the identity (|F(x, k) - x| ~ 0.02) but responds to k (~1e-3), and G's output is
    O(0.1). With an oracle kernel code, F learns to use it within ~500 steps from this init.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    abstract = abstract_params(config)
    return torch_init.draw(abstract, key, _init_rule(abstract, scheme))


class KernelSpaceModel(struct.PyTreeNode):
    """F and G with their parameters: a pytree (params are leaves, config is static).

    Passes through `jax.jit`, `jax.vmap` and `jax.grad` like any pytree. Images are (B, H, W, C)
    floats in [0, 1] of any size with sides >= MIN_SIDE; kernels are (B, *self.kernel_shape(H, W)).
    """

    params: Params
    config: KernelSpaceConfig = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False, default=jnp.float32)

    def extract(self, sharp: jax.Array, blurry: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G: (mean, sigma) of the kernel that blurs `sharp` into `blurry`."""
        return extract(self.params, sharp, blurry, config=self.config, dtype=self.dtype)

    def blur(self, sharp: jax.Array, kernel: jax.Array) -> jax.Array:
        """F: `sharp` blurred by `kernel`."""
        return blur(self.params, sharp, kernel, config=self.config, dtype=self.dtype)

    def reblur(self, sharp: jax.Array, blurry: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(F(x, mean + sigma * eps), mean, sigma) with (mean, sigma) = G(x, y), x's features computed once."""
        return reblur(self.params, sharp, blurry, eps, config=self.config, dtype=self.dtype)

    def kernel_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(h, w, kernel_dim) of one kernel for a height x width image."""
        return kernel_shape(self.config, height, width)

    def sample(self, key: jax.Array, mean: jax.Array, sigma: jax.Array) -> jax.Array:
        """mean + sigma * N(0, 1)."""
        return sample(key, mean, sigma)

    def with_dtype(self, dtype) -> KernelSpaceModel:
        """The same model computing in `dtype` (e.g. jnp.bfloat16); parameters stay float32."""
        return self.replace(dtype=dtype)

    def num_params(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.params))


def init(key: jax.Array, config: KernelSpaceConfig | Any, *, dtype=jnp.float32) -> KernelSpaceModel:
    """A freshly initialised model; `config` may be a KernelSpaceConfig or a dict / ConfigDict."""
    if not isinstance(config, KernelSpaceConfig):
        config = KernelSpaceConfig.from_dict(config)
    return KernelSpaceModel(init_params(key, config), config, dtype)


__all__ = [
    "MIN_SIDE",
    "KernelSpaceModel",
    "abstract_params",
    "blur",
    "extract",
    "init",
    "init_params",
    "kernel_shape",
    "network",
    "padded_size",
    "sample",
]
