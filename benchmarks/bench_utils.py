"""What several benchmark scripts share: the machine's description and random search inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernelspace_jax.deblurring import dip as search


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def machine() -> str:
    """jax's version, the devices and the CPU, in one line."""
    return f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; {cpu_name()}"


def search_inputs(model, batch, height, width, config, vgg):
    """What `search.run_chunk` takes for a batch of random blurry images at height x width:
    (settings, state, (blurry, features, kernels))."""
    settings = search.settings_from_config(config, model, vgg is not None)
    blurry = jax.random.uniform(jax.random.key(1), (batch, height, width, 3))
    kernels = jnp.zeros((batch, *model.kernel_shape(height, width)))
    keys = jax.random.split(jax.random.key(0), batch)
    state = search.init_states(keys, blurry, kernels, settings=settings)
    features = search.blurry_features_of(blurry, vgg, settings=settings)
    return settings, state, (blurry, features, kernels)
