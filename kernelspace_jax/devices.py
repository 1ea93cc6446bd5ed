"""The device mesh that training and the searches split their batches over."""

from __future__ import annotations

import jax


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh, axis "data", over every device of every host; batches are split along it."""
    # Auto axes: XLA propagates the batch sharding through the network (no sharding-in-types).
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
