"""Flax modules: layers, and the kernel-space network holding F and G."""
