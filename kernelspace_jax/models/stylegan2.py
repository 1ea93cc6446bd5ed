"""StyleGAN2 generator (rosinality's `stylegan2-pytorch`, as vendored in `models/dsd/stylegan2.py`), NHWC.

The prior of domain-specific deblurring. Parameters are stored raw, as in the reference: the
equalized-learning-rate scales are applied in the forward pass, so converted checkpoints need no
rescaling. Layout differences: images and noise are (B, H, W, C); conv weights are (k, k, in, out);
linear weights are (in, out).

    gen = Generator(size=256, style_dim=512, n_mlp=8)
    variables = init_generator(gen, jax.random.key(0))           # {'params', 'buffers'}
    w = gen.apply(variables, z, method=Generator.get_latent)     # (B, 512) -> (B, 512)
    image = gen.apply(variables, [w_plus], input_is_latent=True, noise=noise)  # (B, 256, 256, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from kernelspace_jax.models.layers import conv2d, conv2d_transpose

SQRT2 = math.sqrt(2.0)


def channel_widths(size: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """Feature widths at resolutions 4, 8, ..., size: the reference's table, continued past 1024."""
    log_size = _log2(size)
    return tuple(
        512 if res <= 32 else 16384 * channel_multiplier // res for res in (2**i for i in range(2, log_size + 1))
    )


def noise_shapes(size: int) -> list[tuple[int, int, int, int]]:
    """Shapes (1, R, R, 1) of the per-layer noise: R = 4, 8, 8, 16, 16, ..., size, size."""
    return [(1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), 1) for i in range(2 * _log2(size) - 3)]


def make_noise(key: jax.Array, size: int) -> list[jax.Array]:
    """A fresh standard-normal noise list for a `size` generator (the reference's `make_noise`)."""
    shapes = noise_shapes(size)
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, shape) for k, shape in zip(keys, shapes, strict=True)]


def _log2(size: int) -> int:
    log_size = int(size).bit_length() - 1
    if size < 4 or 2**log_size != size:
        raise ValueError(f"StyleGAN2 size must be a power of two >= 4, got {size}")
    return log_size


def make_kernel(taps: Sequence[float]) -> jax.Array:
    """The reference's `make_kernel`: outer product of a 1-D kernel, normalised to sum 1; (k, k)."""
    k = jnp.asarray(taps, jnp.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: jax.Array, kernel: jax.Array, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> jax.Array:
    """Upsample (zero insertion), pad, convolve with `kernel` per channel, downsample.

    x: (B, H, W, C), kernel: (kh, kw) -> (B, (H*up + pad0 + pad1 - kh) // down + 1, ..., C).
    Negative pads crop. Equals the reference's `upfirdn2d_native` (a true convolution: flipped kernel).
    A sum of kh * kw shifted slices: XLA fuses it, where a depthwise conv compiles and runs slowly on CPU.
    """
    kh, kw = kernel.shape
    p0, p1 = pad
    # interior padding puts up-1 zeros between samples; the reference also appends up-1 after the last one
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, ((0, 0, 0), (p0, p1 + up - 1, up - 1), (p0, p1 + up - 1, up - 1), (0, 0, 0)))
    out_h, out_w = (x.shape[1] - kh) // down + 1, (x.shape[2] - kw) // down + 1
    flipped = jnp.flip(kernel, (0, 1)).astype(x.dtype)
    return sum(
        flipped[a, b] * x[:, a : a + down * (out_h - 1) + 1 : down, b : b + down * (out_w - 1) + 1 : down]
        for a in range(kh)
        for b in range(kw)
    )


def fused_leaky_relu(x: jax.Array, bias: jax.Array) -> jax.Array:
    """`fused_leaky_relu`: leaky_relu(x + bias, 0.2) * sqrt(2), bias over the last axis."""
    return nn.leaky_relu(x + bias, 0.2) * SQRT2


def pixel_norm(x: jax.Array) -> jax.Array:
    """`PixelNorm` over the feature axis: (B, D) -> (B, D)."""
    return x * lax.rsqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-8)


class EqualLinear(nn.Module):
    """`EqualLinear`: (B, in) -> (B, features) with weight * lr_mul / sqrt(in) and bias * lr_mul."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_dim = x.shape[-1]
        init = lambda key, shape: jax.random.normal(key, shape) / self.lr_mul
        weight = self.param("weight", init, (in_dim, self.features))
        bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,)) * self.lr_mul
        out = x @ (weight * (self.lr_mul / math.sqrt(in_dim)))
        return fused_leaky_relu(out, bias) if self.activation else out + bias


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm, then `n_mlp` EqualLinear layers with fused leaky ReLU; (B, D) -> (B, D)."""

    style_dim: int
    n_mlp: int
    lr_mul: float = 0.01

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = pixel_norm(z)
        for i in range(1, self.n_mlp + 1):
            x = EqualLinear(self.style_dim, self.lr_mul, activation=True, name=f"linear_{i}")(x)
        return x


class ModulatedConv2d(nn.Module):
    """`ModulatedConv2d`: x (B, H, W, in), w (B, style_dim) -> (B, H', W', features).

    H' = H, or 2H with `upsample` (transposed stride-2 conv, then the [1,3,3,1] blur). Instead of the
    reference's per-sample grouped conv, the style scales the input channels and the demodulation scales
    the output channels of one shared conv; the two are equal since the conv is linear in both.
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        k, in_channels = self.kernel_size, x.shape[-1]
        weight = self.param("weight", nn.initializers.normal(1.0), (k, k, in_channels, self.features))
        weight = weight * (1 / math.sqrt(in_channels * k * k))
        style = EqualLinear(in_channels, bias_init=1.0, name="modulation")(w)  # (B, in)
        x = x * style[:, None, None, :]
        if self.upsample:
            # conv_transpose2d(stride 2, padding 0): the transpose of a stride-2 conv with in/out swapped
            size = (2 * (x.shape[1] - 1) + k, 2 * (x.shape[2] - 1) + k)
            out = conv2d_transpose(x, weight.transpose(0, 1, 3, 2), size, (2, 2), ((0, 0), (0, 0)))
            p = len(self.blur_kernel) - 2 - (k - 1)
            out = upfirdn2d(out, make_kernel(self.blur_kernel) * 4, pad=((p + 1) // 2 + 1, p // 2 + 1))
        else:
            out = conv2d(x, weight, (1, 1), ((k // 2, k // 2),) * 2)
        if self.demodulate:
            # sum over (i, kh, kw) of (weight * style)^2, for every (sample, output channel)
            demod = lax.rsqrt(style**2 @ jnp.sum(weight**2, axis=(0, 1)) + 1e-8)  # (B, out)
            out = out * demod[:, None, None, :]
        return out


class StyledConv(nn.Module):
    """Modulated 3x3 conv, noise injection, fused leaky ReLU: (B, H, W, in) -> (B, H', W', features).

    noise: (1 or B, H', W', 1), or None for fresh noise from the 'noise' RNG stream.
    """

    features: int
    upsample: bool = False
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, noise: jax.Array | None) -> jax.Array:
        out = ModulatedConv2d(self.features, 3, upsample=self.upsample, blur_kernel=self.blur_kernel, name="conv")(x, w)
        strength = self.param("noise_strength", nn.initializers.zeros, (1,))  # `noise.weight`
        if noise is None:
            noise = jax.random.normal(self.make_rng("noise"), (*out.shape[:3], 1), out.dtype)
        out = out + strength * noise
        bias = self.param("bias", nn.initializers.zeros, (self.features,))  # `activate.bias`
        return fused_leaky_relu(out, bias)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) plus bias, plus the upsampled previous skip.

    x: (B, H, W, C), w: (B, style_dim), skip: (B, H/2, W/2, 3) or None -> (B, H, W, 3).
    """

    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, skip: jax.Array | None = None) -> jax.Array:
        out = ModulatedConv2d(3, 1, demodulate=False, name="conv")(x, w)
        out = out + self.param("bias", nn.initializers.zeros, (1, 1, 1, 3))
        if skip is not None:
            p = len(self.blur_kernel) - 2
            kernel = make_kernel(self.blur_kernel) * 4
            out = out + upfirdn2d(skip, kernel, up=2, pad=((p + 1) // 2 + 1, p // 2))
        return out


class NoiseBuffers(nn.Module):
    """The reference's `noises.noise_i` buffers, in the 'buffers' collection; returns them as a list."""

    shapes: tuple[tuple[int, int, int, int], ...]

    @nn.compact
    def __call__(self) -> list[jax.Array]:
        # the initialiser runs only when the buffer is created, so `apply` needs no 'params' RNG
        init = lambda shape: jax.random.normal(self.make_rng("params"), shape)
        return [self.variable("buffers", f"noise_{i}", init, s).value for i, s in enumerate(self.shapes)]


class Generator(nn.Module):
    """StyleGAN2 `Generator`: styles -> (B, size, size, 3), raw output (not clamped or squashed).

    `channels` (widths at 4, 8, ..., size) overrides the table given by `channel_multiplier`.
    n_latent = 2 * log2(size) - 2 w vectors; 2 * log2(size) - 3 noise layers (see `noise_shapes`).
    """

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channels: tuple[int, ...] | None = None
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    lr_mlp: float = 0.01

    @property
    def log_size(self) -> int:
        return _log2(self.size)

    @property
    def n_latent(self) -> int:
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        return 2 * self.log_size - 3

    @property
    def widths(self) -> tuple[int, ...]:
        widths = self.channels or channel_widths(self.size, self.channel_multiplier)
        if len(widths) != self.log_size - 1:
            raise ValueError(f"channels needs {self.log_size - 1} widths (4 .. {self.size}), got {widths}")
        return tuple(widths)

    def setup(self):
        widths = self.widths
        self.style = MappingNetwork(self.style_dim, self.n_mlp, self.lr_mlp)
        self.input = self.param("input", nn.initializers.normal(1.0), (1, 4, 4, widths[0]))
        self.conv1 = StyledConv(widths[0], blur_kernel=self.blur_kernel)
        self.to_rgb1 = ToRGB(self.blur_kernel)
        self.convs = [
            StyledConv(width, upsample=up, blur_kernel=self.blur_kernel) for width in widths[1:] for up in (True, False)
        ]
        self.to_rgbs = [ToRGB(self.blur_kernel) for _ in widths[1:]]
        self.noises = NoiseBuffers(tuple(noise_shapes(self.size)))

    def get_latent(self, z: jax.Array) -> jax.Array:
        """The mapping network: z (B, style_dim) -> w (B, style_dim)."""
        return self.style(z)

    def synthesis(self, latent: jax.Array, noise: Sequence[jax.Array | None]) -> jax.Array:
        """latent (B, n_latent, style_dim), noise: num_layers arrays (1|B, R, R, 1) or None -> (B, S, S, 3).

        Latent use as the reference: conv1 <- w[0], to_rgb1 <- w[1]; at each higher resolution the
        up-conv shares its w with the previous ToRGB.
        """
        if latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"latent must be (B, {self.n_latent}, {self.style_dim}), got {latent.shape}")
        out = jnp.broadcast_to(self.input, (latent.shape[0], *self.input.shape[1:]))
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.convs[2 * j](out, latent[:, i], noise[i])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip

    def __call__(
        self,
        styles: Sequence[jax.Array],
        *,
        noise: Sequence[jax.Array | None] | None = None,
        input_is_latent: bool = False,
        randomize_noise: bool = True,
        truncation: float = 1.0,
        truncation_latent: jax.Array | None = None,
        inject_index: int | jax.Array | None = None,
        return_latents: bool = False,
    ):
        """The reference's `forward`: the image (B, size, size, 3), or (image, latent) if return_latents.

        styles: one or two arrays: z (B, style_dim), or w (B, style_dim) / w+ (B, n_latent, style_dim) with
          `input_is_latent`. Two styles mix at `inject_index` (drawn from the 'mixing' RNG when None).
        noise: at least num_layers arrays (1 or B, R, R, 1) as in `noise_shapes`; extra entries are
          ignored like the reference's zip does (DSD passes 14). None: fresh noise from the 'noise' RNG if
          `randomize_noise`, else the stored buffers.
        truncation_latent: (1 or B, style_dim), used when truncation < 1.
        """
        styles = [styles] if hasattr(styles, "shape") else list(styles)
        if not input_is_latent:
            styles = [self.get_latent(s) for s in styles]
        if noise is None:
            noise = self.noises() if not randomize_noise else [None] * self.num_layers
        elif len(noise) < self.num_layers:
            raise ValueError(f"noise needs {self.num_layers} entries for size {self.size}, got {len(noise)}")
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 1:
            latent = styles[0]
            if latent.ndim < 3:
                latent = jnp.repeat(latent[:, None], self.n_latent, axis=1)
        else:
            if inject_index is None:
                inject_index = jax.random.randint(self.make_rng("mixing"), (), 1, self.n_latent)
            first = jnp.arange(self.n_latent)[None, :, None] < inject_index
            latent = jnp.where(first, styles[0][:, None], styles[1][:, None])
        image = self.synthesis(latent, noise)
        return (image, latent) if return_latents else image


def init_generator(generator: Generator, key: jax.Array) -> dict:
    """Fresh variables {'params', 'buffers'} of `generator`, drawn like the reference's initialisation."""
    z = jnp.zeros((1, generator.style_dim), jnp.float32)
    return jax.jit(lambda key: generator.init({"params": key}, [z], randomize_noise=False))(key)
