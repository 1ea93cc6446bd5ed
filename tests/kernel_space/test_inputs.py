"""What F, G and the searches accept: one image check, one reflect padding, one way to per-image keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernelspace_jax.kernel_space.inputs import check_images, check_key, image_keys, pad_to


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        ([[0.0]], TypeError, "x must be an array"),
        (np.zeros((32, 32, 3), np.float32), ValueError, "x must be NHWC with 3 channels"),
        (np.zeros((1, 32, 32, 4), np.float32), ValueError, "3 channels"),
        (np.zeros((1, 32, 32, 3), np.uint8), TypeError, "x must be floating point"),
        (np.zeros((0, 32, 32, 3), np.float32), ValueError, "x is an empty batch"),
        (np.zeros((1, 31, 64, 3), np.float32), ValueError, "x is 31x64; both sides must be at least 32"),
    ],
)
def test_check_images_rejects(images, error, match):
    with pytest.raises(error, match=match):
        check_images("x", images)


def test_check_images_accepts():
    check_images("x", np.zeros((2, 32, 40, 3), np.float32))
    check_images("x", jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.bfloat16), channels=1, min_side=16)


def test_pad_to_reflects_at_the_bottom_and_right():
    images = np.random.default_rng(0).uniform(size=(2, 33, 40, 3)).astype(np.float32)
    padded = pad_to(jnp.asarray(images), (256, 128))
    np.testing.assert_array_equal(padded, np.pad(images, ((0, 0), (0, 223), (0, 88), (0, 0)), mode="reflect"))
    assert pad_to(images, (33, 40)) is images


def test_image_keys_take_typed_and_raw_keys():
    typed, raw = jax.random.key(0), jax.random.PRNGKey(0)
    split = jax.random.key_data(jax.random.split(typed, 3))
    for key in (typed, raw, jax.random.split(typed, 3), jax.random.split(raw, 3)):
        keys = image_keys(key, 3)
        assert keys.shape == (3,) and jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(keys), split)
    with pytest.raises(ValueError, match=r"one per image, shape \(3,\); got shape \(2,\)"):
        image_keys(jax.random.split(typed, 2), 3)
    with pytest.raises(TypeError, match="the key comes before the images, f"):
        check_key(jnp.zeros((1, 32, 32, 3)), "f")
