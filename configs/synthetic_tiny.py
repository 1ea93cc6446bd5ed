"""Recipe `synthetic_tiny` by path from a checkout; its settings: kernelspace_jax/configs/synthetic_tiny.py."""

from kernelspace_jax.configs.synthetic_tiny import get_config

__all__ = ["get_config"]
