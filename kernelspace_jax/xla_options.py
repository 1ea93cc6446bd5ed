"""Compiler options that make this network fast on the XLA backend in use.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK, whose kernels for these shapes (weight gradients
with 128-256 px windows above all) run several times slower than Eigen's, and so does the whole
training step (figures in docs/benchmarks.md). `jit` compiles with
`{"xla_cpu_experimental_ynn_fusion_type": ""}` on a CPU backend whose XLA knows the option, and with
nothing elsewhere. Users who jit F and G in their own code get the same with

    jax.jit(fn, compiler_options=kernelspace_jax.xla_options.compiler_options())

or for a whole process with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (set before jax starts).
"""

from __future__ import annotations

import functools

import jax

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """CPU_OPTIONS on a CPU backend that accepts them, else None (the backend's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
    except Exception:  # an XLA without the option: keep its defaults
        return None
    return dict(CPU_OPTIONS)


def jit(fun=None, **kwargs):
    """`jax.jit(fun, **kwargs)` with `compiler_options()`; usable as a decorator, with or without
    arguments. The backend is looked up at the first call, not at import. Called inside another
    transformation (traced arguments), it is a plain nested `jax.jit`: XLA takes compiler options from
    the outermost one only."""
    if fun is None:
        return functools.partial(jit, **kwargs)

    @functools.cache
    def jitted(top_level: bool):
        return jax.jit(fun, compiler_options=compiler_options() if top_level else None, **kwargs)

    def top_level(args, kwargs) -> bool:
        return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))

    @functools.wraps(fun)
    def call(*args, **call_kwargs):
        return jitted(top_level(args, call_kwargs))(*args, **call_kwargs)

    call.lower = lambda *args, **call_kwargs: jitted(top_level(args, call_kwargs)).lower(*args, **call_kwargs)
    return call
