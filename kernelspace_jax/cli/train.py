"""Trains the kernel space (F and G); re-running the same command resumes from --workdir's latest checkpoint.

kernelspace-train --config synthetic_tiny --workdir runs/tiny      # an installed recipe, by name
python train.py --config configs/gopro_wvae.py --workdir runs/gopro_wvae --config.data.batch_size=16

A config or workdir the run cannot use (data.batch_size < 1, an unknown data.kind, model fields of no
architecture, a --workdir that is a file, resuming with another data.worker_count than the checkpoint's)
is refused before anything is compiled: one line on stderr, exit status 1.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from kernelspace_jax import configs
from kernelspace_jax.cli import common

PROG = "kernelspace-train"


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
    common.define_verbosity(fv)
    common.parse(fv, argv[1:], prog=PROG, doc=__doc__)
    common.check_config(fv)
    if fv.config is None or fv.workdir is None:
        raise common.UsageError("--config and --workdir are required")
    return fv


def main(argv: list[str] | None = None) -> int:
    """Trains as the flags say; returns the exit status (1: a config value, workdir, checkpoint or data
    that the run cannot use, or a non-finite loss; 2: bad flags; 130: interrupted after saving)."""
    argv = configs.resolve_argv([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    try:
        fv = _flags(argv)
    except common.HelpShown:
        return 0
    except (common.UsageError, flags.Error, AttributeError, TypeError, ValueError, OSError) as error:
        return common.usage_error(PROG, error)
    common.enable_compilation_cache()
    from kernelspace_jax.training.loop import TrainingInterrupted, train_and_evaluate
    from kernelspace_jax.training.step import NonFiniteLossError

    common.setup_logging(fv.verbosity)
    try:
        train_and_evaluate(fv.config, fv.workdir, raise_on_interrupt=True)
    except TrainingInterrupted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 130
    # Config values, checkpoints (CheckpointFormatError is a ValueError), data and workdirs the run
    # cannot use, and a loss gone non-finite (the last good checkpoint kept): one line, not a traceback.
    except (ValueError, OSError, NonFiniteLossError) as error:
        return common.input_error(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
