"""Converts an authors' PyTorch checkpoint to an Orbax checkpoint of this package.

    python -m kernelspace_jax.cli.convert GOPRO_wVAE.pth checkpoints/gopro_wvae

PyTorch is not needed: the `.pth` is read with a restricted unpickler that refuses code. The
architecture is inferred from the tensor shapes and written beside the parameters, so
`kernelspace_jax.load(OUT_DIR)` needs nothing else.
"""

from __future__ import annotations

import argparse
import sys

from kernelspace_jax.io.pth import CheckpointFormatError
from kernelspace_jax.kernel_space.checkpoints import load, save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernelspace_jax.cli.convert", description=__doc__.split("\n")[0])
    parser.add_argument("pth", help="KernelWizard state_dict saved by the reference (.pth)")
    parser.add_argument("out_dir", help="Orbax checkpoint folder to write (must not exist)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace out_dir if it is a checkpoint written by this package"
    )
    args = parser.parse_args(argv)
    try:
        model = load(args.pth)
        path = save(model, args.out_dir, overwrite=args.overwrite)
    except (CheckpointFormatError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # Orbax refuses to overwrite an existing folder
        print(f"error: {err} (use --overwrite to replace it)", file=sys.stderr)
        return 1
    print(f"{args.pth}: {model.config}, {model.num_params():,} parameters")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
