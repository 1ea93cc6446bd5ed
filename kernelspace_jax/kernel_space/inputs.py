"""What F, G and the searches accept: image checks, reflect padding, per-image keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_SIDE = 32  # the smallest image side F, G and the searches take


def check_images(name: str, images: jax.Array, *, channels: int = 3, min_side: int = MIN_SIDE) -> None:
    """Checks that `images` is (B, H, W, channels) floating point with B >= 1 and H, W >= min_side.

    Raises TypeError for a non-array or a non-floating dtype, ValueError for another rank or channel
    count, an empty batch or a side below min_side; the messages call the images `name`.
    """
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(images).__name__}")
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != channels:
        raise ValueError(
            f"{name} must be NHWC with {channels} channels, (batch, height, width, {channels}); got shape {shape}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point in [0, 1], got {images.dtype} (divide integer images by 255)")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if min(shape[1:3]) < min_side:
        raise ValueError(f"{name} is {shape[1]}x{shape[2]}; both sides must be at least {min_side}")


def pad_to(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, *size, C), reflect-padded at the bottom and right; `images` itself if it fits."""
    height, width = images.shape[1:3]
    if (height, width) == tuple(size):
        return images
    return jnp.pad(images, ((0, 0), (0, size[0] - height), (0, size[1] - width), (0, 0)), mode="reflect")


def check_key(key, caller: str) -> None:
    """TypeError unless `key` is a PRNG key (typed, or a raw uint32 key): catches images passed where the
    key goes, `caller` naming the call's argument order."""
    dtype = getattr(key, "dtype", None)
    if dtype is None or not (jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32):
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(seed)), got {type(key).__name__} of dtype {dtype} and shape "
            f"{getattr(key, 'shape', None)}: the key comes before the images, {caller}"
        )


def image_keys(key: jax.Array, batch: int) -> jax.Array:
    """(B,) typed keys: `key` split B ways if it is one key, else `key` itself (checked to be (B,)).

    Accepts typed keys (`jax.random.key`) and raw uint32 ones (`jax.random.PRNGKey`), which are wrapped.
    """
    check_key(key, "(..., key, images, ...)")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a raw uint32 jax.random.PRNGKey
    if key.shape == ():
        return jax.random.split(key, batch)
    if key.shape != (batch,):
        raise ValueError(f"key must be one key or one per image, shape ({batch},); got shape {key.shape}")
    return key
