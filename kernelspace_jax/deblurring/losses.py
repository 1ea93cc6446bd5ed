"""Losses of generic blind deblurring [`models/losses/` and `models/deblurring/joint_deblur.py`], NHWC.

Images are (B, H, W, C) floats, nominally in [0, 1]. The Charbonnier loss of the kernel-space
training is `kernelspace_jax.training.losses.charbonnier_sum`.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax.models.vgg import PERCEPTUAL_OUTPUTS, VGG19Features

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
PERCEPTUAL_WEIGHTS = (0.2, 0.4, 0.8, 1.0, 3.0)  # of PERCEPTUAL_OUTPUTS
# Sobel filters of HyperLaplacianPenalty, applied as cross-correlation (torch's conv2d).
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """(size,) float32 taps of sum 1; the reference's 2-D window is their outer product."""
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2)).astype(np.float32)
    return g / g.sum()


def separable_filter(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Per-channel cross-correlation with the window outer(taps, taps) and zero "same" padding, as
    shifted sums along H, then W: (B, H, W, C) -> (B, H, W, C). Far cheaper than the 2-D grouped
    convolution on XLA:CPU, and no convolution gradient inside the search's loop."""
    pad = len(taps) // 2
    for axis in (1, 2):
        size = x.shape[axis]
        widths = [(0, 0)] * x.ndim
        widths[axis] = (pad, pad)
        padded = jnp.pad(x, widths)
        x = sum(float(t) * jax.lax.slice_in_dim(padded, i, i + size, axis=axis) for i, t in enumerate(taps))
    return x


@jax.custom_vjp
def _gaussian_filter(x: jax.Array) -> jax.Array:
    """`separable_filter` with SSIM's Gaussian window. The window is symmetric, so the filter is its own
    transpose and its gradient is the same filter."""
    return separable_filter(x, gaussian_taps(SSIM_WINDOW, SSIM_SIGMA))


_gaussian_filter.defvjp(lambda x: (_gaussian_filter(x), None), lambda _, dy: (_gaussian_filter(dy),))


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """The reference's `SSIM()(a, b)`: mean over batch, channels and pixels of the SSIM map; scalar.

    11x11 Gaussian window (sigma 1.5) applied per channel with zero padding, so the map covers the
    whole image and border pixels see zeros (run as two 11-tap passes: the window is separable). dm-pix's
    `pix.ssim` filters with VALID padding and clips the variances, which gives 0.8829 instead of the
    reference's 0.8907 on the golden inputs.
    """
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    blur = _gaussian_filter
    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    numerator = (2 * mu_ab + SSIM_C1) * (2 * cov + SSIM_C2)
    denominator = (mu_aa + mu_bb + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return jnp.mean(numerator / denominator)


def hyper_laplacian_penalty(x: jax.Array, alpha: float = 0.66, eps: float = 1e-6) -> jax.Array:
    """`HyperLaplacianPenalty(C, alpha)(x)`: mean over (B, H, W) of sqrt(gx^2 + gy^2 + eps)^alpha; scalar.

    gx, gy: 3x3 Sobel responses summed over the channels (one filter spans all of them), zero padding,
    computed as nine shifted sums of the channel sum (no convolution: its gradient would be one in a
    layout XLA:CPU runs slowly inside the search's loop).
    """
    total = jnp.pad(jnp.sum(x.astype(jnp.float32), axis=-1), ((0, 0), (1, 1), (1, 1)))
    height, width = x.shape[1:3]
    shifted = lambda a, b: total[:, a : a + height, b : b + width]
    grad = jnp.stack(
        [
            sum(float(sobel[a, b]) * shifted(a, b) for a in range(3) for b in range(3) if sobel[a, b])
            for sobel in (SOBEL_X, SOBEL_Y)
        ],
        axis=-1,
    )
    magnitude = jnp.sqrt(jnp.sum(jnp.square(grad), axis=-1) + eps)
    return jnp.mean(magnitude**alpha)


def kernel_norm(kernel: jax.Array) -> jax.Array:
    """`torch.norm(k)`: the L2 (Frobenius) norm of all elements of the latent kernel; scalar."""
    return jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32))))


def vgg_features(vgg_params: Mapping, images: jax.Array, outputs: tuple[str, ...] = PERCEPTUAL_OUTPUTS) -> dict:
    """VGG19 activations of images (B, H, W, 3) in [0, 1]: {name: (B, h, w, c)} for `outputs`."""
    return VGG19Features(tuple(outputs)).apply({"params": vgg_params}, images)


def perceptual_loss(
    vgg_params: Mapping,
    x: jax.Array,
    y: jax.Array,
    outputs: tuple[str, ...] = PERCEPTUAL_OUTPUTS,
    weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS,
) -> jax.Array:
    """`PerceptualLoss()(x, y)`: sum over `outputs` of weight * mean |VGG19(x) - VGG19(y)|; scalar.

    x, y: (B, H, W, 3) in [0, 1]. Like the reference, the images go into the ImageNet VGG as they are,
    without its mean/std normalisation. `vgg_params` as from `models.vgg.load_vgg19_params(path, outputs)`.
    """
    return perceptual_loss_to_features(vgg_params, x, vgg_features(vgg_params, y, outputs), outputs, weights)


def perceptual_loss_to_features(
    vgg_params: Mapping,
    x: jax.Array,
    y_features: Mapping[str, jax.Array],
    outputs: tuple[str, ...] = PERCEPTUAL_OUTPUTS,
    weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS,
) -> jax.Array:
    """`perceptual_loss` against `vgg_features(vgg_params, y, outputs)` computed once beforehand.

    A search compares every step's F(x, k) with the same y, so it passes y's features instead of y:
    that saves a VGG forward pass per step (and x and y are not run as one batch, whose backward pass
    would also run over y's half).
    """
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} weights")
    features = vgg_features(vgg_params, x, outputs)
    return sum(
        w * jnp.mean(jnp.abs(features[name] - y_features[name])) for name, w in zip(outputs, weights, strict=True)
    )
