"""Recipe `deblur_generic` by path from a checkout; its settings: kernelspace_jax/configs/deblur_generic.py."""

from kernelspace_jax.configs.deblur_generic import get_config

__all__ = ["get_config"]
