"""Pure pieces of the StyleGAN2 latent search (DSD): GEOCROSS, the spherical step, the x-step schedule.

Reference: `LossBuilderStyleGAN2._loss_geocross` (models/losses/dsd_loss.py), `SphericalOptimizer`
(models/dsd/spherical_optimizer.py) and the `lr_schedule` table of `DSD.initialize_optimizers`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

SPHERE_EPS = 1e-9


def geocross(latent: jax.Array) -> jax.Array:
    """Mean squared geodesic (angular) distance between the w vectors of each sample, summed over samples.

    latent: (B, n, d), the reference's (B, 14, 512) -> scalar. As the reference: the n x n mean includes
    the diagonal, is scaled by d (512) and divided by the constant 6.0, and n == 1 gives 0.
    """
    batch, n, d = latent.shape
    if n == 1:
        return jnp.zeros((), latent.dtype)
    x, y = latent.reshape(batch, 1, n, d), latent.reshape(batch, n, 1, d)
    a = jnp.sqrt(jnp.sum((x - y) ** 2, axis=-1) + 1e-9)
    b = jnp.sqrt(jnp.sum((x + y) ** 2, axis=-1) + 1e-9)
    dist = 2 * jnp.arctan2(a, b)
    return jnp.sum(jnp.mean(dist**2 * d, axis=(1, 2)) / 6.0)


def _sphere_axes(x: jax.Array) -> tuple[int, ...]:
    # The reference normalises over dims >= 2 of NCHW noise, i.e. over H and W; ours is NHWC.
    return (1, 2) if x.ndim == 4 else tuple(range(2, x.ndim))


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x**2, axis=_sphere_axes(x), keepdims=True) + SPHERE_EPS)


def sphere_radii(params: Any) -> Any:
    """Radii, fixed when the optimiser is built.

    latent (B, n, d) -> (B, n, 1); NHWC noise (B, H, W, C) -> (B, 1, 1, C).
    """
    return jax.tree.map(_norm, params)


def project_to_sphere(params: Any, radii: Any) -> Any:
    """Renormalises every array of `params` to its radius in `radii` (same tree): p / |p| * r."""
    return jax.tree.map(lambda p, r: p / _norm(p) * r, params, radii)


def spherical_step(
    optimizer: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any, radii: Any
) -> tuple[Any, Any]:
    """One `SphericalOptimizer.step`: the inner optimiser's step, then the projection -> (params, state).

    The projection does not touch the optimiser's state (Adam's moments), as in the reference.
    """
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return project_to_sphere(optax.apply_updates(params, updates), radii), opt_state


class SphereState(NamedTuple):
    inner: Any  # the inner optimiser's state
    radii: Any  # sphere_radii of the parameters `init` saw


def on_sphere(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`SphericalOptimizer(inner)` as an optax transformation: the inner step, then every array back
    on its sphere of the radius it had at `init` (`sphere_radii`). `update` needs `params`.

    The update it returns is `project_to_sphere(params + inner update) - params`, so after
    `optax.apply_updates` the radii hold up to float32 rounding; the inner state (Adam's moments) is
    not touched by the projection, as in the reference.
    """

    def init(params):
        return SphereState(inner.init(params), sphere_radii(params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("on_sphere needs the parameters: call update(grads, state, params)")
        updates, inner_state = inner.update(grads, state.inner, params)
        projected = project_to_sphere(optax.apply_updates(params, updates), state.radii)
        return jax.tree.map(jnp.subtract, projected, params), SphereState(inner_state, state.radii)

    return optax.GradientTransformation(init, update)


class TorchAdamState(NamedTuple):
    count: jax.Array  # steps taken, int32
    mu: Any
    nu: Any


def _bias_correction(decay: float, count: jax.Array) -> jax.Array:
    # 1 - decay**t in float32 by expm1/log1p: optax's direct form loses ~1e-5 relative for decay 0.999,
    # while torch computes it in float64.
    return -jnp.expm1(count * jnp.log1p(jnp.float32(-(1 - decay))))


def torch_adam(
    learning_rate: float | optax.Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """`torch.optim.Adam` (no weight decay): p -= lr(t) / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).

    The schedule sees the step count before the step (0 first), as `LambdaLR` does. Same math as
    `optax.adam`, with the bias corrections accurate to float32 rounding, as torch's are.
    """
    schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return TorchAdamState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v * b2 + (1 - b2) * g * g, state.nu, grads)
        t = count.astype(jnp.float32)
        step_size = schedule(state.count) / _bias_correction(b1, t)
        root_bc2 = jnp.sqrt(_bias_correction(b2, t))
        updates = jax.tree.map(lambda m, v: -step_size * m / (jnp.sqrt(v) / root_bc2 + eps), mu, nu)
        return updates, TorchAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def lr_schedule(name: str, base_lr: float, steps: int) -> optax.Schedule:
    """DSD's x-step schedules (`fixed`, `linear1cycle`, `linear1cycledrop`) as optax schedules.

    `steps` = num_epochs * num_x_iters; the count runs over all x-steps, starting at 0 (LambdaLR's order:
    the first step uses base_lr * f(0), which is base_lr / 10 for the 1-cycle schedules).
    """

    def one_cycle(x, length):
        return (9 * (1 - jnp.abs(x / length - 0.5) * 2) + 1) / 10

    def linear1cycledrop(x):
        # the reference's 0.1 + (x - 0.9 s) / (0.1 s) * (0.001 - 0.1), rearranged against float32 cancellation
        drop = (0.1 * (steps - x) + 0.001 * (x - 0.9 * steps)) / (0.1 * steps)
        return jnp.where(x < 0.9 * steps, one_cycle(x, 0.9 * steps), drop)

    factors = {
        "fixed": lambda x: jnp.ones_like(x),
        "linear1cycle": lambda x: one_cycle(x, steps),
        "linear1cycledrop": linear1cycledrop,
    }
    if name not in factors:
        raise ValueError(f"unknown lr_schedule '{name}'; expected one of {sorted(factors)}")
    return lambda count: base_lr * factors[name](jnp.asarray(count, jnp.float32))
