"""Files shipped with the package: a small kernel space trained on the synthetic pairs, and its VAE.

`synthetic_tiny/` was made with `python train.py --config configs/synthetic_tiny.py` and
`synthetic_tiny_vae/` with `configs/synthetic_tiny_vae.py` (see docs/training.md#the-shipped-models); they
let deblurring and blur synthesis run right after install.

`recorded_psfs.npz` holds 100 point-spread functions of real camera shake, recorded by Hradis et al. ("Convolutional
Neural Networks for Direct Text Deblurring", BMVC 2015) and redistributed in pyblur 1.3.0 (MIT licence:
`recorded_psfs.LICENSE`), byte for byte; `recorded_psfs()` reads them. They are blur nobody trained on: the
deblurring benchmark (benchmarks/deblur_quality.py) blurs held-out photographs with them.
"""

from __future__ import annotations

import hashlib
import io
import pathlib

import numpy as np

SHIPPED_CHECKPOINT = pathlib.Path(__file__).parent / "synthetic_tiny"
SHIPPED_VAE_CHECKPOINT = pathlib.Path(__file__).parent / "synthetic_tiny_vae"
# The blur the shipped models were trained on (configs/synthetic_tiny.py: data.synthetic.kernel_size_range):
# their F blurs like these kernels, so their demos use held-out kernels of the same sizes.
SHIPPED_KERNEL_SIZE_RANGE = (15, 35)
RECORDED_PSFS = pathlib.Path(__file__).parent / "recorded_psfs.npz"
RECORDED_PSFS_SHA256 = "c2e4602890bd535e30af2dceada6a50ac05ff5194abcbbe5045b3443cbceb5af"


def shipped_checkpoint_path(vae: bool = False) -> pathlib.Path:
    """The Orbax checkpoint folder of a shipped model (what `kernelspace_jax.load` reads)."""
    path = SHIPPED_VAE_CHECKPOINT if vae else SHIPPED_CHECKPOINT
    if not path.is_dir():
        raise FileNotFoundError(f"the shipped checkpoint is missing from {path}; reinstall the package")
    return path


def load_shipped(*, dtype=None, vae: bool = False):
    """A shipped model, a `KernelSpaceModel` trained on synthetic camera-shake pairs: woVAE, or with
    `vae=True` its VAE (whose prior `synthesis.sample` draws kernels from)."""
    from kernelspace_jax.kernel_space.checkpoints import load

    path = shipped_checkpoint_path(vae)
    return load(path) if dtype is None else load(path, dtype=dtype)


def recorded_psfs() -> list[np.ndarray]:
    """The 100 recorded camera-shake PSFs, in their file's order: (k, k) float32 arrays, k odd from 5 to
    29 px, each >= 0 and summing to 1 (to float32 round-off)."""
    data = RECORDED_PSFS.read_bytes()
    if hashlib.sha256(data).hexdigest() != RECORDED_PSFS_SHA256:
        raise OSError(f"{RECORDED_PSFS} does not match its checksum; reinstall the package")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return [np.asarray(npz[str(i)], np.float32) for i in range(len(npz.files))]
