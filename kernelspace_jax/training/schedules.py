"""Learning-rate schedules of the reference, as optax schedules (functions of the update count)."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import optax


def cosine_annealing_restarts(
    base_lr: float,
    periods: Sequence[int],
    restarts: Sequence[int] = (),
    weights: Sequence[float] | None = None,
    eta_min: float = 0.0,
) -> optax.Schedule:
    """The reference's `CosineAnnealingLR_Restart`, stepped before every update as its train.py does.

    Period i starts at its restart (0 for the first) and anneals from base_lr * weight_i down to eta_min
    over periods[i] steps: lr = eta_min + (base_lr * w - eta_min) * (1 + cos(pi * t / T)) / 2. The
    reference shifts its restart steps by one and steps the scheduler before each update, so the n-th
    update (optax count n - 1) uses the value at reference step n.
    """
    weights = tuple(weights) if weights is not None else (1.0,) * len(restarts)
    if len(weights) != len(restarts) or len(periods) < len(restarts) + 1:
        raise ValueError(
            "need len(weights) == len(restarts) and len(periods) > len(restarts); "
            f"got {len(weights)} weights, "
            f"{len(restarts)} restarts, {len(periods)} periods"
        )
    starts = jnp.asarray([0, *(r + 1 for r in restarts)])
    peaks = jnp.asarray([base_lr, *(base_lr * w for w in weights)], jnp.float32)
    lengths = jnp.asarray(periods[: len(restarts) + 1], jnp.float32)

    def schedule(count):
        step = jnp.asarray(count) + 1
        period = jnp.sum(step >= starts) - 1
        t = (step - starts[period]).astype(jnp.float32)
        return eta_min + (peaks[period] - eta_min) * (1 + jnp.cos(jnp.pi * t / lengths[period])) / 2

    return schedule
