"""The kernel-space network: G(x, y) -> k extracts a blur kernel, F(x, k) -> y blurs with it.

Mirrors `models/kernel_encoding/kernel_wizard.py` of the reference (its class names in brackets).
The modules work on padded sizes: both sides multiples of 128, at least 256 when G has ResNet
blocks (`model.padded_size`; `model.py` pads).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.models.layers import (
    Dtype,
    ReflectResnetBlock,
    ResidualBlock,
    conv,
    leaky_relu,
    pixel_shuffle,
    reflect_pad,
    up_conv,
)

UNET_DEPTH = 5  # stride-2 levels of F's adapter; G also downsamples 5 times


class FeatureExtractor(nn.Module):
    """Shared image encoder [`KernelWizard.feature_extractor`]: (B, H, W, 3) -> (B, H/4, W/4, nf)."""

    nf: int
    blocks: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image: jax.Array) -> jax.Array:
        act = leaky_relu(0.1)
        x = act(conv(self.nf, dtype=self.dtype, name="conv_0")(image))
        x = act(conv(self.nf, stride=2, dtype=self.dtype, name="conv_1")(x))
        x = act(conv(self.nf, stride=2, dtype=self.dtype, name="conv_2")(x))
        for i in range(self.blocks):
            x = ResidualBlock(self.nf, dtype=self.dtype, name=f"block_{i}")(x)
        return x


class KernelExtractor(nn.Module):
    """G's head [`KernelExtractor`]: (features of x, features of y) -> latent (B, H/128, W/128, out).

    `out` is kernel_dim, or 2 * kernel_dim with a VAE (mean then sigma). No conv has a bias
    (the reference's norm 'none' turns biases off).
    """

    nf: int
    out_channels: int
    blocks: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, sharp_features: jax.Array, blurry_features: jax.Array) -> jax.Array:
        x = jnp.concatenate([sharp_features, blurry_features], axis=-1)
        x = nn.relu(conv(self.nf, 7, padding=0, use_bias=False, dtype=self.dtype, name="conv_in")(reflect_pad(x, 3)))
        for i in range(UNET_DEPTH):
            width = min(self.nf * 2 ** (i + 1), self.out_channels)
            x = nn.relu(conv(width, stride=2, use_bias=False, dtype=self.dtype, name=f"down_{i}")(x))
        for i in range(self.blocks):
            x = ReflectResnetBlock(self.out_channels, dtype=self.dtype, name=f"block_{i}")(x)
        return x


class KernelAdapter(nn.Module):
    """F's U-Net [`KernelAdapter` of `UnetSkipConnectionBlock`s], kernel injected at the bottleneck.

    (B, H/4, W/4, nf), kernel (B, H/128, W/128, 8nf) -> (B, H/4, W/4, nf). Level 0 is the outermost.
    Only the outermost up-conv has a bias; each inner level returns concat(up, its input).
    """

    nf: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, kernel: jax.Array) -> jax.Array:
        widths = [self.nf, self.nf, 2 * self.nf, 4 * self.nf, 8 * self.nf, 8 * self.nf]  # outer..inner
        skips = []
        x = features
        for level in range(UNET_DEPTH):
            if level > 0:
                x = leaky_relu(0.2)(x)
            skips.append(x)
            x = conv(widths[level + 1], 4, stride=2, use_bias=False, dtype=self.dtype, name=f"down_{level}")(x)
        x = jnp.concatenate([x, kernel.astype(x.dtype)], axis=-1)
        for level in reversed(range(UNET_DEPTH)):
            outermost = level == 0
            x = up_conv(widths[level], use_bias=outermost, dtype=self.dtype, name=f"up_{level}")(nn.relu(x))
            x = jnp.tanh(x) if outermost else jnp.concatenate([x, skips[level]], axis=-1)
        return x


class ReconstructionTrunk(nn.Module):
    """F's decoder [`KernelWizard.recon_trunk`]: (B, H/4, W/4, nf) -> residual (B, H, W, 3).

    The two full-resolution stages are `hr_width` wide; the reference hard-codes 64 (4 * 64 before the
    second pixel shuffle), whatever nf is.
    """

    nf: int
    blocks: int
    image_channels: int = 3
    hr_width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, sharp: jax.Array | None = None) -> jax.Array:
        act = leaky_relu(0.1)
        for i in range(self.blocks):
            x = ResidualBlock(self.nf, dtype=self.dtype, name=f"block_{i}")(x)
        x = act(pixel_shuffle(conv(4 * self.nf, dtype=self.dtype, name="upconv_0")(x), 2))
        x = act(pixel_shuffle(conv(4 * self.hr_width, dtype=self.dtype, name="upconv_1")(x), 2))
        if sharp is not None:
            x = jnp.concatenate([x, sharp.astype(x.dtype)], axis=-1)
        x = act(conv(self.hr_width, dtype=self.dtype, name="conv_hr")(x))
        return conv(self.image_channels, dtype=self.dtype, name="conv_out")(x)


class KernelSpaceNetwork(nn.Module):
    """F and G in one parameter tree [`KernelWizard`]; one tree matches one reference checkpoint.

    Inputs are images in [0, 1], (B, H, W, C), H and W as `model.padded_size` gives them.
    """

    config: KernelSpaceConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.features = FeatureExtractor(cfg.nf, cfg.front_blocks, dtype=self.dtype)
        self.extractor = KernelExtractor(cfg.nf, cfg.latent_channels, cfg.extractor_blocks, dtype=self.dtype)
        self.adapter = KernelAdapter(cfg.nf, dtype=self.dtype)
        self.reconstruction = ReconstructionTrunk(
            cfg.nf, cfg.back_blocks, cfg.image_channels, cfg.hr_width, dtype=self.dtype
        )

    def extract(self, sharp: jax.Array, blurry: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G [`KernelWizard.forward`]: -> (mean, sigma), each (B, H/128, W/128, kernel_dim).

        sigma is used raw, as in the reference (it may be negative); zeros without a VAE.
        """
        return self._latent(*self._both_features(sharp, blurry))

    def blur(self, sharp: jax.Array, kernel: jax.Array) -> jax.Array:
        """F [`KernelWizard.adaptKernel`]: sharp + residual, (B, H, W, C), not clamped."""
        return self._blur_features(self.features(sharp), sharp, kernel)

    def reblur(self, sharp: jax.Array, blurry: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """F(x, mean + sigma * eps) with (mean, sigma) = G(x, y): the training objective's forward pass.

        Returns (F's output (B, H, W, C), mean, sigma). The numbers of `blur` after `extract` (the
        reference's two calls), but the features of `sharp` are computed once for both networks.
        """
        sharp_features, blurry_features = self._both_features(sharp, blurry)
        mean, sigma = self._latent(sharp_features, blurry_features)
        return self._blur_features(sharp_features, sharp, mean + sigma * eps), mean, sigma

    def _both_features(self, sharp: jax.Array, blurry: jax.Array) -> tuple[jax.Array, jax.Array]:
        both = self.features(jnp.concatenate([sharp, blurry], axis=0))
        return tuple(jnp.split(both, 2, axis=0))

    def _latent(self, sharp_features: jax.Array, blurry_features: jax.Array) -> tuple[jax.Array, jax.Array]:
        latent = self.extractor(sharp_features, blurry_features).astype(jnp.float32)
        if self.config.use_vae:
            return tuple(jnp.split(latent, 2, axis=-1))
        return latent, jnp.zeros_like(latent)

    def _blur_features(self, sharp_features: jax.Array, sharp: jax.Array, kernel: jax.Array) -> jax.Array:
        skip = sharp if self.config.sharp_skip else None
        residual = self.reconstruction(self.adapter(sharp_features, kernel), skip)
        return sharp + residual.astype(sharp.dtype)

    def __call__(self, sharp: jax.Array, blurry: jax.Array) -> jax.Array:
        """F(x, mean of G(x, y)); touches every parameter, so it serves `init`."""
        mean, _ = self.extract(sharp, blurry)
        return self.blur(sharp, mean)
