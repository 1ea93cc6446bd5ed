"""Recipe `gopro_wvae` by path from a checkout; its settings: kernelspace_jax/configs/gopro_wvae.py."""

from kernelspace_jax.configs.gopro_wvae import get_config

__all__ = ["get_config"]
