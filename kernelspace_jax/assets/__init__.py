"""Files shipped with the package: a small kernel space trained on the synthetic pairs.

`synthetic_tiny/` was made with `python train.py --config configs/synthetic_tiny.py` (see README,
"The shipped model"); it lets deblurring and blur synthesis run right after install.
"""

from __future__ import annotations

import pathlib

SHIPPED_CHECKPOINT = pathlib.Path(__file__).parent / "synthetic_tiny"
# The blur the shipped model was trained on (configs/synthetic_tiny.py: data.synthetic.kernel_size_range):
# its F blurs like these kernels, so its demos use held-out kernels of the same sizes.
SHIPPED_KERNEL_SIZE_RANGE = (15, 35)


def shipped_checkpoint_path() -> pathlib.Path:
    """The Orbax checkpoint folder of the shipped model (what `kernelspace_jax.load` reads)."""
    if not SHIPPED_CHECKPOINT.is_dir():
        raise FileNotFoundError(f"the shipped checkpoint is missing from {SHIPPED_CHECKPOINT}; reinstall the package")
    return SHIPPED_CHECKPOINT


def load_shipped(dtype=None):
    """The shipped model, a `KernelSpaceModel` (woVAE, trained on synthetic camera-shake pairs)."""
    from kernelspace_jax.checkpoints import load

    return load(shipped_checkpoint_path()) if dtype is None else load(shipped_checkpoint_path(), dtype=dtype)
