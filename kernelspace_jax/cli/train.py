"""Trains the kernel space (F and G); re-running the same command resumes from --workdir's latest checkpoint.

kernelspace-train --config synthetic_tiny --workdir runs/tiny      # an installed recipe, by name
python train.py --config configs/gopro_wvae.py --workdir runs/gopro_wvae --config.data.batch_size=16
"""

from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from kernelspace_jax import configs


def _flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "A recipe: a configs/*.py file or an installed recipe's name; fields: --config.a.b=v.",
        flag_values=fv,
        sys_argv=argv,
    )
    flags.DEFINE_string("workdir", None, "Folder for checkpoints and logs (created; reused to resume).", flag_values=fv)
    rest = fv(argv)
    if len(rest) > 1:
        raise flags.Error(f"unexpected arguments: {rest[1:]}")
    if fv.config is None or fv.workdir is None:
        raise flags.Error("--config and --workdir are required")
    return fv


def main(argv: list[str] | None = None) -> int:
    """Trains as the flags say; returns the exit status (2: bad flags)."""
    argv = configs.resolve_argv([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    try:
        fv = _flags(argv)
    except (flags.Error, AttributeError, TypeError, ValueError) as error:
        print(f"error: {error}\n(kernelspace-train --help lists the flags)", file=sys.stderr)
        return 2
    from kernelspace_jax.training.loop import train_and_evaluate

    logging.getLogger("kernelspace_jax").setLevel(logging.INFO)
    train_and_evaluate(fv.config, fv.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
