"""The kernel-encoding table: how well F(x, G(x, y)) reproduces held-out blurry images.

    kernelspace-evaluate --checkpoint runs/tiny --data synthetic
    kernelspace-evaluate --checkpoint GOPRO_wVAE.pth --data tfds:gopro:test --crop 256
    kernelspace-evaluate --checkpoint ckpt/ --data folders:pairs/test/blur:pairs/test/sharp

Prints PSNR and SSIM of the reconstruction against the blurry image, with the identity baseline
(the sharp image itself) beside them; --json writes the same numbers to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kernelspace_jax.data import pipeline
from kernelspace_jax.data.pairs import open_pairs
from kernelspace_jax.io.pth import CheckpointFormatError
from kernelspace_jax.kernel_space.checkpoints import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernelspace-evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help=".pth, Orbax checkpoint, or training workdir")
    parser.add_argument("--step", type=int, default=None, help="step of a training workdir (default: latest)")
    parser.add_argument(
        "--data",
        default="synthetic",
        help="synthetic[:split] | tfds:<name>:<split> | folders:<blur>:<sharp> | folder with blur/ and sharp/",
    )
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--num", type=int, default=16, help="number of synthetic test pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic test pairs")
    parser.add_argument("--crop", type=int, default=None, help="centre-crop side (default: full images, batch 1)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--json", default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    from kernelspace_jax.training.loop import evaluate

    try:
        model = load(args.checkpoint, step=args.step)
        source = open_pairs(args.data, data_dir=args.data_dir, num=args.num, seed=args.seed, flag="--data")
    except (CheckpointFormatError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    batch_size = args.batch_size if args.crop else 1
    batches = pipeline.make_eval_batches(
        source, batch_size=batch_size, crop_size=args.crop, shard_count=1, shard_index=0
    )
    scores, _ = evaluate(model, batches)
    table = {k.removeprefix("eval/"): round(v, 4) for k, v in scores.items()}
    print(f"{args.data}: {len(source)} pairs, checkpoint {args.checkpoint}")
    print("| metric | F(x, G(x, y)) vs y | identity (x vs y) |")
    print("|---|---|---|")
    print(f"| PSNR (dB) | {table['psnr']:.2f} | {table['identity_psnr']:.2f} |")
    print(f"| SSIM | {table['ssim']:.4f} | {table['identity_ssim']:.4f} |")
    if batch_size > 1:  # F(x, k of another pair): near psnr when F ignores k
        print(f"| PSNR with another pair's kernel (dB) | {table['swapped_psnr']:.2f} | |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"data": args.data, "checkpoint": args.checkpoint, "pairs": len(source), **table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
