"""Recipe `deblur_stylegan2` by path from a checkout; its settings: kernelspace_jax/configs/deblur_stylegan2.py."""

from kernelspace_jax.configs.deblur_stylegan2 import get_config

__all__ = ["get_config"]
