"""Checkpoints: the authors' PyTorch state_dicts <-> our parameter trees, and Orbax save/load.

`load(path)` accepts
  - a reference `.pth` (a `KernelWizard` state_dict, with or without a `module.` prefix): the config is
    inferred from the tensor shapes and every key and shape is checked;
  - an Orbax checkpoint folder written by `save` / `python -m kernelspace_jax.cli.convert`;
  - a folder of numbered Orbax checkpoints (a CheckpointManager directory): the latest, or `step`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kernelspace_jax.io.pth import CheckpointFormatError, read_pth
from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.model import KernelSpaceModel, abstract_params

FORMAT_NAME = "kernelspace-jax"
FORMAT_VERSION = 1
Path = tuple[str, ...]


class CheckpointMismatchError(CheckpointFormatError):
    """The checkpoint's tensors do not fit the architecture its config describes."""


# ---------------------------------------------------------------------------------------------
# Reference state_dict names
# ---------------------------------------------------------------------------------------------


def _torch_module_name(path: Path, config: KernelSpaceConfig) -> str:
    """Reference module name of one of our layers: ('adapter', 'down_2') -> 'adapter.model.submodule...'."""
    part, layer, *rest = path
    index = int(layer.rsplit("_", 1)[1]) if "_" in layer and layer.rsplit("_", 1)[1].isdigit() else None
    if part == "features":
        if layer.startswith("block_"):
            return f"feature_extractor.{6 + index}.{rest[0]}"
        return f"feature_extractor.{2 * index}"
    if part == "extractor":
        if layer == "conv_in":
            return "kernel_extractor.model.1"
        if layer.startswith("down_"):
            return f"kernel_extractor.model.{4 + 3 * index}"
        # ResnetBlock.conv_block = [pad, conv1, norm, relu, pad, conv2, norm]
        return f"kernel_extractor.model.{19 + index}.conv_block.{ {'conv1': 1, 'conv2': 5}[rest[0]] }"
    if part == "adapter":
        kind = layer.split("_")[0]  # down | up
        nested = "submodule." * index
        # The outermost down is Sequential(conv); every other Sequential starts with an activation.
        return f"adapter.model.{nested}{kind}.{0 if (kind, index) == ('down', 0) else 1}"
    if part == "reconstruction":
        b = config.back_blocks
        if layer.startswith("block_"):
            return f"recon_trunk.{index}.{rest[0]}"
        return f"recon_trunk.{b + {'upconv_0': 0, 'upconv_1': 3, 'conv_hr': 6, 'conv_out': 8}[layer]}"
    raise KeyError(path)


def torch_key(path: Path, config: KernelSpaceConfig) -> str:
    """The reference state_dict key of the parameter at `path` in our tree."""
    suffix = {"kernel": "weight", "bias": "bias"}[path[-1]]
    return f"{_torch_module_name(path[:-1], config)}.{suffix}"


def _to_ours(array: np.ndarray) -> np.ndarray:
    # Conv2d OIHW and ConvTranspose2d (in, out, kH, kW) both map to our layout by the same transpose.
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array


def _to_torch(array: np.ndarray) -> np.ndarray:
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array


# ---------------------------------------------------------------------------------------------
# Config inference and conversion
# ---------------------------------------------------------------------------------------------


def _strip_wrapper(state: Any) -> dict[str, np.ndarray]:
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointFormatError(f"expected a state_dict (a dict of named tensors), got {type(state).__name__}")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _count(state: Mapping[str, Any], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def infer_config(state_dict: Mapping[str, np.ndarray]) -> KernelSpaceConfig:
    """Reads nf, block counts, kernel_dim and VAE from the tensor shapes of a KernelWizard state_dict."""
    state = _strip_wrapper(state_dict)
    required = [
        "feature_extractor.0.weight",
        "kernel_extractor.model.16.weight",
        "adapter.model.submodule.submodule.submodule.submodule.up.1.weight",
    ]
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointFormatError(
            f"not a KernelWizard state_dict: key '{missing[0]}' is missing (found e.g. {sorted(state)[:3]})"
        )
    nf, channels = state["feature_extractor.0.weight"].shape[:2]
    latent = state["kernel_extractor.model.16.weight"].shape[0]
    kernel_dim = state[required[2]].shape[0] - 8 * nf  # innermost up-conv sees concat(8nf, kernel)
    if latent not in (kernel_dim, 2 * kernel_dim):
        raise CheckpointMismatchError(
            f"G outputs {latent} channels but the U-Net takes {kernel_dim}-channel kernels; expected "
            f"{kernel_dim} (no VAE) or {2 * kernel_dim} (VAE)"
        )
    back_blocks = _count(state, r"recon_trunk\.(\d+)\.conv1\.weight")
    hr_conv = f"recon_trunk.{back_blocks + 6}.weight"
    if hr_conv not in state:
        raise CheckpointFormatError(f"not a KernelWizard state_dict: key '{hr_conv}' is missing")
    try:
        return KernelSpaceConfig(
            nf=int(nf),
            kernel_dim=int(kernel_dim),
            image_channels=int(channels),
            use_vae=bool(latent == 2 * kernel_dim),
            front_blocks=_count(state, r"feature_extractor\.(\d+)\.conv1\.weight"),
            back_blocks=back_blocks,
            extractor_blocks=_count(state, r"kernel_extractor\.model\.(\d+)\.conv_block\.1\.weight"),
            hr_width=int(state[hr_conv].shape[0]),
            sharp_skip=int(state[hr_conv].shape[1]) == int(state[hr_conv].shape[0]) + int(channels),
        )
    except ValueError as err:
        raise CheckpointMismatchError(f"tensor shapes describe no valid architecture: {err}") from err


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], config: KernelSpaceConfig | None = None
) -> tuple[dict, KernelSpaceConfig]:
    """Converts a reference state_dict to our float32 parameter tree; checks every key and shape.

    Returns (params, config); `config` is inferred from the shapes unless given.
    """
    state = _strip_wrapper(state_dict)
    config = config or infer_config(state)
    expected = traverse_util.flatten_dict(abstract_params(config))
    by_key = {torch_key(path, config): path for path in expected}
    for key in sorted(set(state) - set(by_key)):
        raise CheckpointMismatchError(f"unexpected key '{key}' for the architecture {config}")
    flat = {}
    for key, path in by_key.items():
        if key not in state:
            raise CheckpointMismatchError(f"missing key '{key}' (for {'/'.join(path)}) for the architecture {config}")
        value = np.asarray(state[key])
        want = expected[path].shape
        got = _to_ours(value).shape
        if got != want:
            raise CheckpointMismatchError(
                f"'{key}' has shape {value.shape}, expected {_to_torch(np.empty(want)).shape} for {config}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointMismatchError(f"'{key}' has dtype {value.dtype}, expected floating point")
        flat[path] = jnp.asarray(_to_ours(value), jnp.float32)
    return traverse_util.unflatten_dict(flat), config


def state_dict_from_params(params: Mapping, config: KernelSpaceConfig) -> dict[str, np.ndarray]:
    """Our parameter tree as a reference state_dict of numpy arrays (keys without `module.`)."""
    return {
        torch_key(path, config): _to_torch(np.asarray(leaf))
        for path, leaf in traverse_util.flatten_dict(params).items()
    }


def check_params(params: Mapping, config: KernelSpaceConfig) -> None:
    """Raises CheckpointMismatchError naming the first parameter whose path or shape does not fit `config`."""
    expected, got = traverse_util.flatten_dict(abstract_params(config)), traverse_util.flatten_dict(params)
    for path in sorted(set(expected) | set(got)):
        name = "/".join(path)
        if path not in got:
            raise CheckpointMismatchError(f"parameter '{name}' is missing for the architecture {config}")
        if path not in expected:
            raise CheckpointMismatchError(f"unexpected parameter '{name}' for the architecture {config}")
        if tuple(got[path].shape) != tuple(expected[path].shape):
            raise CheckpointMismatchError(
                f"parameter '{name}' has shape {tuple(got[path].shape)}, expected {expected[path].shape} "
                f"for the architecture {config}"
            )


# ---------------------------------------------------------------------------------------------
# Orbax
# ---------------------------------------------------------------------------------------------


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp, ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def checkpoint_meta(config: KernelSpaceConfig, **extra: Any) -> dict:
    """The JSON `config` item of a checkpoint: format tag, architecture, and anything in `extra`."""
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kernel_space": config.to_dict(), **extra}


def save(model: KernelSpaceModel, path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Writes `model` as an Orbax checkpoint folder (params + config); atomic: a crash leaves no folder.

    Training runs write the same two items (plus optimiser and data state) in each step folder.
    """
    ocp, checkpointer = _checkpointer()
    path = os.path.abspath(os.fspath(path))
    if overwrite and os.path.lexists(path) and not is_own_checkpoint(path):
        raise FileExistsError(
            f"{path} exists and is not a {FORMAT_NAME} checkpoint folder: refusing to replace it (remove it "
            "yourself or choose another path)"
        )
    meta = checkpoint_meta(model.config)
    checkpointer.save(
        path,
        ocp.args.Composite(params=ocp.args.StandardSave(model.params), config=ocp.args.JsonSave(meta)),
        force=overwrite,
    )
    return path


def _is_orbax_checkpoint(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "params")) and os.path.isdir(os.path.join(path, "config"))


def is_own_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a checkpoint folder written by `save` (its config item carries our format tag)."""
    path = os.fspath(path)
    if os.path.islink(path) or not _is_orbax_checkpoint(path):
        return False
    try:
        with open(os.path.join(path, "config", "metadata"), encoding="utf-8") as file:
            return json.load(file).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _restore_orbax(path: str, dtype) -> KernelSpaceModel:
    ocp, checkpointer = _checkpointer()
    meta = checkpointer.restore(path, ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(f"{path}: not a {FORMAT_NAME} checkpoint (its config has no format tag)")
    config = KernelSpaceConfig.from_dict(meta["kernel_space"])
    params = checkpointer.restore(path, ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]
    check_params(params, config)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return KernelSpaceModel(params, config, dtype)


def _step_dirs(root: str) -> dict[int, str]:
    return {
        int(name): os.path.join(root, name)
        for name in os.listdir(root)
        if name.isdigit() and _is_orbax_checkpoint(os.path.join(root, name))
    }


def load(path: str | os.PathLike, *, step: int | None = None, dtype=jnp.float32) -> KernelSpaceModel:
    """Loads a model from a reference `.pth`, an Orbax checkpoint, or a folder of numbered checkpoints.

    Args:
      path: a `.pth` file; a folder written by `save`/`convert`; a folder of step folders (the latest,
        or `step`, is loaded), also when they sit in its `checkpoints/` subfolder (a training workdir).
      step: which step of a folder of numbered checkpoints.
      dtype: computation dtype of the returned model (parameters are float32).
    """
    path = os.path.abspath(os.fspath(path))  # Orbax wants absolute paths
    if os.path.isfile(path):
        params, config = params_from_state_dict(read_pth(path))
        return KernelSpaceModel(params, config, dtype)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if _is_orbax_checkpoint(path):
        if step is not None:
            raise ValueError(f"{path} is a single checkpoint; step={step} applies to a folder of numbered ones")
        return _restore_orbax(path, dtype)
    for root in (path, os.path.join(path, "checkpoints")):
        steps = _step_dirs(root) if os.path.isdir(root) else {}
        if steps:
            chosen = max(steps) if step is None else step
            if chosen not in steps:
                raise FileNotFoundError(f"no checkpoint for step {step} in {root}; available: {sorted(steps)}")
            return _restore_orbax(steps[chosen], dtype)
    raise CheckpointFormatError(
        f"{path} is neither a .pth file, an Orbax checkpoint of {FORMAT_NAME}, nor a folder of numbered ones"
    )
