"""`python deblur.py ...` from a checkout: the same command as `kernelspace-deblur` (kernelspace_jax/cli/deblur.py)."""

import sys

from kernelspace_jax.cli.deblur import main

if __name__ == "__main__":
    sys.exit(main())
