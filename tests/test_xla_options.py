"""The compiler options for the backend in use, and the jit wrapper that applies them."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

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


KNOWN = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) in xla_options.KNOWN_JAXLIB
USER_JIT = """
import sys
import kernelspace_jax as ksj
import jax, jax.numpy as jnp
model = ksj.init(jax.random.key(0), ksj.kernel_space.config.micro())
x = jnp.zeros((1, 128, 128, 3))
k = jnp.zeros((1, *model.kernel_shape(128, 128)))
loss = jax.jit(lambda m, x, k: jnp.mean(jax.grad(lambda x: jnp.sum(m.blur(x, k)))(x)))
print(loss.lower(model, x, k).compile().as_text().lower().count("ynn"))
"""


def _ynn_fusions_in_a_user_jit(**env) -> int:
    """YNNPACK mentions in the compiled program of F's gradient under a plain jax.jit, in a fresh process."""
    environ = {k: v for k, v in os.environ.items() if k != xla_options.OPT_OUT}
    environ["XLA_FLAGS"] = " ".join(f for f in environ.get("XLA_FLAGS", "").split() if "ynn" not in f)
    result = subprocess.run(
        [sys.executable, "-c", USER_JIT], env={**environ, **env}, capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(
    not KNOWN,
    reason="the process flag is set only on jaxlib releases checked to take it",
)
def test_a_users_plain_jit_of_f_gets_the_fast_convolutions():
    """`import kernelspace_jax` before any computation keeps YNNPACK out of the user's own jit; the
    opt-out leaves XLA's default (YNNPACK fusions all over the program)."""
    assert _ynn_fusions_in_a_user_jit() <= 2
    assert _ynn_fusions_in_a_user_jit(**{xla_options.OPT_OUT: "0"}) > 20


def test_process_flags_are_not_touched_once_the_backend_runs(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv(xla_options.OPT_OUT, raising=False)
    jax.devices()  # the backend runs in this process
    if KNOWN and jax.default_backend() == "cpu":
        with pytest.warns(UserWarning, match="Import kernelspace_jax first"):
            assert xla_options.set_process_flags() == "too late"
    assert os.environ["XLA_FLAGS"] == ""
    monkeypatch.setenv("XLA_FLAGS", xla_options.PROCESS_FLAG)
    assert xla_options.set_process_flags() == "present"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv(xla_options.OPT_OUT, "0")
    assert xla_options.set_process_flags() == "opted out"
