"""models/layers.py: its convolutions equal XLA's and so do their gradients, also inside loop bodies."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kernelspace_jax import xla_options
from kernelspace_jax.models import layers

CANONICAL = "b01f_01io->b01f"  # the layout XLA:CPU runs with Eigen


def _xla_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _inputs(batch, size, cin, cout, kernel, seed=0):
    kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kx, (batch, size, size, cin)),
        jax.random.normal(kw, (kernel, kernel, cin, cout)),
        kd,
    )


# (batch, size, cin, cout, kernel, stride, padding): stride 1 with row-blocked weight gradients
# (channels >= 16), odd sizes, asymmetric and larger-than-kernel padding, strided, and the patch matmul
# with many rows and with few (<= FEW_ROWS_MAX: its input gradient is one matvec per row).
CASES = [
    (2, 32, 16, 8, 3, 1, ((1, 1), (1, 1))),
    (1, 17, 4, 5, 3, 1, ((0, 2), (1, 0))),
    (1, 12, 3, 4, 1, 1, ((2, 2), (0, 0))),
    (2, 20, 6, 7, 4, 2, ((1, 1), (1, 1))),
    (1, 21, 5, 3, 3, 2, ((1, 1), (1, 1))),
    (2, 8, 4, 6, 3, 2, ((1, 1), (1, 1))),
    (1, 4, 8, 6, 3, 2, ((1, 1), (1, 1))),
    (1, 2, 8, 5, 3, 1, ((1, 1), (1, 1))),
]


@pytest.mark.parametrize("batch,size,cin,cout,kernel,stride,padding", CASES)
def test_conv2d_and_its_gradients_equal_xla(batch, size, cin, cout, kernel, stride, padding):
    x, w, kd = _inputs(batch, size, cin, cout, kernel)
    strides = (stride, stride)
    ours = jax.jit(lambda x, w: layers.conv2d(x, w, strides, padding))
    theirs = jax.jit(lambda x, w: _xla_conv(x, w, strides, padding))
    y = theirs(x, w)
    np.testing.assert_allclose(ours(x, w), y, rtol=1e-5, atol=1e-4)
    dy = jax.random.normal(kd, y.shape)
    grads = jax.jit(lambda x, w: jax.vjp(lambda *a: layers.conv2d(*a, strides, padding), x, w)[1](dy))(x, w)
    expected = jax.vjp(lambda *a: _xla_conv(*a, strides, padding), x, w)[1](dy)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * float(jnp.abs(want).max()))


def test_conv2d_transpose_is_the_input_gradient_of_conv2d():
    x, w, kd = _inputs(2, 40, 6, 5, 4)
    strides, padding = (2, 2), ((1, 1), (1, 1))
    y = _xla_conv(x, w, strides, padding)
    dy = jax.random.normal(kd, y.shape)
    expected = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)[1](dy)[0]
    got = jax.jit(lambda dy, w: layers.conv2d_transpose(dy, w, (40, 40), strides, padding))(dy, w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 9, 2)])
def test_max_pool_2x2_and_its_gradient_equal_flax(shape):
    """Values and gradient of `max_pool_2x2` equal `nn.max_pool`'s exactly, odd sides and ties included
    (half-integer inputs tie often: the gradient goes to each window's first maximum)."""
    x = jnp.round(jax.random.normal(jax.random.key(0), shape) * 2) / 2
    reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    windows = np.asarray(x)[:, : shape[1] // 2 * 2, : shape[2] // 2 * 2]
    windows = windows.reshape(shape[0], shape[1] // 2, 2, shape[2] // 2, 2, shape[3])
    assert (np.sum(windows == windows.max(axis=(2, 4), keepdims=True), axis=(2, 4)) > 1).any()  # ties occur
    np.testing.assert_array_equal(layers.max_pool_2x2(x), reference(x))
    dy = jax.random.normal(jax.random.key(1), reference(x).shape)
    got = jax.jit(jax.grad(lambda x: jnp.sum(layers.max_pool_2x2(x) * dy)))(x)
    np.testing.assert_array_equal(got, jax.grad(lambda x: jnp.sum(reference(x) * dy))(x))


def test_second_order_gradient_goes_through_the_custom_backward():
    x, w, _ = _inputs(1, 9, 3, 2, 3)
    padding = ((1, 1), (1, 1))
    hvp = lambda f: jax.grad(lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(f(x, w) ** 2))(x) ** 2))(w)
    got = jax.jit(lambda: hvp(lambda x, w: layers.conv2d(x, w, (1, 1), padding)))()
    want = hvp(lambda x, w: _xla_conv(x, w, (1, 1), padding))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * float(jnp.abs(want).max()))


def test_gradients_inside_a_loop_body_are_canonical_convolutions():
    """XLA:CPU canonicalises convolution layouts at the top level of a program but not inside a while
    body, where a non-canonical one runs in a generic loop 50-300x slower (a deblurring step took 70 s
    instead of 2 s). Every convolution of a stride-1 and a strided conv2d's gradient inside a lax.map must
    already be in the canonical form."""
    x, w, _ = _inputs(2, 32, 16, 8, 3)
    w2 = jax.random.normal(jax.random.key(5), (3, 3, 8, 8))

    def loss(x, w, w2):
        y = layers.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))
        return jnp.sum(layers.conv2d(y, w2, (2, 2), ((1, 1), (1, 1))) ** 2)

    body = lambda args: jax.grad(loss, (0, 1, 2))(*args)
    mapped = jax.jit(lambda x, w, w2: lax.map(body, (x[:, None], w[None].repeat(2, 0), w2[None].repeat(2, 0))))
    hlo = mapped.lower(x, w, w2).compile(xla_options.compiler_options() or {}).as_text()
    labels = re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(labels) >= 5, hlo
    assert set(labels) == {CANONICAL}, labels
