"""Domain-specific blind deblurring [domain_specific_deblur.py, DSD / DSDStyleGAN2]: a StyleGAN2 prior on x.

    prior = load_prior("stylegan2-ffhq-256.pt")   # stylegan2/prior.py: generator + Gaussian fit of its W space
    result = deblur_stylegan2(model, prior, jax.random.key(0), blurry, config=configs.get("deblur_stylegan2"))
    result.sharp      # (B, S, S, 3) in [0, 1]: the x of the lowest-loss step, S = the generator's size
    result.kernel     # (B, *model.kernel_shape(S, S)): the k of that step
    result.reblurred  # (B, S, S, 3): F(x, k), not clamped
    result.history    # {"loss": (B, steps), "best_loss", "best_step", "failed_at": (B,), ...}

Per image, as the reference (each image has its own latents, noise, KernelDIP, optimiser states, key):

  x = (G(lrelu_0.2(w * std + mean), noise) + 1) / 2   w (n_latent, style_dim) ~ N(0, 1); the first
      `num_trainable_noise_layers` noise maps are searched, the rest stay fixed; (mean, std) is the
      Gaussian fit of lrelu_5(mapping(z)) (`stylegan2/prior.py`); G's output is not squashed
  k = KernelDIP(z_k + N(0, reg_noise_std^2))          z_k ~ U(0, z_scale), fresh noise at every step
  loss = 100 * max(mean((F(x, k) - y)^2), 1e-15) + 0.1 * GEOCROSS(lrelu_0.2(w * std + mean)) + 1e-4 * |k|

Steps: `num_warmup_iters` steps fit k to the warm-up kernel (MSE, `deblurring/warmup.py`), then `num_epochs`
epochs of `num_x_iters` x-steps (w and the trainable noise: Adam on the sphere, `on_sphere`, at
x_lr * linear1cycledrop over all x-steps) and `num_k_iters` k-steps (Adam at k_lr, the warm-up's
optimiser continued, x 0.7 every num_epochs * num_k_iters // 5 k-steps). The result is the x and k of
the main-phase step with the lowest loss (the reference compares only the last step of each phase).

Like `dip.deblur`: images `vmap`ped (on CPUs they take turns, `engine.in_turns`), sharded over
devices by `shard_map`, `lax.scan` chunks whose step counts are traced (one compiled chunk serves any
iteration counts; a `lax.switch` on the shared step picks the warm-up, x- or k-step), and a non-finite
step stops only its own image.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from kernelspace_jax import configs, xla_options
from kernelspace_jax.deblurring.engine import (
    DeblurResult,
    all_finite,
    chunking,
    count_trace,
    distribute,
    pad_for_mesh,
    run_chunks,
    scan_chunk,
    shard_images,
)
from kernelspace_jax.deblurring.stylegan2.ops import geocross, lr_schedule, on_sphere, torch_adam
from kernelspace_jax.deblurring.stylegan2.prior import StyleGAN2Prior
from kernelspace_jax.deblurring.warmup import warmup_kernels
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.kernel_space import inputs
from kernelspace_jax.kernel_space.model import KernelSpaceModel
from kernelspace_jax.models import dips
from kernelspace_jax.models.layers import xla_default_precision
from kernelspace_jax.models.stylegan2 import make_noise

L2_EPS = 1e-15  # the reference's `eps`: the L2 term is clamped below
WARMUP, X_STEP, K_STEP, DONE = range(4)  # the step kinds `lax.switch` picks from
TRACE_NAME = "stylegan2"  # engine.trace_count(TRACE_NAME): compilations of this search's chunk


# ---------------------------------------------------------------------------------------------
# Settings and per-image state
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StyleGAN2Settings:
    """The static part of a config (hashable: it keys the compiled chunk). See configs/deblur_stylegan2.py."""

    kernel_dip: dips.KernelDIPConfig
    x_lr: float
    k_lr: float
    lr_schedule: str
    k_lr_gamma: float
    k_lr_decays: int
    reg_noise_std: float
    z_scale: float
    num_trainable_noise_layers: int
    l2_weight: float
    geocross_weight: float
    kernel_norm_weight: float
    chunk_size: int
    sequential: bool  # the images of a chunk in turn (`engine.in_turns`), not vmapped


def settings_from_config(config: ml_collections.ConfigDict, model: KernelSpaceModel) -> StyleGAN2Settings:
    """The static settings of `config` for `model` (the KernelDIP outputs model.config.kernel_dim)."""
    if config.num_epochs < 1 or min(config.num_x_iters, config.num_k_iters, config.num_warmup_iters) < 0:
        raise ValueError("need num_epochs >= 1 and num_x_iters, num_k_iters, num_warmup_iters >= 0")
    if config.num_trainable_noise_layers < 0:
        raise ValueError("need num_trainable_noise_layers >= 0")
    lr_schedule(config.lr_schedule, 1.0, 1)  # raises for an unknown name
    chunk_size, sequential = chunking(config)
    return StyleGAN2Settings(
        kernel_dip=dips.KernelDIPConfig(**config.kernel_dip.to_dict(), kernel_dim=model.config.kernel_dim),
        x_lr=float(config.x_lr),
        k_lr=float(config.k_lr),
        lr_schedule=config.lr_schedule,
        k_lr_gamma=float(config.k_lr_gamma),
        k_lr_decays=int(config.k_lr_decays),
        reg_noise_std=float(config.reg_noise_std),
        z_scale=float(config.z_scale),
        num_trainable_noise_layers=int(config.num_trainable_noise_layers),
        l2_weight=float(config.l2_weight),
        geocross_weight=float(config.geocross_weight),
        kernel_norm_weight=float(config.kernel_norm_weight),
        chunk_size=chunk_size,
        sequential=sequential,
    )


def objective_name(config: ml_collections.ConfigDict) -> str:
    """The loss as the reference's loss_str writes it, plus the kernel norm: '100*L2+0.1*GEOCROSS+0.0001*|k|'."""
    return f"{config.l2_weight:g}*L2+{config.geocross_weight:g}*GEOCROSS+{config.kernel_norm_weight:g}*|k|"


class StyleGAN2SearchState(struct.PyTreeNode):
    """One image's search (a leading image axis when batched).

    x_params {"latent": (1, n_latent, style_dim), "noise": the first trainable noise maps (1, R, R, 1)};
    best_sharp (S, S, 3) (not clamped) and best_kernel (h, w, kernel_dim) are of the lowest-loss step
    best_step (-1 before the first main-phase step: then the blurry image and the warm-up kernel).
    """

    x_params: Any
    fixed_noise: tuple  # the other noise maps (1, R, R, 1)
    k_params: Any
    x_opt: Any
    k_opt: Any
    z_k: jax.Array  # (32 h, 32 w, 64)
    key: jax.Array
    best_sharp: jax.Array
    best_kernel: jax.Array
    best_loss: jax.Array
    best_step: jax.Array
    failed_at: jax.Array


def kernel_lr_schedule(lr: float, gamma: float, decays: int, num_warmup, num_k_steps) -> optax.Schedule:
    """lr of k-optimiser update `count` (warm-up included): lr in the warm-up, then StepLR(gamma,
    num_k_steps // decays) counted over the k-steps only, as the reference steps it."""
    period = jnp.maximum(num_k_steps // decays, 1)
    return lambda count: lr * jnp.power(gamma, (jnp.maximum(count - num_warmup, 0) // period).astype(jnp.float32))


def init_state(
    key: jax.Array, blurry: jax.Array, kernel: jax.Array, prior: StyleGAN2Prior, settings: StyleGAN2Settings
) -> StyleGAN2SearchState:
    """Fresh search of one image: blurry (S, S, 3), kernel (h, w, kernel_dim) (the warm-up kernel).

    w ~ N(0, 1), noise maps ~ N(0, 1), z_k ~ U(0, z_scale), the KernelDIP initialised as torch does.
    """
    k_latent, k_noise, k_dip, k_z, k_loop = jax.random.split(key, 5)
    gen = prior.generator
    noise = make_noise(k_noise, gen.size)
    trainable = min(settings.num_trainable_noise_layers, len(noise))
    x_params = {
        "latent": jax.random.normal(k_latent, (1, gen.n_latent, gen.style_dim)),
        "noise": tuple(noise[:trainable]),
    }
    cells_h, cells_w = kernel.shape[:2]
    z_k_shape = dips.kernel_noise_shape(cells_h, cells_w)
    z_k = jax.random.uniform(k_z, z_k_shape) * settings.z_scale
    k_params = dips.init_params(dips.KernelDIP(settings.kernel_dip), k_dip, z_k[None])
    return StyleGAN2SearchState(
        x_params=x_params,
        fixed_noise=tuple(noise[trainable:]),
        k_params=k_params,
        x_opt=on_sphere(torch_adam(1.0)).init(x_params),  # the states do not depend on the schedules
        k_opt=torch_adam(1.0).init(k_params),
        z_k=z_k,
        key=k_loop,
        best_sharp=blurry.astype(jnp.float32),
        best_kernel=kernel.astype(jnp.float32),
        best_loss=jnp.float32(jnp.inf),
        best_step=jnp.int32(-1),
        failed_at=jnp.int32(-1),
    )


@xla_options.jit(static_argnames=("settings",))
def init_states(keys, blurry, kernels, prior: StyleGAN2Prior, *, settings: StyleGAN2Settings):
    """`init_state` of each image: keys (B,), blurry (B, S, S, 3), kernels (B, h, w, kernel_dim)."""
    return jax.vmap(functools.partial(init_state, prior=prior, settings=settings))(keys, blurry, kernels)


# ---------------------------------------------------------------------------------------------
# One step, chunks of steps
# ---------------------------------------------------------------------------------------------


def step_kind(t, counts) -> jax.Array:
    """WARMUP, X_STEP, K_STEP or DONE (past the end) for step t; counts (warm-up, epochs, x-, k-steps)."""
    num_warmup, num_epochs, num_x, num_k = counts
    epoch_length = num_x + num_k
    main = t - num_warmup
    within = jnp.where(main >= 0, main % jnp.maximum(epoch_length, 1), 0)
    conditions = [t < num_warmup, main >= num_epochs * epoch_length, within < num_x]
    return jnp.select(conditions, [WARMUP, DONE, X_STEP], K_STEP).astype(jnp.int32)


def _step(settings, model, prior, state: StyleGAN2SearchState, blurry, warmup_kernel, t, counts):
    """Search step t of one image (unbatched): (new state, loss). t and counts are shared scalars."""
    num_warmup, num_epochs, num_x, num_k = counts
    noise = jax.random.normal(jax.random.fold_in(state.key, t), state.z_k.shape)
    z_k = (state.z_k + settings.reg_noise_std * noise)[None]
    kernel_dip = dips.KernelDIP(settings.kernel_dip)
    kernel_prior = lambda params: kernel_dip.apply({"params": params}, z_k)  # (1, h, w, kernel_dim)
    x_tx = on_sphere(torch_adam(lr_schedule(settings.lr_schedule, settings.x_lr, num_epochs * num_x)))
    k_decay = (settings.k_lr_gamma, settings.k_lr_decays, num_warmup, num_epochs * num_k)
    k_tx = torch_adam(kernel_lr_schedule(settings.k_lr, *k_decay))

    def sharp_image(x_params):
        latent = nn.leaky_relu(x_params["latent"] * prior.std + prior.mean, 0.2)
        noise = [*x_params["noise"], *state.fixed_noise]
        image = prior.generator.apply(prior.variables, [latent], input_is_latent=True, noise=noise)
        return (image + 1) / 2, latent

    def objective(x, latent, k):
        l2 = jnp.maximum(jnp.mean(jnp.square(model.blur(x, k) - blurry[None])), L2_EPS)
        norm = jnp.sqrt(jnp.sum(jnp.square(k)))
        terms = settings.l2_weight * l2 + settings.geocross_weight * geocross(latent)
        return terms + settings.kernel_norm_weight * norm

    def update(tx, grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def warmup(state):
        def fn(params):
            k = kernel_prior(params)
            return jnp.mean(jnp.square(k - warmup_kernel[None])), k

        (loss, k), grads = jax.value_and_grad(fn, has_aux=True)(state.k_params)
        k_params, k_opt = update(k_tx, grads, state.k_opt, state.k_params)
        new = state.replace(k_params=k_params, k_opt=k_opt)
        return new, loss, state.best_sharp[None], k, all_finite(loss, grads, k_params)

    def x_step(state):
        k = kernel_prior(state.k_params)

        def fn(x_params):
            x, latent = sharp_image(x_params)
            return objective(x, latent, k), x

        (loss, x), grads = jax.value_and_grad(fn, has_aux=True)(state.x_params)
        x_params, x_opt = update(x_tx, grads, state.x_opt, state.x_params)
        return state.replace(x_params=x_params, x_opt=x_opt), loss, x, k, all_finite(loss, grads, x_params)

    def k_step(state):
        x, latent = sharp_image(state.x_params)

        def fn(k_params):
            k = kernel_prior(k_params)
            return objective(x, latent, k), k

        (loss, k), grads = jax.value_and_grad(fn, has_aux=True)(state.k_params)
        k_params, k_opt = update(k_tx, grads, state.k_opt, state.k_params)
        return state.replace(k_params=k_params, k_opt=k_opt), loss, x, k, all_finite(loss, grads, k_params)

    def done(state):  # the last chunk's spare steps
        return state, jnp.float32(jnp.nan), state.best_sharp[None], state.best_kernel[None], jnp.bool_(True)

    kind = step_kind(t, counts)
    new, loss, x, k, finite = jax.lax.switch(kind, [warmup, x_step, k_step, done], state)
    running = state.failed_at < 0
    keep = running & finite
    new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
    better = keep & ((kind == X_STEP) | (kind == K_STEP)) & (loss < state.best_loss)
    new = new.replace(
        best_sharp=jnp.where(better, x[0], state.best_sharp),
        best_kernel=jnp.where(better, k[0], state.best_kernel),
        best_loss=jnp.where(better, loss, state.best_loss),
        best_step=jnp.where(better, t, state.best_step).astype(jnp.int32),
        failed_at=jnp.where(running & ~finite, t, state.failed_at).astype(jnp.int32),
    )
    return new, jnp.where(kind == DONE, jnp.nan, loss)


def _chunk(state, blurry, warmup_kernel, t0, counts, model, prior, *, settings):
    """The chunk's steps of a batch: (state, losses (chunk_size, B)), by `engine.scan_chunk`."""
    batched = jax.vmap(functools.partial(_step, settings, model, prior), in_axes=(0, 0, 0, None, None))
    step = lambda state, blurry, warmup_kernel, t: batched(state, blurry, warmup_kernel, t, counts)
    with xla_default_precision():
        return scan_chunk(
            step, state, (blurry, warmup_kernel), t0, chunk_size=settings.chunk_size, sequential=settings.sequential
        )


@xla_options.jit(static_argnames=("settings", "mesh"), donate_argnums=0)
def run_chunk(
    state: StyleGAN2SearchState,
    blurry: jax.Array,
    warmup_kernel: jax.Array,
    t0: jax.Array,
    counts: tuple[jax.Array, ...],
    model: KernelSpaceModel,
    prior: StyleGAN2Prior,
    *,
    settings: StyleGAN2Settings,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[StyleGAN2SearchState, jax.Array]:
    """Steps t0 .. t0 + chunk_size - 1 of a batch of searches: (state, losses (chunk_size, B)).

    state: batched (donated); blurry (B, S, S, 3); warmup_kernel (B, h, w, kernel_dim); t0 and counts
    (num_warmup_iters, num_epochs, num_x_iters, num_k_iters): int32 scalars, traced. With a mesh of
    several devices each device runs its own images (`engine.shard_images`).
    """
    count_trace(TRACE_NAME)
    chunk = shard_images(functools.partial(_chunk, settings=settings), mesh, num_batched=3, num_shared=4)
    return chunk(state, blurry, warmup_kernel, t0, counts, model, prior)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def check_images(blurry, prior: StyleGAN2Prior) -> None:
    """ValueError / TypeError unless blurry is (B, S, S, 3) floating point, S the generator's size."""
    inputs.check_images("blurry", blurry)
    if tuple(blurry.shape[1:3]) != (prior.size, prior.size):
        raise ValueError(
            f"blurry images are {blurry.shape[1]}x{blurry.shape[2]} but the StyleGAN2 generator makes "
            f"{prior.size}x{prior.size} images: the StyleGAN2 prior needs images of exactly its size"
        )


def deblur_stylegan2(
    model: KernelSpaceModel,
    prior: StyleGAN2Prior,
    key: jax.Array,
    blurry: jax.Array,
    *,
    config: ml_collections.ConfigDict | None = None,
    warmup_kernel: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> DeblurResult:
    """Deblurs a batch (B, S, S, 3) float in [0, 1], S = prior.size, with the StyleGAN2 prior.

    Args:
      model: the kernel space (F is used, frozen; G only for the "identity" warm-up kernel).
      prior: `stylegan2.prior.load_prior(...)`.
      key: one key (split over the images) or one per image, (B,); an image's result depends only on it.
      config: a recipe of configs/deblur_stylegan2.py; default its reference settings.
      warmup_kernel: (B, *model.kernel_shape(S, S)) to override config.warmup_kernel.
      mesh: a 1-D mesh whose axis shards the images (default: all devices).
    Returns:
      DeblurResult of the lowest-loss step: sharp clamped to [0, 1]; reblurred F(x, k) of the unclamped
      x; history["loss"] (B, num_warmup_iters + num_epochs * (num_x_iters + num_k_iters)) (NaN from a
      non-finite step on), "best_loss", "best_step" (-1: no main-phase step), "failed_at" (-1: none).
    """
    inputs.check_key(key, "deblur_stylegan2(model, prior, key, blurry, ...)")
    config = configs.get("deblur_stylegan2") if config is None else config
    check_images(blurry, prior)
    batch, size = blurry.shape[0], blurry.shape[1]
    keys = inputs.image_keys(key, batch)
    if jnp.dtype(model.dtype) != jnp.dtype(config.compute_dtype):
        model = model.with_dtype(jnp.dtype(config.compute_dtype))
    settings = settings_from_config(config, model)
    blurry = blurry.astype(jnp.float32)
    if warmup_kernel is None:
        kernels = warmup_kernels(model, blurry, config.warmup_kernel)
    else:
        kernels = jnp.asarray(warmup_kernel, jnp.float32)
        if kernels.shape != (batch, *model.kernel_shape(size, size)):
            raise ValueError(f"warmup_kernel must be {(batch, *model.kernel_shape(size, size))}, got {kernels.shape}")
    counts = tuple(np.int32(config[k]) for k in ("num_warmup_iters", "num_epochs", "num_x_iters", "num_k_iters"))
    state, loss = _search(model, prior, blurry, kernels, keys, settings, counts, mesh, progress)
    failed_at = np.asarray(state.failed_at)[:batch]
    for b in np.flatnonzero(failed_at >= 0):
        loss[b, failed_at[b] :] = np.nan
    sharp, kernel = state.best_sharp[:batch], state.best_kernel[:batch]
    history = {
        "loss": loss,
        "best_loss": np.asarray(state.best_loss)[:batch],
        "best_step": np.asarray(state.best_step)[:batch],
        "failed_at": failed_at,
        "num_warmup_iters": int(counts[0]),
        "num_epochs": int(counts[1]),
        "num_x_iters": int(counts[2]),
        "num_k_iters": int(counts[3]),
        "objective": objective_name(config),
        "update": "alternating",
    }
    return DeblurResult(jnp.clip(sharp, 0, 1), kernel, model.blur(sharp, kernel), history)


def _search(model, prior, blurry, kernels, keys, settings, counts, mesh, progress):
    """Runs the chunks; returns (final batched state, losses (B, steps) as numpy)."""
    batch = blurry.shape[0]
    mesh = mesh or data_mesh()
    blurry, kernels, keys = pad_for_mesh(mesh, blurry, kernels, keys)
    state = init_states(keys, blurry, kernels, prior, settings=settings)
    (state, blurry, kernels), (model, prior), mesh = distribute(mesh, (state, blurry, kernels), (model, prior))
    num_warmup, num_epochs, num_x, num_k = (int(c) for c in counts)
    total = num_warmup + num_epochs * (num_x + num_k)

    def chunk(state, t0):
        return run_chunk(state, blurry, kernels, t0, counts, model, prior, settings=settings, mesh=mesh)

    desc = f"deblur (StyleGAN2) {batch} x {blurry.shape[1]}x{blurry.shape[2]}"
    return run_chunks(chunk, state, total, settings.chunk_size, batch, desc, progress)


__all__ = [
    "TRACE_NAME",
    "DeblurResult",
    "StyleGAN2SearchState",
    "StyleGAN2Settings",
    "check_images",
    "deblur_stylegan2",
    "init_state",
    "init_states",
    "kernel_lr_schedule",
    "objective_name",
    "run_chunk",
    "settings_from_config",
    "step_kind",
]
