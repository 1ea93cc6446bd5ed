"""Checkpoints: the authors' PyTorch state_dicts <-> our parameter trees, and Orbax save/load.

`load(path)` accepts
  - a reference `.pth` (a `KernelWizard` state_dict, with or without a `module.` prefix): the config is
    inferred from the tensor shapes and every key and shape is checked;
  - an Orbax checkpoint folder written by `save` / `python -m kernelspace_jax.cli.convert`;
  - a folder of numbered Orbax checkpoints (a CheckpointManager directory): the latest, or `step`.

Every Orbax folder this package writes (`save`, the training loop's steps) gets a `checksums.json`: the
size and SHA-256 of each of its files, written atomically once Orbax has finished. `load` verifies it
before restoring anything; a file missing, truncated or changed, or any error while Orbax restores, is
one `CheckpointCorruptError` naming the folder, the damaged item and what to do. A folder without
checksums (written by older versions, or by other code) still loads, after a one-time logged note.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.io.pth import CheckpointFormatError, read_pth
from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.model import KernelSpaceModel, abstract_params

FORMAT_NAME = "kernelspace-jax"
FORMAT_VERSION = 1
Path = tuple[str, ...]
CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_FORMAT = "kernelspace-jax-checksums"
_MAX_CHECKSUMS_BYTES = 16 << 20  # a checksums file is a few kB; a larger one is not ours
_DEFAULT_ADVICE = "restore the folder from a copy, or write it again (kernelspace-convert, kernelspace_jax.save)"
_NOTED_UNVERIFIED: set[str] = set()  # folders without checksums already logged

log = logging.getLogger(__name__)


class CheckpointMismatchError(CheckpointFormatError):
    """The checkpoint's tensors do not fit the architecture its config describes."""


class CheckpointCorruptError(CheckpointFormatError):
    """A checkpoint folder is damaged: a file missing, truncated or changed since it was written, its
    checksums unreadable, or Orbax failed to restore it. The message names the folder and the item."""


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
    """Writes `model` as an Orbax checkpoint folder (params + config) and its `checksums.json`; atomic: a
    crash leaves no folder (or, between the two, one that loads unverified).

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
    write_checksums(path)
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


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def _sha256(file: str) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _checkpoint_files(path: str) -> list[str]:
    """The files of a checkpoint folder as sorted relative '/'-paths, without the checksums file and its
    temporary files."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/")
            if rel != CHECKSUMS_FILE and not (rel.startswith(f".{CHECKSUMS_FILE}.") and rel.endswith(".tmp")):
                found.append(rel)
    return sorted(found)


def write_checksums(path: str | os.PathLike) -> str:
    """Records the size and SHA-256 of every file of the checkpoint folder `path` in its
    `checksums.json`, written atomically; call it once Orbax has finished writing. Returns the file."""
    path = os.fspath(path)
    files = {}
    for rel in _checkpoint_files(path):
        full = os.path.join(path, rel)
        files[rel] = {"size": os.path.getsize(full), "sha256": _sha256(full)}
    target = os.path.join(path, CHECKSUMS_FILE)
    with atomic_write(target, "w") as handle:
        json.dump({"format": CHECKSUMS_FORMAT, "version": 1, "algorithm": "sha256", "files": files}, handle, indent=1)
        handle.write("\n")
    return target


def _item(rel: str) -> str:
    """The Orbax item a file of a checkpoint belongs to: 'params/d/ab12' -> 'params'."""
    return rel.split("/", 1)[0] if "/" in rel else f"checkpoint metadata ({rel})"


def _read_checksums(path: str, advice: str) -> dict[str, tuple[int, str]] | None:
    """{relative path: (size, sha256)} from `path`'s checksums.json; None if it has none."""
    target = os.path.join(path, CHECKSUMS_FILE)
    if not os.path.lexists(target):
        return None

    def broken(why: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(
            f"{path}: checkpoint damaged: its {CHECKSUMS_FILE} {why}, so the checkpoint cannot be verified; {advice}"
        )

    try:
        info = os.stat(target)
        if not stat.S_ISREG(info.st_mode):
            raise broken("is not a regular file")
        if info.st_size > _MAX_CHECKSUMS_BYTES:
            raise broken(f"is {info.st_size} bytes, not a checksums file")
        with open(target, "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except CheckpointCorruptError:
        raise
    except (OSError, ValueError, RecursionError) as error:
        raise broken(f"is unreadable ({type(error).__name__}: {str(error)[:120]})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != CHECKSUMS_FORMAT
        or manifest.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not files
    ):
        raise broken("is not a checksums file of this package")
    recorded = {}
    for rel, entry in files.items():
        size, digest = (entry.get("size"), entry.get("sha256")) if isinstance(entry, dict) else (None, None)
        parts = rel.split("/")
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(digest, str)
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
            or rel.startswith("/")
            or "\\" in rel
            or not rel.isprintable()  # messages name the file on one line
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise broken(f"has a malformed entry {rel!r:.80}")
        recorded[rel] = (size, digest)
    return recorded


def verify_checksums(path: str | os.PathLike, *, advice: str | None = None) -> bool:
    """Checks every file `path`'s checksums.json records: there, a regular file, of its size and SHA-256.

    Returns True when all match, False when the folder has no checksums.json (an older or foreign
    checkpoint; logged once per folder). Raises CheckpointCorruptError naming the folder, the item and
    the file that differ, and what to do (`advice`, or the default: restore it from a copy or rewrite it).
    """
    path = os.path.abspath(os.fspath(path))
    advice = advice or _DEFAULT_ADVICE
    recorded = _read_checksums(path, advice)
    if recorded is None:
        if path not in _NOTED_UNVERIFIED:
            _NOTED_UNVERIFIED.add(path)
            log.info(
                "note: %s has no %s (written by an older version or other code); loading it unverified",
                path,
                CHECKSUMS_FILE,
            )
        return False
    for rel, (size, digest) in recorded.items():
        full = os.path.join(path, *rel.split("/"))

        def damaged(why: str, rel=rel) -> CheckpointCorruptError:
            return CheckpointCorruptError(
                f"{path}: checkpoint damaged: item '{_item(rel)}': file {rel} {why}; {advice}"
            )

        try:
            info = os.stat(full)
        except FileNotFoundError:
            raise damaged("is missing") from None
        except OSError as error:
            raise damaged(f"cannot be read ({error.strerror or error})") from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise damaged("is not a regular file")
        if info.st_size != size:
            what = "truncated" if info.st_size < size else "grown"
            raise damaged(f"is {info.st_size} bytes, {size} were written ({what})")
        try:
            same = _sha256(full) == digest
        except OSError as error:
            raise damaged(f"cannot be read ({error.strerror or error})") from None
        if not same:
            raise damaged("has changed since it was written (SHA-256 mismatch)")
    return True


def _restore_orbax(path: str, dtype, advice: str | None = None) -> KernelSpaceModel:
    advice = advice or _DEFAULT_ADVICE
    verify_checksums(path, advice=advice)
    ocp, checkpointer = _checkpointer()
    try:
        meta = checkpointer.restore(path, ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as error:  # Orbax, tensorstore and the file system raise many kinds
        raise restore_failed(path, "config", error, advice) from error
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT_NAME:
        raise CheckpointFormatError(f"{path}: not a {FORMAT_NAME} checkpoint (its config has no format tag)")
    try:
        config = KernelSpaceConfig.from_dict(meta["kernel_space"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointFormatError(
            f"{path}: the config item describes no valid architecture ({type(error).__name__}: {error})"
        ) from None
    try:
        params = checkpointer.restore(path, ocp.args.Composite(params=ocp.args.StandardRestore()))["params"]
    except Exception as error:
        raise restore_failed(path, "params", error, advice) from error
    check_params(params, config)
    for name, leaf in traverse_util.flatten_dict(params, sep="/").items():
        if not np.all(np.isfinite(np.asarray(leaf))):  # no trained model has them: a damaged file does
            raise CheckpointCorruptError(
                f"{path}: checkpoint damaged: item 'params': parameter '{name}' holds NaN or inf values; {advice}"
            )
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return KernelSpaceModel(params, config, dtype)


def restore_failed(path: str | os.PathLike, item: str, error: BaseException, advice: str | None = None):
    """The CheckpointCorruptError for an exception Orbax raised while restoring `item` of `path`."""
    reason = " ".join(str(error).split())[:200] or "no message"
    return CheckpointCorruptError(
        f"{os.fspath(path)}: checkpoint damaged: item '{item}' cannot be restored ({type(error).__name__}: "
        f"{reason}); {advice or _DEFAULT_ADVICE}"
    )


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
            others = sorted(s for s in steps if s != chosen)
            advice = (
                f"load another step (step=N, or --step N; available: {others})"
                if others
                else "restore the folder from a copy, or train again"
            )
            return _restore_orbax(steps[chosen], dtype, advice)
    raise CheckpointFormatError(
        f"{path} is neither a .pth file, an Orbax checkpoint of {FORMAT_NAME}, nor a folder of numbered ones"
    )
