"""Building blocks shared by the networks, written to match PyTorch's layers exactly (NHWC)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

Dtype = Any


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """`nn.ReflectionPad2d(pad)` on (B, H, W, C)."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """`nn.PixelShuffle(factor)` in NHWC: (B, H, W, C*r*r) -> (B, H*r, W*r, C).

    PyTorch maps input channel c*r*r + i*r + j to output channel c at (h*r + i, w*r + j).
    """
    return rearrange(x, "b h w (c i j) -> b (h i) (w j) c", i=factor, j=factor)


def leaky_relu(slope: float):
    return lambda x: nn.leaky_relu(x, negative_slope=slope)


def conv(features: int, kernel: int = 3, stride: int = 1, padding: int = 1, use_bias: bool = True,
         dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """`nn.Conv2d(in, features, kernel, stride, padding)` with zero padding; NHWC, HWIO kernel."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def up_conv(features: int, use_bias: bool = True, dtype: Dtype = jnp.float32,
            name: str | None = None) -> nn.ConvTranspose:
    """`nn.ConvTranspose2d(in, features, 4, stride=2, padding=1)`: doubles H and W.

    The kernel is stored as (4, 4, features, in), so PyTorch's (in, out, kH, kW) weight maps to it by the
    same transpose as a Conv2d weight; `transpose_kernel=True` then computes what PyTorch computes. A
    stride-2 transposed conv with PyTorch padding p pads the dilated input by kernel - 1 - p = 2.
    """
    return nn.ConvTranspose(
        features,
        (4, 4),
        strides=(2, 2),
        padding=((2, 2), (2, 2)),
        transpose_kernel=True,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ResidualBlock(nn.Module):
    """`ResidualBlock_noBN`: x + conv(ReLU(conv(x))), 3x3 convs with bias."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(self.features, dtype=self.dtype, name="conv1")(x)
        y = conv(self.features, dtype=self.dtype, name="conv2")(nn.relu(y))
        return x + y


class ReflectResnetBlock(nn.Module):
    """`ResnetBlock` with reflect padding and no norm: x + [pad conv ReLU pad conv]."""

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv3 = lambda name: conv(self.features, padding=0, use_bias=self.use_bias, dtype=self.dtype, name=name)
        y = nn.relu(conv3("conv1")(reflect_pad(x, 1)))
        y = conv3("conv2")(reflect_pad(y, 1))
        return x + y
