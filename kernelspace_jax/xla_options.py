"""Compiler options that make this network fast on the XLA backend in use.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK, whose kernels for these shapes (weight gradients
with 128-256 px windows above all) run several times slower than Eigen's, and so does the whole
training step (figures in docs/benchmarks.md). `jit` compiles with
`{"xla_cpu_experimental_ynn_fusion_type": ""}` on a CPU backend whose XLA knows the option, and with
nothing elsewhere.

Users who jit F and G in their own code need to do nothing: `import kernelspace_jax` runs
`set_process_flags()`, which adds --xla_cpu_experimental_ynn_fusion_type= to XLA_FLAGS when jax has
not started its backends yet and the installed jaxlib is one whose XLA is known to take the flag
(XLA stops a process over a flag it does not know). It touches nothing when the flag is there
already, when KERNELSPACE_JAX_XLA_FLAGS=0 (the opt-out), or on another jaxlib; when the CPU backend
had started before the import, it warns once and names the two ways around it: import kernelspace_jax
before running any jax computation, or jit with

    jax.jit(fn, compiler_options=kernelspace_jax.xla_options.compiler_options())
"""

from __future__ import annotations

import functools

import jax

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
PROCESS_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
OPT_OUT = "KERNELSPACE_JAX_XLA_FLAGS"  # "0": leave XLA_FLAGS as it is
KNOWN_JAXLIB = ((0, 10),)  # (major, minor) of the jaxlib releases whose XLA was checked to take the flag


def set_process_flags() -> str:
    """Adds PROCESS_FLAG to XLA_FLAGS for this process if it can still take effect (see the module doc).

    Returns what happened: "set", "present", "opted out", "other jaxlib" or "too late".
    """
    import os
    import warnings

    import jaxlib
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if PROCESS_FLAG.strip("-=") in flags:
        return "present"
    if os.environ.get(OPT_OUT, "1") == "0":
        return "opted out"
    if tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) not in KNOWN_JAXLIB:
        return "other jaxlib"
    if xla_bridge.backends_are_initialized():
        if jax.default_backend() == "cpu":
            warnings.warn(
                "jax started its CPU backend before kernelspace_jax was imported, so XLA_FLAGS could not be set: "
                "F and G inside your own jax.jit will use XLA:CPU's slower YNNPACK convolutions. Import "
                "kernelspace_jax first, or jit with compiler_options=kernelspace_jax.xla_options.compiler_options()",
                stacklevel=3,
            )
        return "too late"
    os.environ["XLA_FLAGS"] = f"{flags} {PROCESS_FLAG}".strip()
    return "set"


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
