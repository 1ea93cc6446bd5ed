"""Recipe `mix_wovae` by path from a checkout; its settings: kernelspace_jax/configs/mix_wovae.py."""

from kernelspace_jax.configs.mix_wovae import get_config

__all__ = ["get_config"]
