"""Training of the kernel space: state, a pure data-parallel train step, and the resumable loop.

    train_and_evaluate(config, workdir)    # what `python train.py --config ... --workdir ...` runs

The step is one jitted function over a mesh of all devices: the batch is sharded on its first axis,
parameters and optimiser state are replicated (XLA inserts the gradient all-reduce), and the state
buffers are donated. Randomness is `fold_in(key(seed), step)`, so a resumed run draws what an
uninterrupted one would.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from kernelspace_jax import xla_options
from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.kernel_space.model import Params, kernel_shape
from kernelspace_jax.models.layers import xla_default_precision
from kernelspace_jax.training.objective import kernel_space_loss
from kernelspace_jax.training.schedules import cosine_annealing_restarts


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Params
    opt_state: optax.OptState


class NonFiniteLossError(FloatingPointError):
    """The loss or a gradient became NaN/inf; the last good checkpoint is kept."""


def model_config(config: ml_collections.ConfigDict) -> KernelSpaceConfig:
    return KernelSpaceConfig.from_dict(config.model.to_dict())


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Cosine annealing with restarts, as the reference (SPEC.md, training)."""
    opt = config.optimizer
    return cosine_annealing_restarts(opt.lr, opt.periods, opt.restarts, opt.restart_weights, opt.eta_min)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with the reference's betas (0.9, 0.99), no weight decay, on `make_schedule`."""
    return optax.adam(make_schedule(config), b1=config.optimizer.b1, b2=config.optimizer.b2)


def create_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: KernelSpaceConfig,
    tx: optax.GradientTransformation,
    key: jax.Array,
    pixel_weight: float,
    kl_weight: float,
    dtype=jnp.float32,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam update on a batch {"sharp", "blurry"}: (B, H, W, 3) in [0, 1]. Pure.

    A non-finite loss or gradient leaves the state unchanged and reports `finite` = 0. Convolutions
    run at XLA's default precision (`models.layers.xla_default_precision`: TF32 on NVIDIA GPUs).
    """
    with xla_default_precision():
        return _train_step(state, batch, model, tx, key, pixel_weight, kl_weight, dtype)


def _train_step(state, batch, model, tx, key, pixel_weight, kl_weight, dtype):
    sharp, blurry = batch["sharp"], batch["blurry"]
    eps = jax.random.normal(
        jax.random.fold_in(key, state.step), (sharp.shape[0], *kernel_shape(model, *sharp.shape[1:3]))
    )
    loss_fn = functools.partial(
        kernel_space_loss, config=model, pixel_weight=pixel_weight, kl_weight=kl_weight, dtype=dtype
    )
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, sharp, blurry, eps)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    per_image = 1.0 / sharp.shape[0]  # the reference logs sums divided by the batch size
    metrics = {
        "loss": loss * per_image,
        "loss_pixel": parts["pixel"] * per_image,
        "loss_kl": parts["kl"] * per_image,
        "grad_norm": grad_norm,
        "finite": finite.astype(jnp.float32),
    }
    return new, metrics


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles this host's part of the batch into arrays sharded over all hosts' devices."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def compile_train_step(config: ml_collections.ConfigDict, tx: optax.GradientTransformation, mesh):
    """`train_step` jitted over `mesh`: state replicated and donated, batch sharded on its first axis."""
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = functools.partial(
        train_step,
        model=model_config(config),
        tx=tx,
        key=jax.random.key(config.seed),
        pixel_weight=config.loss.pixel_weight,
        kl_weight=config.loss.kl_weight,
        dtype=jnp.dtype(config.compute_dtype),
    )
    return jax.jit(
        step,
        in_shardings=(replicated, batched),
        out_shardings=replicated,
        donate_argnums=0,
        compiler_options=xla_options.compiler_options(),
    )
