"""Builds a TFDS dataset of sharp/blurry pairs from a folder on disk (nothing is downloaded).

    kernelspace-build-data gopro --manual_dir /data/GOPRO_Large --data_dir ~/tensorflow_datasets
    kernelspace-build-data reds --manual_dir /data/REDS
    kernelspace-build-data paired_folders --manual_dir runs/synthetic_pairs --skip_bad

NAME is gopro, gopro/blur_gamma, reds or paired_folders. Bad pairs (unmatched files, size
mismatches, unreadable images) stop the build with a report unless --skip_bad is given. A dataset
that is already built is reused.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from kernelspace_jax.cli import common
from kernelspace_jax.data import tfds_builders
from kernelspace_jax.data.paired_folders import BadPairsError

PROG = "kernelspace-build-data"


def main(argv: list[str] | None = None) -> int:
    """Builds dataset NAME from --manual_dir; returns the exit status."""
    fv = flags.FlagValues()
    flags.DEFINE_string("manual_dir", None, "The dataset's folder.", flag_values=fv)
    flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data_dir.", flag_values=fv)
    flags.DEFINE_bool("skip_bad", False, "Drop bad pairs instead of stopping.", flag_values=fv)
    try:
        (name,) = common.parse(fv, argv, prog=PROG, doc=__doc__, positionals=("name",))
        if fv.manual_dir is None:
            raise common.UsageError("--manual_dir is required")
    except common.HelpShown:
        return 0
    except common.UsageError as error:
        return common.usage_error(PROG, error)
    try:
        builder = tfds_builders.build(name, fv.manual_dir, fv.data_dir, skip_bad=fv.skip_bad)
    except (BadPairsError, FileNotFoundError, ValueError) as error:
        return common.input_error(error)
    for split, info in builder.info.splits.items():
        print(f"{name} {split}: {info.num_examples} pairs")
    print(f"built in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
