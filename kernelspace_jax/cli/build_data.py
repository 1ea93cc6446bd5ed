"""Builds a TFDS dataset of sharp/blurry pairs from a folder on disk (nothing is downloaded).

    python -m kernelspace_jax.cli.build_data gopro --manual_dir /data/GOPRO_Large --data_dir ~/tensorflow_datasets
    python -m kernelspace_jax.cli.build_data reds --manual_dir /data/REDS
    python -m kernelspace_jax.cli.build_data paired_folders --manual_dir runs/synthetic_pairs --skip_bad

Bad pairs (unmatched files, size mismatches, unreadable images) stop the build with a report unless
--skip_bad is given. A dataset that is already built is reused.
"""

from __future__ import annotations

import argparse
import os
import sys

from kernelspace_jax.data import tfds_builders
from kernelspace_jax.data.paired_folders import BadPairsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kernelspace_jax.cli.build_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("name", help="gopro, gopro/blur_gamma, reds or paired_folders")
    parser.add_argument("--manual_dir", required=True, help="the dataset's folder")
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"), help="TFDS data_dir")
    parser.add_argument("--skip_bad", action="store_true", help="drop bad pairs instead of stopping")
    args = parser.parse_args(argv)
    try:
        builder = tfds_builders.build(args.name, args.manual_dir, args.data_dir, skip_bad=args.skip_bad)
    except (BadPairsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, info in builder.info.splits.items():
        print(f"{args.name} {split}: {info.num_examples} pairs")
    print(f"built in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
