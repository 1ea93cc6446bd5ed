"""The search engine every deblurring prior plugs into: chunks of steps, batches, devices, progress.

A prior (deep image priors in `dip.py`, StyleGAN2 in `stylegan2/search.py`) supplies a per-image state,
its initialisation and `step(state, *batched_inputs, t) -> (state, losses (B,))` over a batch. The
engine gives it
  - `scan_chunk`: `chunk_size` steps in one `lax.scan`, the images vmapped or, on CPUs, taking turns
    (`in_turns`); step counts are traced, so one compiled chunk serves any number of iterations;
  - `shard_images`: the chunk split over a device mesh's first axis by `shard_map` (no communication);
  - `pad_for_mesh`, `distribute`, `run_chunks`: the host side (batch padding to the mesh, sharding,
    the loop of compiled chunks with a progress bar between them);
  - `chunking`, `all_finite`, `DeblurResult` and a trace counter (per-image keys: `kernel_space.inputs`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

BATCH_MODES = ("auto", "vmap", "map")
CPU_CHUNK_SIZE, ACCELERATOR_CHUNK_SIZE = 10, 50  # steps per compiled call for config.chunk_size = 0

_TRACES: collections.Counter = collections.Counter()


def count_trace(search: str) -> None:
    """Called inside a compiled chunk's Python body: counts one trace (compilation) of `search`."""
    _TRACES[search] += 1


def trace_count(search: str) -> int:
    """How often `search`'s chunk has been traced (compiled) in this process; for tests and benchmarks."""
    return _TRACES[search]


class DeblurResult(NamedTuple):
    """sharp, reblurred (B, H, W, 3) float32 (sharp in [0, 1]); kernel (B, h, w, kernel_dim); history."""

    sharp: jax.Array
    kernel: jax.Array
    reblurred: jax.Array
    history: dict[str, Any]


def chunking(config: ml_collections.ConfigDict) -> tuple[int, bool]:
    """(steps per compiled chunk, whether the images take turns) from config.chunk_size and batch_mode.

    Every call maps XLA's working memory afresh (1-4 GiB at 256 px, whose page faults are costly on a CPU),
    so a chunk holds several steps; 10 on CPUs still keeps the progress bar moving at 256 px. On
    CPUs the images take turns by default (`in_turns`); on accelerators they are vmapped.
    """
    if config.chunk_size < 0:
        raise ValueError(f"need chunk_size >= 0, got {config.chunk_size}")
    cpu = jax.default_backend() == "cpu"
    chunk_size = int(config.chunk_size) or (CPU_CHUNK_SIZE if cpu else ACCELERATOR_CHUNK_SIZE)
    batch_mode = config.get("batch_mode", "auto")
    if batch_mode not in BATCH_MODES:
        raise ValueError(f"batch_mode must be one of {BATCH_MODES}, got {batch_mode!r}")
    return chunk_size, batch_mode == "map" or (batch_mode == "auto" and cpu)


def all_finite(*trees) -> jax.Array:
    """True (a scalar) when every leaf of every tree is finite.

    The leaves' flags are combined by a dot product: XLA turns `jnp.all` of a few hundred flags into a
    chain of `and`s and copies that chain into every fusion that reads the result (the update of each
    parameter and optimiser leaf), which made a search chunk 200k instructions long and its
    compilation twice as slow; a dot it computes once.
    """
    flags = jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(trees)]).astype(jnp.float32)
    return jnp.dot(flags, jnp.ones_like(flags)) == flags.size


def in_turns(run, state, *inputs, steps: int):
    """`run` on each image in turn as a batch of one; returns (state, losses (steps, B)) like `run`'s.

    run(state, *inputs) -> (state, losses (steps, b)) takes batched pytrees (leading image axis b). Each
    image's slice of the state is taken out, advanced and written back in place (lax.map would stack the
    new states in a second buffer), so a batch costs what its images cost alone.
    """
    batch = jax.tree.leaves(inputs)[0].shape[0]

    def one_image(i, carry):
        state, losses = carry
        image = lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1)
        new, loss = run(*jax.tree.map(image, (state, *inputs)))
        put = lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, i, 0)
        return jax.tree.map(put, state, new), jax.lax.dynamic_update_slice_in_dim(losses, loss, i, 1)

    return jax.lax.fori_loop(0, batch, one_image, (state, jnp.zeros((steps, batch), jnp.float32)))


def scan_chunk(step: Callable, state, batched: tuple, t0: jax.Array, *, chunk_size: int, sequential: bool):
    """Steps t0 .. t0 + chunk_size - 1 of a batch: (state, losses (chunk_size, B)).

    step(state, *batched, t) -> (state, losses (B,)) advances every image of a batch (leading axis) by
    step t. With `sequential` (CPUs) the images take turns (`in_turns`), each running all the chunk's
    steps as a batch of one: vmap would turn each image's own prior weights into grouped convolutions,
    which XLA:CPU runs slower than one image's, and taking turns at every step would slice each image's
    state out of the batch and back at every step, not once per chunk.
    """
    steps = t0 + jnp.arange(chunk_size, dtype=jnp.int32)

    def run(state, *batched):
        return jax.lax.scan(lambda state, t: step(state, *batched, t), state, steps)

    if sequential:
        return in_turns(run, state, *batched, steps=chunk_size)
    return run(state, *batched)


def shard_images(chunk: Callable, mesh: jax.sharding.Mesh | None, num_batched: int, num_shared: int) -> Callable:
    """`chunk(*batched, *shared) -> (state, losses (steps, B))` split over the mesh's first axis.

    The first `num_batched` arguments have a leading image axis, the other `num_shared` are the same on
    every device. Each device runs the chunk on its own images and nothing is communicated. (Left to
    XLA's partitioner, the grouped convolutions that vmap makes of per-image weights are split wrongly.)
    Without a mesh, or on one device, `chunk` itself.
    """
    if mesh is None or mesh.size == 1:
        return chunk
    images, shared = P(mesh.axis_names[0]), P()
    specs = (images,) * num_batched + (shared,) * num_shared
    # check_vma off: the custom VJPs of models/layers.py do not annotate per-device values.
    return jax.shard_map(
        chunk, mesh=mesh, in_specs=specs, out_specs=(images, P(None, mesh.axis_names[0])), check_vma=False
    )


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
