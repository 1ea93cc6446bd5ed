"""Kernel banks: G run once over a paired dataset, its kernels (mean, sigma) kept with their PSNR, saved as
.npz and checked against the model that made them (`model_fingerprint`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from kernelspace_jax import xla_options
from kernelspace_jax.data.pairs import pair_batches
from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.kernel_space.model import KernelSpaceModel
from kernelspace_jax.synthesis.kernels import _normal, apply_kernel

BANK_FORMAT = "kernelspace_jax.kernel_bank/1"


@dataclasses.dataclass(frozen=True)
class KernelBank:
    """The kernels G finds in a paired dataset, extracted once (host numpy arrays).

    Attributes:
      mean, sigma: (N, h, w, kernel_dim) float32 (sigma is zeros without a VAE).
      ids: (N,) str, the source records' ids.
      psnr: (N,) float32, PSNR (dB) of F(x, k) clipped against y, k = mean + sigma * eps with eps from
        (seed, record index): the reference's reconstruction log; identity_psnr: of x against y.
      image_size: (H, W) of the images the kernels were extracted from.
      fingerprint: `model_fingerprint` of the model that extracted them.
      meta: what built it (source, crop, seed, ...), JSON-able.
    """

    mean: np.ndarray
    sigma: np.ndarray
    ids: np.ndarray
    psnr: np.ndarray
    identity_psnr: np.ndarray
    image_size: tuple[int, int]
    fingerprint: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        if n == 0:
            raise ValueError("a kernel bank needs at least one kernel; the source had no pairs")
        if self.mean.ndim != 4 or self.mean.shape != self.sigma.shape or self.mean.shape[0] != n:
            raise ValueError(
                f"bank mean and sigma must both be (N={n}, h, w, kernel_dim), got {self.mean.shape} "
                f"and {self.sigma.shape}"
            )
        if self.psnr.shape != (n,) or self.identity_psnr.shape != (n,):
            raise ValueError(f"bank psnr and identity_psnr must be ({n},)")

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, name: str) -> int:
        """The position of a record id, or of a decimal index given as a string."""
        matches = np.flatnonzero(self.ids == name)
        if matches.size:
            return int(matches[0])
        if name.lstrip("-").isdigit() and -len(self) <= int(name) < len(self):
            return int(name) % len(self)
        raise KeyError(f"no kernel with id or index {name!r} in the bank ({len(self)} kernels)")


def model_fingerprint(model: KernelSpaceModel) -> str:
    """A short hash of the model's configuration and parameters (kernels only mean something to it)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_leaves_with_path(model.params):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()[:16]


@xla_options.jit
def _extract_step(model: KernelSpaceModel, keys: jax.Array, sharp: jax.Array, blurry: jax.Array):
    """G's (mean, sigma) and the kernel mean + sigma * eps of each pair, eps from keys[i]."""
    mean, sigma = model.extract(sharp, blurry)
    return mean, sigma, mean + sigma * _normal(keys, mean.shape[1:])


def _psnr(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """(B,) PSNR in dB of images in [0, 1] against references, as dm_pix.psnr."""
    mse = np.mean((images.astype(np.float64) - references) ** 2, axis=(1, 2, 3))
    return (-10 * np.log10(np.maximum(mse, 1e-20))).astype(np.float32)


def build_bank(
    model: KernelSpaceModel,
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    crop: int | None = None,
    seed: int = 0,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> KernelBank:
    """Runs G over every pair of `source` once (batched, jitted) and keeps the kernels with their ids.

    source: random-access records with 'sharp' and 'blurry' (H, W, 3), uint8 or floats in [0, 1], and
    optionally 'id' (e.g. `data.pairs.open_pairs(...)`, a TFDS data source, `SyntheticPairs`).
    crop: centre-crop side; without it all pairs must share one size. The reparameterisation noise of
    the logged reconstruction comes from (seed, record index).
    """
    base = jax.random.key(seed)
    parts: dict[str, list] = {"mean": [], "sigma": [], "psnr": [], "identity_psnr": [], "ids": []}
    size = None
    with tqdm(total=len(source), desc="bank", unit="pair", disable=not progress) as bar:
        for batch in pair_batches(source, batch_size, crop):
            size = size or batch["sharp"].shape[1:3]
            if batch["sharp"].shape[1:3] != size:
                raise ValueError(
                    f"pairs of different sizes ({size} and {batch['sharp'].shape[1:3]}); a bank needs one "
                    "size: pass a crop"
                )
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(batch["index"])
            mean, sigma, kernel = _extract_step(model, keys, batch["sharp"], batch["blurry"])
            reconstruction = np.asarray(apply_kernel(model, batch["sharp"], kernel))
            valid = batch["valid"]
            out = {
                "mean": mean,
                "sigma": sigma,
                "psnr": _psnr(reconstruction, batch["blurry"]),
                "identity_psnr": _psnr(batch["sharp"], batch["blurry"]),
            }
            for name, value in out.items():
                parts[name].append(np.asarray(value, np.float32)[valid])
            parts["ids"] += [i for i, ok in zip(batch["ids"], valid, strict=True) if ok]
            bar.update(int(valid.sum()))
    return KernelBank(
        mean=np.concatenate(parts["mean"]),
        sigma=np.concatenate(parts["sigma"]),
        ids=np.asarray(parts["ids"], dtype=str),
        psnr=np.concatenate(parts["psnr"]),
        identity_psnr=np.concatenate(parts["identity_psnr"]),
        image_size=(int(size[0]), int(size[1])),
        fingerprint=model_fingerprint(model),
        meta={"crop": crop, "seed": seed, **(meta or {})},
    )


def save_bank(bank: KernelBank, path: str | os.PathLike) -> None:
    """Writes the bank to one .npz file atomically (readers see the old file or the whole new one)."""
    header = {
        "format": BANK_FORMAT,
        "image_size": list(bank.image_size),
        "fingerprint": bank.fingerprint,
        "meta": bank.meta,
    }
    with atomic_write(path) as file:
        np.savez(
            file,
            mean=bank.mean,
            sigma=bank.sigma,
            ids=bank.ids,
            psnr=bank.psnr,
            identity_psnr=bank.identity_psnr,
            header=np.asarray(json.dumps(header)),
        )


def load_bank(path: str | os.PathLike, *, model: KernelSpaceModel | None = None) -> KernelBank:
    """Reads a bank written by `save_bank`; with `model`, checks that this model extracted it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no kernel bank at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in ("mean", "sigma", "ids", "psnr", "identity_psnr")}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is not a kernel bank written by save_bank: {error}") from None
    if header.get("format") != BANK_FORMAT:
        raise ValueError(f"{path}: unknown bank format {header.get('format')!r}, expected {BANK_FORMAT!r}")
    bank = KernelBank(
        **arrays,
        image_size=tuple(header["image_size"]),
        fingerprint=header["fingerprint"],
        meta=header["meta"],
    )
    if model is not None:
        check_bank(model, bank)
    return bank


def check_bank(model: KernelSpaceModel, bank: KernelBank) -> None:
    """Raises ValueError unless `model` is the one whose G filled the bank."""
    if bank.mean.shape[-1] != model.config.kernel_dim:
        raise ValueError(
            f"the bank's kernels have {bank.mean.shape[-1]} channels, the model's kernel_dim is "
            f"{model.config.kernel_dim}: it was built with another model"
        )
    if bank.fingerprint != model_fingerprint(model):
        raise ValueError(
            f"the bank was built by another model (fingerprint {bank.fingerprint}, this model's is "
            f"{model_fingerprint(model)}); its kernels only mean something to that model: rebuild it"
        )


def bank_indices(keys: jax.Array, size: int) -> jax.Array:
    """(B,) int32 bank entries drawn uniformly, entry i from keys[i] (as `Augmentation` draws them)."""
    return jax.vmap(lambda k: jax.random.randint(jax.random.split(k)[0], (), 0, size))(keys)
