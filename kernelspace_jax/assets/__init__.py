"""Files shipped with the package: a small kernel space trained on the synthetic pairs, and its VAE.

`synthetic_tiny/` was made with `python train.py --config configs/synthetic_tiny.py` and
`synthetic_tiny_vae/` with `configs/synthetic_tiny_vae.py` (see docs/training.md#the-shipped-models); they
let deblurring and blur synthesis run right after install.
"""

from __future__ import annotations

import pathlib

SHIPPED_CHECKPOINT = pathlib.Path(__file__).parent / "synthetic_tiny"
SHIPPED_VAE_CHECKPOINT = pathlib.Path(__file__).parent / "synthetic_tiny_vae"
# The blur the shipped models were trained on (configs/synthetic_tiny.py: data.synthetic.kernel_size_range):
# their F blurs like these kernels, so their demos use held-out kernels of the same sizes.
SHIPPED_KERNEL_SIZE_RANGE = (15, 35)


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
