"""Rosinality StyleGAN2 checkpoints -> variables of `models.stylegan2.Generator`.

A checkpoint is `torch.save({"g_ema": generator_state_dict, ...})`, read without torch by `read_pth`.
The architecture (size, style_dim, n_mlp, channel widths) is inferred from the tensor shapes, then
every key and shape of `g_ema` is checked.

The reference (DSD) loads `g_ema` with `strict=False`. What this converter tolerates, and what not:
  - missing `noises.noise_i` buffers: tolerated (DSD passes explicit noise); the 'buffers' collection is
    then left out, so `randomize_noise=False` without `noise` needs buffers from `init_generator`;
  - missing blur-kernel buffers: tolerated (they are constants); stored ones must equal the [1,3,3,1] kernel;
  - other top-level entries: `latent_avg` (mean w, for truncation) is returned; "g", "d", optimiser
    states etc. are listed in `ignored`;
  - missing or unexpected generator parameters, and wrong shapes: errors (`strict=False` would silently
    keep random weights for missing ones, and errors on shapes too).
A checkpoint written by rosinality's `train.py` also pickles `args` (an `argparse.Namespace`);
`read_pth` refuses that global, so such a file must be re-saved without `args` first.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from kernelspace_jax.io.pth import CheckpointFormatError, read_pth
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.stylegan2 import Generator, channel_widths, init_generator, make_kernel

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StyleGAN2Checkpoint:
    """A converted checkpoint: `generator.apply(variables, ...)` reproduces the reference's `g_ema`."""

    generator: Generator
    variables: dict  # {'params': ..., 'buffers': ...}; 'buffers' only when all noise buffers are stored
    latent_avg: np.ndarray | None  # (style_dim,) float32, when the checkpoint has one
    ignored: tuple[str, ...]  # top-level entries other than g_ema and latent_avg
    missing_buffers: tuple[str, ...]  # tolerated missing g_ema keys (noise and blur-kernel buffers)


def _module_name(name: str) -> str:
    return re.sub(r"^(convs|to_rgbs)_(\d+)$", r"\1.\2", name)


def torch_key(collection: str, path: Path) -> str:
    """The `g_ema` key of our variable at `path`, e.g. ('convs_0', 'bias') -> 'convs.0.activate.bias'."""
    if collection == "buffers":
        return ".".join(path)  # ('noises', 'noise_3')
    if path == ("input",):
        return "input.input"
    head, *rest = path
    if head == "style":
        return f"style.{rest[0].removeprefix('linear_')}.{rest[1]}"
    if rest == ["noise_strength"]:
        rest = ["noise", "weight"]
    elif rest == ["bias"] and not head.startswith("to_rgb"):
        rest = ["activate", "bias"]
    return ".".join([_module_name(head), *rest])


def _torch_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if key.endswith(".conv.weight"):  # ours (k, k, in, out), reference (1, out, in, k, k)
        k, _, cin, cout = shape
        return (1, cout, cin, k, k)
    if len(shape) == 4:  # NHWC constant input, ToRGB bias and noise <-> NCHW
        n, h, w, c = shape
        return (n, c, h, w)
    return tuple(reversed(shape))  # linear (in, out) <-> (out, in); 1-D unchanged


def _to_ours(key: str, value: np.ndarray) -> np.ndarray:
    if key.endswith(".conv.weight"):
        return value[0].transpose(2, 3, 1, 0)
    if value.ndim == 4:
        return value.transpose(0, 2, 3, 1)
    return value.T


def _blur_kernel_keys(generator: Generator) -> list[str]:
    return [
        key
        for j in range(generator.log_size - 2)
        for key in (f"convs.{2 * j}.conv.blur.kernel", f"to_rgbs.{j}.upsample.kernel")
    ]


def _split_checkpoint(checkpoint: Any) -> tuple[Mapping[str, Any], Any, tuple[str, ...]]:
    """(g_ema state_dict, latent_avg or None, ignored top-level keys); a bare g_ema is accepted too."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(
            f"not a StyleGAN2 checkpoint: expected a dict with a 'g_ema' entry, got {type(checkpoint).__name__}"
        )
    if "g_ema" in checkpoint:
        g_ema = checkpoint["g_ema"]
        if not isinstance(g_ema, Mapping) or not all(isinstance(k, str) for k in g_ema):
            kind = type(g_ema).__name__
            raise CheckpointFormatError(f"'g_ema' is not a state_dict (a dict of named tensors): {kind}")
        ignored = tuple(str(k) for k in checkpoint if k not in ("g_ema", "latent_avg"))
        return g_ema, checkpoint.get("latent_avg"), ignored
    if "input.input" in checkpoint and "conv1.conv.weight" in checkpoint:
        return checkpoint, None, ()
    keys = [str(k) for k in checkpoint]
    hint = ""
    if any(k.startswith(("feature_extractor.", "kernel_extractor.", "adapter.", "module.")) for k in keys):
        hint = "; it looks like a KernelWizard state_dict, which kernelspace_jax.load reads"
    raise CheckpointFormatError(
        f"not a StyleGAN2 checkpoint: no 'g_ema' entry and no generator keys (found e.g. {keys[:3]}){hint}"
    )


def _max_index(state: Mapping[str, Any], prefix: str) -> int:
    """The largest i of the keys '<prefix>.<i>.*' (-1 if none); a gap then shows as a missing key."""
    return max((int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))), default=-1)


def _dim(state: Mapping[str, Any], key: str, ndim: int, axis: int) -> int:
    """Size of `axis` of the tensor `key`, which must exist and have `ndim` dimensions."""
    if key not in state:
        raise CheckpointMismatchError(f"missing key '{key}': every StyleGAN2 generator has it")
    shape = np.shape(state[key])
    if len(shape) != ndim:
        raise CheckpointMismatchError(f"'{key}' has shape {shape}, expected {ndim} dimensions")
    return int(shape[axis])


def infer_generator(g_ema: Mapping[str, Any], lr_mlp: float = 0.01) -> Generator:
    """The `Generator` a `g_ema` state_dict describes (lr_mlp cannot be read from shapes; 0.01 as DSD)."""
    style_dim = _dim(g_ema, "conv1.conv.modulation.weight", 2, 1)
    n_rgbs = _max_index(g_ema, "to_rgbs") + 1
    widths = (
        _dim(g_ema, "input.input", 4, 1),
        *(_dim(g_ema, f"convs.{2 * j}.conv.weight", 5, 1) for j in range(n_rgbs)),
    )
    size = 2 ** (n_rgbs + 2)
    # the width at 64 px is 256 * channel_multiplier; explicit widths only when they fit no table
    multiplier = max(widths[4] // 256, 1) if size >= 64 else 2
    table = channel_widths(size, multiplier) == widths
    return Generator(
        size=size,
        style_dim=style_dim,
        n_mlp=max(_max_index(g_ema, "style"), 0),
        channel_multiplier=multiplier if table else 2,
        channels=None if table else widths,
        lr_mlp=lr_mlp,
    )


def _abstract_variables(generator: Generator) -> dict:
    return jax.eval_shape(lambda key: init_generator(generator, key), jax.random.key(0))


def variables_from_g_ema(
    g_ema: Mapping[str, Any], generator: Generator | None = None
) -> tuple[dict, Generator, tuple[str, ...]]:
    """Converts a `g_ema` state_dict; returns (variables, generator, tolerated missing buffer keys).

    Raises CheckpointMismatchError naming the first unexpected key, missing parameter, wrong shape or dtype.
    """
    generator = generator or infer_generator(g_ema)
    described = (
        f"Generator(size={generator.size}, style_dim={generator.style_dim}, "
        f"n_mlp={generator.n_mlp}, channels={generator.widths})"
    )
    expected = {
        torch_key(col, path): (col, path, leaf.shape)
        for col, tree in _abstract_variables(generator).items()
        for path, leaf in traverse_util.flatten_dict(tree).items()
    }
    kernels = _blur_kernel_keys(generator)
    for key in g_ema:
        if key not in expected and key not in kernels:
            raise CheckpointMismatchError(f"unexpected key '{key}' in g_ema for {described}")
    blur = np.asarray(make_kernel(generator.blur_kernel) * 4)
    for key in kernels:
        stored = g_ema.get(key, blur)
        if np.shape(stored) != blur.shape or not np.allclose(stored, blur, atol=1e-6):
            raise CheckpointMismatchError(f"'{key}' is not the blur kernel of {list(generator.blur_kernel)}")
    flat: dict[str, dict[Path, jax.Array]] = {}
    missing = [key for key in kernels if key not in g_ema]
    for key, (col, path, shape) in expected.items():
        if key not in g_ema:
            if col == "buffers":
                missing.append(key)
                continue
            raise CheckpointMismatchError(f"missing key '{key}' in g_ema for {described}")
        value = np.asarray(g_ema[key])
        if value.shape != _torch_shape(key, shape):
            raise CheckpointMismatchError(
                f"'{key}' has shape {value.shape}, expected {_torch_shape(key, shape)} for {described}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointMismatchError(f"'{key}' has dtype {value.dtype}, expected floating point")
        flat.setdefault(col, {})[path] = jnp.asarray(_to_ours(key, value), jnp.float32)
    variables = {"params": traverse_util.unflatten_dict(flat["params"])}
    if not any(key.startswith("noises.") for key in missing):
        variables["buffers"] = traverse_util.unflatten_dict(flat["buffers"])
    return variables, generator, tuple(missing)


def load_stylegan2(source: str | os.PathLike | Mapping, lr_mlp: float = 0.01) -> StyleGAN2Checkpoint:
    """Reads a rosinality StyleGAN2 `.pth`/`.pt` (or an already-read dict) into a `StyleGAN2Checkpoint`.

    Raises:
      CheckpointFormatError: not a StyleGAN2 checkpoint (e.g. a KernelWizard state_dict), or unreadable.
      CheckpointMismatchError: the tensors do not fit the architecture their shapes describe.
      UnsafeCheckpointError: the pickle names a global outside `read_pth`'s allow-list.
    """
    checkpoint = read_pth(source) if isinstance(source, (str, os.PathLike)) else source
    g_ema, latent_avg, ignored = _split_checkpoint(checkpoint)
    variables, generator, missing = variables_from_g_ema(g_ema, infer_generator(g_ema, lr_mlp))
    if latent_avg is not None:
        latent_avg = np.asarray(latent_avg, np.float32)
        if latent_avg.shape != (generator.style_dim,):
            raise CheckpointMismatchError(f"latent_avg has shape {latent_avg.shape}, expected ({generator.style_dim},)")
    return StyleGAN2Checkpoint(generator, variables, latent_avg, ignored, missing)
