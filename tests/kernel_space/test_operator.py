"""BlurOperator: F as a pytree operator inside the user's jit/vmap/grad/scan, and the DPS-style loop of
docs/operator.md on a micro model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelspace_jax as ksj

CONFIG = ksj.kernel_space.config.micro(use_vae=True)
# kaiming init: F responds to its kernel from the start (the reference's init is nearly blind to it)
MODEL = ksj.KernelSpaceModel(ksj.init_params(jax.random.key(0), CONFIG, scheme="kaiming"), CONFIG)


def images(seed, shape=(2, 64, 64, 3)):
    return jax.random.uniform(jax.random.key(seed), shape)


def test_operator_is_f_and_a_pytree():
    op = ksj.BlurOperator.create(MODEL)
    x = images(0)
    k = op.sample_kernel(jax.random.key(1), x.shape, scale=1.2)
    assert k.shape == (2, *MODEL.kernel_shape(64, 64)) and float(jnp.std(k)) == pytest.approx(1.2, rel=0.1)
    np.testing.assert_array_equal(op(x, k), MODEL.blur(x, k))
    jitted = jax.jit(lambda op, x, k: op(x, k))
    np.testing.assert_allclose(jitted(op, x, k), op(x, k), atol=1e-5)
    per_image = jax.vmap(lambda xi, ki: op(xi[None], ki[None])[0])(x, k)  # vmap == the batch
    np.testing.assert_allclose(per_image, op(x, k), atol=1e-5)
    assert op.extract(x, op(x, k)).shape == k.shape
    assert ksj.BlurOperator.create(MODEL, dtype=jnp.bfloat16)(x, k).dtype == x.dtype


def test_posterior_sampling_style_loop_fits_x_and_k_in_a_scan():
    """docs/operator.md's loop: gradient steps on ||y - F(x, k)||^2 for x and k inside lax.scan."""
    op = ksj.BlurOperator.create(MODEL)
    x_true = images(2)
    k_true = op.sample_kernel(jax.random.key(3), x_true.shape, scale=1.2)
    y = op(x_true, k_true)

    def residual(x, k):
        return jnp.sum((y - op(x, k)) ** 2)

    @jax.jit
    def run(op, x, k):
        def step(carry, _):
            x, k = carry
            gx, gk = jax.grad(residual, argnums=(0, 1))(x, k)
            return (x - 0.05 * gx, k - 0.05 * gk), residual(x, k)

        return jax.lax.scan(step, (x, k), None, length=30)

    # k starts from the prior: at k = 0 exactly, F's ReLU after the kernel's concatenation passes no gradient
    x0, k0 = jnp.full_like(x_true, 0.5), op.sample_kernel(jax.random.key(4), x_true.shape, scale=1.2)
    (x, k), history = run(op, x0, k0)
    assert bool(jnp.all(jnp.isfinite(history)))
    assert float(history[-1]) < 0.5 * float(history[0])  # the data term falls: gradients reach x and k
    assert float(jnp.abs(k - k0).max()) > 0
    assert float(jnp.mean((x - x_true) ** 2)) < float(jnp.mean((x0 - x_true) ** 2))
