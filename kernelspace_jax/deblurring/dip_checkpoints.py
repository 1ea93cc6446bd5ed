"""The reference's `ImageDIP` / `KernelDIP` state_dicts -> our DIP parameter trees.

The reference never ships DIP weights (they are trained from scratch for every image); this
conversion exists to run the port on the very weights of a reference run, e.g. the golden files.
Every key of the state_dict must be expected and present, with the expected shape; BatchNorm's
running statistics are checked but dropped (the DIPs always normalise with batch statistics).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.dips import (
    IMAGE_DIP_FULL,
    KERNEL_DIP_DOWNSAMPLINGS,
    KERNEL_DIP_FULL,
    KERNEL_DIP_IN_CHANNELS,
    NON_LOCAL_FROM,
    ImageDIP,
    ImageDIPConfig,
    KernelDIP,
    KernelDIPConfig,
)

Path = tuple[str, ...]
Layer = tuple[Path, str, str]  # (our module path, reference module name, 'conv' | 'norm')


def _image_dip_layers(config: ImageDIPConfig) -> Iterator[Layer]:
    """Our modules of `ImageDIP` with their names in the reference's nested `skip()` Sequential."""

    def scale(i: int, ours: Path, seq: str) -> Iterator[Layer]:
        # seq: the Sequential of scale i,
        #   [Concat(skip, deeper) | deeper, BN, conv, BN, act, 1x1 conv, BN, act];
        # skip() numbers the children of its Sequentials from 1.
        if config.channels_skip[i]:
            deeper = f"{seq}.1.1"
            yield (*ours, "skip_conv"), f"{seq}.1.0.1.0", "conv"
            yield (*ours, "skip_norm"), f"{seq}.1.0.2", "norm"
        else:
            deeper = f"{seq}.1"
        # deeper: [conv, BN, act, (non-local), conv, BN, act, (next scale's Sequential), upsample]
        yield (*ours, "down_conv"), f"{deeper}.1.0", "conv"
        yield (*ours, "down_norm"), f"{deeper}.2", "norm"
        j = 4
        if i >= NON_LOCAL_FROM:
            nl = (*ours, "non_local")
            for name, ref in (("theta", "theta"), ("phi", "phi.0"), ("g", "g.0"), ("w_conv", "W.0")):
                yield (*nl, name), f"{deeper}.4.{ref}", "conv"
            yield (*nl, "w_norm"), f"{deeper}.4.W.1", "norm"
            j = 5
        yield (*ours, "conv"), f"{deeper}.{j}.0", "conv"
        yield (*ours, "norm"), f"{deeper}.{j + 1}", "norm"
        if i + 1 < config.scales:
            yield from scale(i + 1, (*ours, f"scale_{i + 1}"), f"{deeper}.{j + 3}")
        yield (*ours, "concat_norm"), f"{seq}.2", "norm"
        yield (*ours, "up_conv"), f"{seq}.3.0", "conv"
        yield (*ours, "up_norm"), f"{seq}.4", "norm"
        if config.need1x1_up:
            yield (*ours, "up1x1_conv"), f"{seq}.6.0", "conv"
            yield (*ours, "up1x1_norm"), f"{seq}.7", "norm"

    yield from scale(0, ("scale_0",), "model")
    yield ("conv_out",), f"model.{9 if config.need1x1_up else 6}.0", "conv"


def _kernel_dip_layers(config: KernelDIPConfig) -> Iterator[Layer]:
    """Our modules of `KernelDIP` with their names in its `model` Sequential."""
    # [pad, conv, norm, ReLU] + 5 x [conv, norm, ReLU] + blocks; norm 'none' still takes a slot.
    yield ("conv_in",), "model.1", "conv"
    for i in range(KERNEL_DIP_DOWNSAMPLINGS):
        yield (f"down_{i}",), f"model.{4 + 3 * i}", "conv"
    first_block = 4 + 3 * KERNEL_DIP_DOWNSAMPLINGS
    for i in range(config.n_blocks):
        # ResnetBlock.conv_block = [pad, conv1, norm, ReLU, pad, conv2, norm]
        for name, index in (("conv1", 1), ("conv2", 5)):
            yield (f"block_{i}", name), f"model.{first_block + i}.conv_block.{index}", "conv"


def _expected_entries(layers: Iterator[Layer], shapes: Mapping) -> dict[str, tuple[Path | None, tuple]]:
    """{reference key: (our parameter path or None for a dropped buffer, reference shape)}."""
    entries: dict[str, tuple[Path | None, tuple]] = {}
    for path, module, kind in layers:
        node = shapes
        for name in path:
            node = node[name]
        if kind == "conv":
            kernel = node["kernel"].shape
            entries[f"{module}.weight"] = ((*path, "kernel"), (kernel[3], kernel[2], kernel[0], kernel[1]))
            entries[f"{module}.bias"] = ((*path, "bias"), node["bias"].shape)
        else:
            channels = node["scale"].shape
            entries[f"{module}.weight"] = ((*path, "scale"), channels)
            entries[f"{module}.bias"] = ((*path, "bias"), channels)
            entries[f"{module}.running_mean"] = (None, channels)
            entries[f"{module}.running_var"] = (None, channels)
            entries[f"{module}.num_batches_tracked"] = (None, ())
    return entries


def _convert(state_dict: Mapping[str, np.ndarray], entries: dict[str, tuple[Path | None, tuple]], what: str) -> dict:
    """Checks every key and shape against `entries`; returns the float32 tree of the parameters."""
    for key in state_dict:
        if key not in entries:
            raise CheckpointMismatchError(f"unexpected key '{key}' in the state_dict of {what}")
    params: dict = {}
    for key, (path, shape) in entries.items():
        if key not in state_dict:
            raise CheckpointMismatchError(f"missing key '{key}' in the state_dict of {what}")
        value = np.asarray(state_dict[key])
        if value.shape != tuple(shape):
            raise CheckpointMismatchError(f"'{key}' has shape {value.shape}, expected {tuple(shape)} for {what}")
        if path is None:
            continue
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointMismatchError(f"'{key}' has dtype {value.dtype}, expected floating point")
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value, jnp.float32)
    return params


def image_dip_params(state_dict: Mapping[str, np.ndarray], config: ImageDIPConfig = IMAGE_DIP_FULL) -> dict:
    """Converts a reference `ImageDIP` state_dict (keys `model.1.1.1.0.weight`, ...) for `ImageDIP(config)`.

    Raises CheckpointMismatchError naming the first unexpected or missing key or wrong shape.
    """
    side = 2 ** (config.scales + 1)
    z = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
    shapes = jax.eval_shape(ImageDIP(config).init, jax.random.key(0), z)["params"]
    return _convert(state_dict, _expected_entries(_image_dip_layers(config), shapes), f"ImageDIP {config}")


def kernel_dip_params(state_dict: Mapping[str, np.ndarray], config: KernelDIPConfig = KERNEL_DIP_FULL) -> dict:
    """Converts a reference `KernelDIP` state_dict (keys `model.1.weight`, ...) for `KernelDIP(config)`.

    Raises CheckpointMismatchError naming the first unexpected or missing key or wrong shape.
    """
    side = 2 ** (KERNEL_DIP_DOWNSAMPLINGS + 1)
    z = jax.ShapeDtypeStruct((1, side, side, KERNEL_DIP_IN_CHANNELS), jnp.float32)
    shapes = jax.eval_shape(KernelDIP(config).init, jax.random.key(0), z)["params"]
    return _convert(state_dict, _expected_entries(_kernel_dip_layers(config), shapes), f"KernelDIP {config}")
