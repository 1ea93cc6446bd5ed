"""Recipe `synthetic_tiny_vae` by path from a checkout; its settings: kernelspace_jax/configs/synthetic_tiny_vae.py."""

from kernelspace_jax.configs.synthetic_tiny_vae import get_config

__all__ = ["get_config"]
