"""The compiler options for the backend in use, and the jit wrapper that applies them."""

import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax import xla_options


def test_cpu_backend_turns_ynnpack_off():
    # CI runs on a CPU whose jaxlib knows the option; on other backends nothing is set.
    expected = xla_options.CPU_OPTIONS if jax.default_backend() == "cpu" else None
    assert xla_options.compiler_options() == expected


def test_jit_wrapper_computes_compiles_once_and_lowers():
    calls = []

    @xla_options.jit(static_argnames="power")
    def f(x, power):
        calls.append(power)  # runs at trace time only
        return jnp.tanh(x) ** power

    x = jax.random.normal(jax.random.key(0), (4, 5))
    np.testing.assert_allclose(f(x, 2), np.tanh(np.asarray(x)) ** 2, rtol=1e-6)
    f(x + 1, 2)
    assert calls == [2]  # compiled once, then reused
    assert f.__name__ == "f" and "tanh" in f.lower(x, 2).as_text()
    # Inside another jit (traced arguments) it nests as a plain jit.
    np.testing.assert_allclose(jax.jit(lambda y: f(y, 2) + 1)(x), np.tanh(np.asarray(x)) ** 2 + 1, rtol=1e-6)
