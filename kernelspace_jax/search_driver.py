"""The host side of a batched search: batch padding for the device mesh, sharding, and the chunk loop.

Shared by the deep-image-prior search (`search.py`) and the StyleGAN2 search (`stylegan2_search.py`);
each supplies its own compiled chunk, `chunk(state, t0) -> (state, losses (chunk_size, B))`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm


def pad_for_mesh(mesh: jax.sharding.Mesh, *batched: jax.Array) -> tuple[jax.Array, ...]:
    """Repeats the last image of each (B, ...) array until B divides the mesh (the sharded axis must)."""
    spare = -batched[0].shape[0] % mesh.size
    if not spare:
        return batched
    return tuple(jnp.concatenate([a, jnp.repeat(a[-1:], spare, axis=0)]) for a in batched)


def distribute(mesh: jax.sharding.Mesh, batched, replicated):
    """Shards `batched` (pytrees with a leading image axis) over the mesh and replicates `replicated`.

    Returns (batched, replicated, mesh), the mesh None on one device (the chunk then compiles plainly).
    """
    if mesh.size == 1:
        return batched, replicated, None
    images, everywhere = NamedSharding(mesh, P(mesh.axis_names[0])), NamedSharding(mesh, P())
    return jax.device_put(batched, images), jax.device_put(replicated, everywhere), mesh


def run_chunks(
    chunk: Callable, state, total: int, chunk_size: int, batch: int, desc: str, progress: bool
) -> tuple[object, np.ndarray]:
    """Calls `chunk(state, t0)` for t0 = 0, chunk_size, ... < total with a progress bar between calls.

    Returns (final state, losses (batch, total) as numpy); padding images beyond `batch` are dropped.
    """
    losses = []
    with tqdm(total=total, desc=desc, disable=not progress, unit="step") as bar:
        for t0 in range(0, total, chunk_size):
            state, loss = chunk(state, np.int32(t0))
            losses.append(np.asarray(loss))
            bar.update(min(chunk_size, total - t0))
            last = losses[-1][-1][:batch]
            if np.isfinite(last).any():
                bar.set_postfix(loss=f"{np.nanmean(last):.4g}")
    return state, np.concatenate(losses)[:total, :batch].T.copy()
