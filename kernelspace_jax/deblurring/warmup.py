"""The warm-up kernel: what the kernel prior is fitted to before the main phase of the search.

The reference fits its KernelDIP to one fixed 1x512x2x2 tensor shipped with its GoPro model
(`experiments/pretrained/kernel.pth`). Here the warm-up kernel is one of

  "zero"      zeros (the default of generic deblurring: for the shipped model a typical blur, and
              the best start measured on validation images, see configs/deblur_generic.py);
  "identity"  G(y, y), per image: the latent kernel that blurs the blurry image y into itself,
              i.e. "no further blur". It fits any model and any image size, but with a model that
              uses k the search started there tends to stay near x = y;
  "sharpened" G(s(y), y), per image, with s(y) = y + (y - gaussian_2(y)) an unsharp mask: the kernel
              that blurs a sharper guess of x into y. On the validation cases it is nearer the true
              pair's kernel than "zero" (F(x, k) reproduces y at 34.4 dB with it, 33.0 with zeros,
              35.5 with G(x, y); docs/deblurring_quality.md);
  a file      .npy / .npz (one array, NHWC (1, h, w, kernel_dim) or (h, w, kernel_dim)) or the
              reference's .pth (NCHW (1, kernel_dim, h, w), transposed). A grid other than the
              image's (e.g. the reference's 2x2 for an image larger than 256 px) is resized bilinearly.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax.deblurring.losses import gaussian_taps, separable_filter
from kernelspace_jax.io.pth import read_pth
from kernelspace_jax.kernel_space.model import KernelSpaceModel

COMPUTED = ("identity", "sharpened", "zero")
UNSHARP_SIGMA, UNSHARP_AMOUNT = 2.0, 1.0  # of "sharpened", the best of sigma 1-3, amount 1-8 on the val cases


def load_kernel_file(path: str | os.PathLike, kernel_dim: int) -> np.ndarray:
    """A latent kernel from .npy, .npz (a single array) or .pth: (1, h, w, kernel_dim) float32.

    NHWC arrays are taken as they are; an array whose second axis (and not its last) is `kernel_dim`
    is NCHW, as torch stores it, and is transposed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"warm-up kernel {path!r} is neither one of {COMPUTED} nor an existing .npy/.npz/.pth file"
        )
    if path.endswith(".npz"):
        with np.load(path) as npz:
            if len(npz.files) != 1:
                raise ValueError(f"{path}: expected one array in the .npz, found {npz.files}")
            array = npz[npz.files[0]]
    elif path.endswith(".npy"):
        array = np.load(path)
    else:
        array = read_pth(path)
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{path}: expected a single tensor, got {type(array).__name__}")
    array = np.asarray(array, np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1 or kernel_dim not in (array.shape[1], array.shape[3]):
        raise ValueError(
            f"{path}: a warm-up kernel must be (1, h, w, {kernel_dim}) (NHWC) or (1, {kernel_dim}, h, w) "
            f"(NCHW, as torch saves it) for this model's kernel_dim {kernel_dim}; got {array.shape}"
        )
    if array.shape[3] != kernel_dim:
        array = array.transpose(0, 2, 3, 1)
    return array


def fit_to_grid(kernel: jax.Array, cells: tuple[int, int]) -> jax.Array:
    """(B, h, w, C) -> (B, *cells, C): unchanged if the grid matches, else resized bilinearly."""
    if tuple(kernel.shape[1:3]) == tuple(cells):
        return kernel
    return jax.image.resize(kernel, (kernel.shape[0], *cells, kernel.shape[3]), "linear")


def unsharp_mask(images: jax.Array, sigma: float = UNSHARP_SIGMA, amount: float = UNSHARP_AMOUNT) -> jax.Array:
    """images + amount * (images - Gaussian(images, sigma)), clipped to [0, 1]: (B, H, W, C) -> same.
    The Gaussian (a 4 sigma + 1 tap window) sees the border mirrored."""
    radius = round(2 * sigma)
    taps = gaussian_taps(2 * radius + 1, sigma)
    padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    smooth = separable_filter(padded, taps)[:, radius:-radius, radius:-radius]
    return jnp.clip(images + amount * (images - smooth), 0.0, 1.0)


def warmup_kernels(model: KernelSpaceModel, blurry: jax.Array, spec: str) -> jax.Array:
    """Warm-up kernels for blurry images (B, H, W, 3) in [0, 1]: (B, *model.kernel_shape(H, W)).

    `spec`: "identity", "sharpened", "zero" or a file path (see the module docstring).
    """
    batch, height, width = blurry.shape[:3]
    shape = (batch, *model.kernel_shape(height, width))
    if spec == "zero":
        return jnp.zeros(shape, jnp.float32)
    if spec in ("identity", "sharpened"):
        guess = blurry if spec == "identity" else unsharp_mask(blurry)
        mean, _ = model.extract(guess, blurry)
        return mean.astype(jnp.float32)
    kernel = jnp.asarray(load_kernel_file(spec, model.config.kernel_dim))
    return jnp.broadcast_to(fit_to_grid(kernel, shape[1:3]), shape)
