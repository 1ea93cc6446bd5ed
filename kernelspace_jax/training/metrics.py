"""Evaluation of the kernel space and the writers that record training.

The kernel-encoding metric of the paper: how well F(x, G(x, y)) reproduces the blurry y, as PSNR and
SSIM against y, beside the identity baseline PSNR(x, y) (doing nothing). A third figure tells whether
F uses its kernel at all: PSNR against y of F(x, k') with k' the kernel of the next pair in the batch
("swapped"). A kernel space that only learnt an average blur scores the same with either kernel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax.kernel_space.model import KernelSpaceModel


def reconstruction_metrics(model: KernelSpaceModel, sharp: jax.Array, blurry: jax.Array) -> dict[str, jax.Array]:
    """Per-image metrics of F(x, mean of G(x, y)) against y; inputs (B, H, W, 3) in [0, 1].

    Returns {"psnr", "ssim", "identity_psnr", "identity_ssim", "swapped_psnr"}, each (B,), and
    "reconstruction" (B, H, W, 3). swapped_psnr uses the kernel of pair (i + 1) % B for pair i (equal
    to psnr when B is 1).
    """
    mean, _ = model.extract(sharp, blurry)
    reconstruction = jnp.clip(model.blur(sharp, mean), 0.0, 1.0)
    swapped = jnp.clip(model.blur(sharp, jnp.roll(mean, -1, axis=0)), 0.0, 1.0)
    return {
        "psnr": pix.psnr(reconstruction, blurry),
        "swapped_psnr": pix.psnr(swapped, blurry),
        "ssim": pix.ssim(reconstruction, blurry),
        "identity_psnr": pix.psnr(sharp, blurry),
        "identity_ssim": pix.ssim(sharp, blurry),
        "reconstruction": reconstruction,
    }


class MetricWriter:
    """Scalars to `metrics.jsonl` (one JSON object a line) and TensorBoard event files, both in `logdir`.

    TensorBoard files are written with tensorboardX, which needs no TensorFlow.
    """

    def __init__(self, logdir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        os.makedirs(logdir, exist_ok=True)
        self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a", encoding="utf-8")
        self._tb = SummaryWriter(os.fspath(logdir))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.enabled:
            self._tb.add_image(name, image, int(step), dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
