"""`python train.py ...` from a checkout: the same command as `kernelspace-train` (kernelspace_jax/cli/train.py)."""

import sys

from kernelspace_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
