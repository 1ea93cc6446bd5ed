"""Converts an authors' PyTorch checkpoint to an Orbax checkpoint of this package.

    kernelspace-convert GOPRO_wVAE.pth checkpoints/gopro_wvae

PyTorch is not needed: the `.pth` is read with a restricted unpickler that refuses code. The
architecture is inferred from the tensor shapes and written beside the parameters, so
`kernelspace_jax.load(OUT_DIR)` needs nothing else. --overwrite replaces OUT_DIR only if it is a
checkpoint written by this package. OUT_DIR gets a checksums.json (the SHA-256 of each of its files),
which `kernelspace_jax.load` verifies before it restores anything.
"""

from __future__ import annotations

import sys

from absl import flags

from kernelspace_jax.cli import common
from kernelspace_jax.io.pth import CheckpointFormatError
from kernelspace_jax.kernel_space.checkpoints import load, save

PROG = "kernelspace-convert"


def main(argv: list[str] | None = None) -> int:
    """Converts PTH to OUT_DIR; returns the exit status."""
    fv = flags.FlagValues()
    flags.DEFINE_bool(
        "overwrite", False, "Replace OUT_DIR if it is a checkpoint written by this package.", flag_values=fv
    )
    try:
        pth, out_dir = common.parse(fv, argv, prog=PROG, doc=__doc__, positionals=("pth", "out_dir"))
    except common.HelpShown:
        return 0
    except common.UsageError as error:
        return common.usage_error(PROG, error)
    try:
        model = load(pth)
        path = save(model, out_dir, overwrite=fv.overwrite)
    except (CheckpointFormatError, OSError) as error:  # a damaged input, an output folder that cannot be written
        return common.input_error(error)
    except ValueError as error:  # Orbax refuses to overwrite an existing folder
        return common.input_error(ValueError(f"{error} (use --overwrite to replace it)"))
    print(f"{pth}: {model.config}, {model.num_params():,} parameters")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
