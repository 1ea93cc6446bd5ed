"""The kernel-encoding table: how well F(x, G(x, y)) reproduces held-out blurry images.

    kernelspace-evaluate --checkpoint runs/tiny --data synthetic
    kernelspace-evaluate --checkpoint GOPRO_wVAE.pth --data tfds:gopro:test --crop 256
    kernelspace-evaluate --checkpoint ckpt/ --data folders:pairs/test/blur:pairs/test/sharp

Prints PSNR and SSIM of the reconstruction against the blurry image, with the identity baseline
(the sharp image itself) beside them; --json writes the same numbers to a file.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from kernelspace_jax.cli import common
from kernelspace_jax.data import pipeline
from kernelspace_jax.data.pairs import open_pairs
from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.io.pth import CheckpointFormatError
from kernelspace_jax.kernel_space.checkpoints import load
from kernelspace_jax.kernel_space.inputs import MIN_SIDE

PROG = "kernelspace-evaluate"
SPEC_HELP = (
    "synthetic[:split] | tfds:<name>:<split> | folders:<blurry root>:<sharp root> | a folder with blur/ and sharp/."
)


def _flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("checkpoint", None, ".pth, Orbax checkpoint, or training workdir.", flag_values=fv)
    flags.DEFINE_integer("step", None, "Step of a training workdir (default: latest).", flag_values=fv)
    flags.DEFINE_string("data", "synthetic", "Held-out pairs: " + SPEC_HELP, flag_values=fv)
    flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data_dir.", flag_values=fv)
    flags.DEFINE_integer("num", 16, "Number of synthetic test pairs.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic test pairs.", flag_values=fv)
    flags.DEFINE_integer(
        "crop", None, "Centre-crop side (default: full images, batch 1).", lower_bound=MIN_SIDE, flag_values=fv
    )
    flags.DEFINE_integer("batch_size", 4, "Pairs per batch (with --crop).", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("json", None, "Also write the table to this JSON file.", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """Prints the table for --checkpoint on --data; returns the exit status."""
    fv = _flags()
    try:
        common.parse(fv, argv, prog=PROG, doc=__doc__)
        if fv.checkpoint is None:
            raise common.UsageError("--checkpoint is required")
    except common.HelpShown:
        return 0
    except common.UsageError as error:
        return common.usage_error(PROG, error)
    common.enable_compilation_cache()
    from kernelspace_jax.training.loop import evaluate

    try:
        source = open_pairs(fv.data, data_dir=fv.data_dir, num=fv.num, seed=fv.seed, flag="--data")
        model = load(fv.checkpoint, step=fv.step)
        batch_size = fv.batch_size if fv.crop else 1
        batches = pipeline.make_eval_batches(
            source, batch_size=batch_size, crop_size=fv.crop, shard_count=1, shard_index=0
        )
        scores, _ = evaluate(model, batches)
    except (CheckpointFormatError, OSError, ValueError) as error:
        return common.input_error(error)
    table = {k.removeprefix("eval/"): round(v, 4) for k, v in scores.items()}
    print(f"{fv.data}: {len(source)} pairs, checkpoint {fv.checkpoint}")
    print("| metric | F(x, G(x, y)) vs y | identity (x vs y) |")
    print("|---|---|---|")
    print(f"| PSNR (dB) | {table['psnr']:.2f} | {table['identity_psnr']:.2f} |")
    print(f"| SSIM | {table['ssim']:.4f} | {table['identity_ssim']:.4f} |")
    if batch_size > 1:  # F(x, k of another pair): near psnr when F ignores k
        print(f"| PSNR with another pair's kernel (dB) | {table['swapped_psnr']:.2f} | |")
    if fv.json:
        with atomic_write(fv.json, "w") as file:
            json.dump({"data": fv.data, "checkpoint": fv.checkpoint, "pairs": len(source), **table}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
