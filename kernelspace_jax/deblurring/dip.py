"""Generic blind deblurring [generic_deblur.py, JointDeblur]: deep image priors searched with F frozen.

    result = deblur(model, jax.random.key(0), blurry, config=configs.get("deblur_generic:fast"))
    result.sharp      # (B, H, W, 3) in [0, 1]: x = ImageDIP(z_x) of the last step, cropped back
    result.kernel     # (B, *model.kernel_shape(H, W)): k = KernelDIP(z_k) of the last step
    result.reblurred  # (B, H, W, 3): F(x, k)
    result.history    # {"loss": (B, steps), "failed_at": (B,), "objective": name, ...}

Every image has its own priors, Adam states and key; the images of a batch are `vmap`ped (on CPUs they
take turns, each running a whole chunk of steps, see `_chunk`), and the batch axis is sharded over all
devices (`devices.data_mesh()`). One step t of the search, per image:

  t < W (warm-up)       ImageDIP fitted to the blurry image by MSE and KernelDIP to the warm-up kernel
                        by MSE (the reference runs these two 300-step fits one after the other; they are
                        independent, so here they share the steps);
  W <= t < W + N (main) the objective (`objective.py`) on F(x, k), with the first set of weights for
                        t - W < N // 2 and the second after; `update` "joint" takes one Adam step on both
                        priors (the reference), "alternating" one on x, then one on k given the new x
                        (the paper's Algorithm 1), "fixed_kernel" one on x alone, k staying the
                        warm-up kernel.

Adam (torch's defaults) at lr 5e-4 in the warm-up, then the reference's StepLR: x 0.7 every N // 5
steps (`step_decay_schedule`). Both DIP inputs get fresh N(0, 1e-3^2) noise at every step, drawn from
fold_in(image key, t). The loop runs in `lax.scan` chunks of `chunk_size` steps whose step counts are
traced values, so one compiled chunk serves any number of iterations. A non-finite loss, gradient or x
stops that image: it keeps its last finite x and k and `history["failed_at"]` records the step; the
other images go on.

Sizes: images are reflect-padded to `model.padded_size` (a multiple of 128: F's grid, which the
ImageDIP's 5 scales divide), searched at that size and cropped back; z_k has 32 x the kernel cells
per side, so KernelDIP outputs the kernel grid of the image.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

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
from kernelspace_jax.deblurring.objective import TERMS, Objective, blurry_features, loss_terms, weighted_sum
from kernelspace_jax.deblurring.warmup import fit_to_grid, warmup_kernels
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.kernel_space.inputs import check_images, check_key, image_keys, pad_to
from kernelspace_jax.kernel_space.model import KernelSpaceModel, padded_size
from kernelspace_jax.models import dips
from kernelspace_jax.models.layers import xla_default_precision

TRACE_NAME = "dip"  # engine.trace_count(TRACE_NAME): compilations of this search's chunk
FIXED_KERNEL = "fixed_kernel"  # x only, k the warm-up kernel (also the second stage of `kernel_crop`)
UPDATES = ("joint", "alternating", FIXED_KERNEL)
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as the reference uses


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The static part of a search config (hashable: it keys the compiled chunk). See get_config()."""

    image_dip: dips.ImageDIPConfig
    kernel_dip: dips.KernelDIPConfig
    objective: Objective
    update: str
    x_lr: float
    k_lr: float
    lr_gamma: float
    lr_decays: int
    reg_noise_std: float
    z_scale: float
    chunk_size: int
    remat: bool
    sequential: bool  # the images of a chunk in turn (a loop), not vmapped


def resolve_objective(config: ml_collections.ConfigDict, has_vgg: bool) -> Objective:
    """config.objective ("auto", or a name in config.objectives) -> Objective; "auto" is "reference"
    with VGG weights and "fallback" without."""
    name = config.objective
    if name == "auto":
        name = "reference" if has_vgg else "fallback"
    if name not in config.objectives:
        raise ValueError(f"objective {name!r} is not one of auto, {', '.join(config.objectives.keys())}")
    objective = Objective.from_config(name, config.objectives[name])
    if objective.needs_vgg and not has_vgg:
        raise ValueError(
            f"objective {name!r} has a perceptual term and needs VGG19 weights: give them (--vgg-weights "
            "vgg19-dcbb9e9d.pth, torchvision's ImageNet vgg19) or use --config.objective=fallback"
        )
    return objective


def settings_from_config(config: ml_collections.ConfigDict, model: KernelSpaceModel, has_vgg: bool) -> SearchSettings:
    """The static settings of `config` for `model` (the KernelDIP outputs model.config.kernel_dim)."""
    if config.update_mode not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {config.update_mode!r}")
    if config.num_iters < 1 or config.num_warmup_iters < 0:
        raise ValueError("need num_iters >= 1 and num_warmup_iters >= 0")
    chunk_size, sequential = chunking(config)
    image_dip = dips.ImageDIPConfig(
        **{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in config.image_dip.to_dict().items()}
    )
    kernel_dip = dips.KernelDIPConfig(**config.kernel_dip.to_dict(), kernel_dim=model.config.kernel_dim)
    return SearchSettings(
        image_dip=image_dip,
        kernel_dip=kernel_dip,
        objective=resolve_objective(config, has_vgg),
        update=config.update_mode,
        x_lr=float(config.x_lr),
        k_lr=float(config.k_lr),
        lr_gamma=float(config.lr_gamma),
        lr_decays=int(config.lr_decays),
        reg_noise_std=float(config.reg_noise_std),
        z_scale=float(config.z_scale),
        chunk_size=chunk_size,
        remat=bool(config.remat),
        sequential=sequential,
    )


def step_decay_schedule(lr: float, gamma: float, decays: int, num_warmup, num_iters) -> optax.Schedule:
    """Learning rate of update `count` (0-based, warm-up included): `lr` during the warm-up, then torch's
    StepLR(step_size=num_iters // decays, gamma) as the reference steps it, i.e. *before* each update, so
    main-phase update i uses lr * gamma^((i + 1) // step_size). num_warmup, num_iters may be traced."""
    period = jnp.maximum(num_iters // decays, 1)

    def schedule(count):
        done = count - num_warmup + 1
        return lr * jnp.power(gamma, jnp.where(count >= num_warmup, done // period, 0).astype(jnp.float32))

    return schedule


def _optimizer(lr, settings: SearchSettings, num_warmup, num_iters) -> optax.GradientTransformation:
    schedule = step_decay_schedule(lr, settings.lr_gamma, settings.lr_decays, num_warmup, num_iters)
    return optax.chain(
        optax.scale_by_adam(b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS), optax.scale_by_learning_rate(schedule)
    )


class SearchState(struct.PyTreeNode):
    """One image's search (a leading image axis when batched).

    sharp (Hp, Wp, 3) and kernel (h, w, kernel_dim) are the last finite x and k; failed_at is the step
    that went non-finite, -1 while none has.
    """

    x_params: Any  # ImageDIP parameters
    k_params: Any  # KernelDIP parameters; {} for a fixed kernel
    x_opt: Any
    k_opt: Any
    z_x: jax.Array  # (Hp, Wp, image_dip.in_channels)
    z_k: jax.Array  # (32 h, 32 w, 64)
    key: jax.Array
    sharp: jax.Array
    kernel: jax.Array
    failed_at: jax.Array


def _prior_modules(settings: SearchSettings):
    return dips.ImageDIP(settings.image_dip), dips.KernelDIP(settings.kernel_dip)


def init_state(key: jax.Array, blurry: jax.Array, kernel: jax.Array, settings: SearchSettings) -> SearchState:
    """Fresh priors for one image: blurry (Hp, Wp, 3), kernel (h, w, kernel_dim) (the warm-up kernel).

    z_x, z_k ~ U(0, z_scale) (the reference's get_noise), priors initialised as torch does.
    """
    k_x, k_k, k_zx, k_zk, k_loop = jax.random.split(key, 5)
    (height, width), (cells_h, cells_w) = blurry.shape[:2], kernel.shape[:2]
    z_x = jax.random.uniform(k_zx, (height, width, settings.image_dip.in_channels)) * settings.z_scale
    z_k_shape = dips.kernel_noise_shape(cells_h, cells_w)
    z_k = jax.random.uniform(k_zk, z_k_shape) * settings.z_scale
    image_dip, kernel_dip = _prior_modules(settings)
    x_params = dips.init_params(image_dip, k_x, z_x[None])
    k_params = {}
    if settings.update != FIXED_KERNEL:
        k_params = dips.init_params(kernel_dip, k_k, z_k[None])
    tx = _optimizer(settings.x_lr, settings, 0, 1)  # the state's structure does not depend on the schedule
    return SearchState(
        x_params=x_params,
        k_params=k_params,
        x_opt=tx.init(x_params),
        k_opt=tx.init(k_params),
        z_x=z_x,
        z_k=z_k,
        key=k_loop,
        sharp=blurry.astype(jnp.float32),
        kernel=kernel.astype(jnp.float32),
        failed_at=jnp.int32(-1),
    )


def _priors(settings: SearchSettings):
    """(image_prior(params, z) -> x, kernel_prior(params, z) -> k), unbatched; remat-wrapped."""
    image_dip, kernel_dip = _prior_modules(settings)
    image_prior = lambda p, z: image_dip.apply({"params": p}, z[None])[0]
    kernel_prior = lambda p, z: kernel_dip.apply({"params": p}, z[None])[0]
    if settings.remat:
        return jax.checkpoint(image_prior), jax.checkpoint(kernel_prior)
    return image_prior, kernel_prior


def _objective_fn(settings: SearchSettings, model: KernelSpaceModel, vgg_params, num_warmup, num_iters):
    """(x, k, blurry, features, warmup_kernel, t) -> scalar loss of one image at step t (unbatched);
    features: the image's `blurry_features` (None without a perceptual term).

    Warm-up steps: MSE(x, y) + MSE(k, warm-up kernel) (the two fits touch disjoint parameters, so one
    gradient serves both); main steps: the objective's terms on F(x, k). Both are computed at every
    step and one is selected: XLA:CPU runs the insides of a `lax.cond` several times slower, and F in
    the 300 of 5300 warm-up steps costs a few percent.
    """
    terms = settings.objective.used_terms()
    w1, w2 = (jnp.asarray(w.as_tuple(), jnp.float32) for w in (settings.objective.phase1, settings.objective.phase2))
    blur = lambda x, k: model.blur(x[None], k[None])

    def losses(fake, y, features, x, k):
        features = jax.tree.map(lambda f: f[None], features)
        return loss_terms(terms, fake, y[None], x[None], k[None], vgg_params, features)

    if settings.remat:
        blur, losses = jax.checkpoint(blur), jax.checkpoint(losses)

    def objective(x, k, blurry, features, warmup_kernel, t):
        mse = jnp.mean(jnp.square(x - blurry)) + jnp.mean(jnp.square(k - warmup_kernel))
        weights = jnp.where(t - num_warmup < num_iters // 2, w1, w2)
        return jnp.where(t < num_warmup, mse, weighted_sum(losses(blur(x, k), blurry, features, x, k), weights))

    return objective


def _noisy(settings: SearchSettings, key: jax.Array, z: jax.Array) -> jax.Array:
    return z + settings.reg_noise_std * jax.random.normal(key, z.shape)


def _adam(tx, grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state


def _image_step(settings, loss_of, image_prior, x_tx, x_params, x_opt, z_x, k):
    """One image's ImageDIP update given its kernel k, by settings.update: (x_params, x_opt, x, loss,
    dloss/dk (None for a fixed kernel), whether the rest is finite)."""

    def fn(p, k):
        x = image_prior(p, z_x)
        return loss_of(x, k), x

    if settings.update == FIXED_KERNEL:
        (loss, x), grad_x = jax.value_and_grad(fn, has_aux=True)(x_params, k)
        x_params, x_opt = _adam(x_tx, grad_x, x_opt, x_params)
        return x_params, x_opt, x, loss, None, all_finite(loss, grad_x, x)
    if settings.update == "joint":
        (loss, x), (grad_x, grad_k) = jax.value_and_grad(fn, (0, 1), has_aux=True)(x_params, k)
        x_params, x_opt = _adam(x_tx, grad_x, x_opt, x_params)
    else:  # alternating: x given the current k, then (below) k given the new x
        grad_x = jax.grad(lambda p: fn(p, k)[0])(x_params)
        x_params, x_opt = _adam(x_tx, grad_x, x_opt, x_params)
        x = image_prior(x_params, z_x)
        loss, grad_k = jax.value_and_grad(lambda k: loss_of(x, k))(k)
    # dloss/dk is checked after the KernelDIP's backward pass: a non-finite entry where the prior's last
    # ReLU is off does not reach its parameters.
    return x_params, x_opt, x, loss, grad_k, all_finite(loss, grad_x, x, k)


def _step(settings, model, vgg_params, state: SearchState, blurry, features, warmup_kernel, t, num_warmup, num_iters):
    """Search step t of a batch of images (a leading image axis): returns (new state, (B,) losses).

    t, num_* are shared scalars; with a fixed kernel (the second stage of kernel_crop), `warmup_kernel`
    is that kernel. The images are vmapped: the KernelDIPs' forward pass, then the ImageDIP, F, the
    objective and x's update of each image, then the backward pass of every image's dloss/dk through its
    KernelDIP and k's update, in place on the batched state. (On CPUs `_chunk` gives it one image.)
    """
    image_prior, kernel_prior = _priors(settings)
    objective = _objective_fn(settings, model, vgg_params, num_warmup, num_iters)
    x_tx, k_tx = (_optimizer(lr, settings, num_warmup, num_iters) for lr in (settings.x_lr, settings.k_lr))
    noise_x, noise_k = jnp.moveaxis(jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, t)))(state.key), 1, 0)
    learn_k = settings.update != FIXED_KERNEL
    if learn_k:
        z_k = jax.vmap(functools.partial(_noisy, settings))(noise_k, state.z_k)
        k, kernel_vjp = jax.vjp(lambda p: jax.vmap(kernel_prior)(p, z_k), state.k_params)
    else:
        k = state.kernel

    def image_step(args):
        x_params, x_opt, z_x, key, y, image_features, warm, k = args
        loss_of = lambda x, k: objective(x, k, y, image_features, warm, t)
        return _image_step(settings, loss_of, image_prior, x_tx, x_params, x_opt, _noisy(settings, key, z_x), k)

    per_image = (state.x_params, state.x_opt, state.z_x, noise_x, blurry, features, warmup_kernel, k)
    x_params, x_opt, x, loss, grad_k, finite = jax.vmap(image_step)(per_image)
    new = state.replace(x_params=x_params, x_opt=x_opt, sharp=x)
    if learn_k:
        (grad_k_params,) = kernel_vjp(grad_k)
        finite &= jax.vmap(all_finite)(grad_k_params)
        k_params, k_opt = jax.vmap(functools.partial(_adam, k_tx))(grad_k_params, state.k_opt, state.k_params)
        new = new.replace(k_params=k_params, k_opt=k_opt, kernel=k)
    # Steps past the end (the last chunk's tail) are computed but change nothing (no cond, as above).
    active, running = t < num_warmup + num_iters, state.failed_at < 0
    keep = active & running & finite

    def select(a, b):
        return jnp.where(keep.reshape(keep.shape + (1,) * (a.ndim - 1)), a, b)

    new = jax.tree.map(select, new, state)
    failed_at = jnp.where(active & running & ~finite, t, state.failed_at).astype(jnp.int32)
    return new.replace(failed_at=failed_at), jnp.where(active, loss, jnp.nan)


@xla_options.jit(static_argnames=("settings",))
def init_states(keys: jax.Array, blurry: jax.Array, kernels: jax.Array, *, settings: SearchSettings) -> SearchState:
    """`init_state` of each image: keys (B,), blurry (B, Hp, Wp, 3), kernels (B, h, w, kernel_dim)."""
    return jax.vmap(functools.partial(init_state, settings=settings))(keys, blurry, kernels)


@xla_options.jit(static_argnames=("settings",))
def blurry_features_of(blurry: jax.Array, vgg_params: Mapping | None, *, settings: SearchSettings) -> dict | None:
    """What the objective needs of the blurry images (B, Hp, Wp, 3) alone, once per search: their VGG19
    features for a perceptual term (`objective.blurry_features`), None for other objectives."""
    return blurry_features(settings.objective.used_terms(), vgg_params, blurry)


def _chunk(state, blurry, features, warmup_kernel, t0, num_warmup, num_iters, model, vgg_params, *, settings):
    """The chunk's steps of a batch: (state, losses (chunk_size, B)), by `engine.scan_chunk` (on CPUs the
    images take turns: each image's state, 0.4 GB at 256 px, mostly the KernelDIP's 28M parameters and
    their Adam moments, is sliced out of the batch once per chunk, not once per step)."""

    def step(state, blurry, features, warmup_kernel, t):
        return _step(settings, model, vgg_params, state, blurry, features, warmup_kernel, t, num_warmup, num_iters)

    batched = (blurry, features, warmup_kernel)
    with xla_default_precision():
        return scan_chunk(step, state, batched, t0, chunk_size=settings.chunk_size, sequential=settings.sequential)


@xla_options.jit(static_argnames=("settings", "mesh"), donate_argnums=0)
def run_chunk(
    state: SearchState,
    blurry: jax.Array,
    features: Mapping | None,
    warmup_kernel: jax.Array,
    t0: jax.Array,
    num_warmup: jax.Array,
    num_iters: jax.Array,
    model: KernelSpaceModel,
    vgg_params: Mapping | None,
    *,
    settings: SearchSettings,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[SearchState, jax.Array]:
    """Steps t0 .. t0 + chunk_size - 1 of a batch of searches: returns (state, losses (chunk_size, B)).

    state: batched SearchState (donated); blurry (B, Hp, Wp, 3); features: `blurry_features_of(blurry,
    vgg_params, settings=settings)` (None without a perceptual term); warmup_kernel (B, h, w, kernel_dim);
    t0, num_warmup, num_iters: int scalars (traced: no recompilation for other counts). With a mesh of
    several devices each device runs the search of its own images (`engine.shard_images`).
    """
    count_trace(TRACE_NAME)
    chunk = shard_images(functools.partial(_chunk, settings=settings), mesh, num_batched=4, num_shared=5)
    return chunk(state, blurry, features, warmup_kernel, t0, num_warmup, num_iters, model, vgg_params)


# ---------------------------------------------------------------------------------------------
# Driver: padding, keys, sharding, chunks
# ---------------------------------------------------------------------------------------------


def _search(model, blurry, kernels, keys, settings, num_warmup, num_iters, vgg_params, mesh, progress):
    """Runs the chunks on padded inputs; returns (sharp (B, Hp, Wp, 3), kernel, history)."""
    batch = blurry.shape[0]
    mesh = mesh or data_mesh()
    blurry, kernels, keys = pad_for_mesh(mesh, blurry, kernels, keys)
    state = init_states(keys, blurry, kernels, settings=settings)
    features = blurry_features_of(blurry, vgg_params, settings=settings)
    (state, blurry, features, kernels), (model, vgg_params), mesh = distribute(
        mesh, (state, blurry, features, kernels), (model, vgg_params)
    )
    total = num_warmup + num_iters
    counts = (np.int32(num_warmup), np.int32(num_iters))

    def chunk(state, t0):
        return run_chunk(state, blurry, features, kernels, t0, *counts, model, vgg_params, settings=settings, mesh=mesh)

    desc = f"deblur {batch} x {blurry.shape[1]}x{blurry.shape[2]}"
    state, loss = run_chunks(chunk, state, total, settings.chunk_size, batch, desc, progress)
    failed_at = np.asarray(state.failed_at)[:batch]
    for b in np.flatnonzero(failed_at >= 0):
        loss[b, failed_at[b] :] = np.nan
    history = {
        "loss": loss,
        "failed_at": failed_at,
        "num_warmup_iters": num_warmup,
        "num_iters": num_iters,
        "objective": settings.objective.name,
        "update": settings.update,
    }
    return state.sharp[:batch], state.kernel[:batch], history


def deblur(
    model: KernelSpaceModel,
    key: jax.Array,
    blurry: jax.Array,
    *,
    config: ml_collections.ConfigDict | None = None,
    vgg_params: Mapping | None = None,
    warmup_kernel: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> DeblurResult:
    """Deblurs a batch of same-sized images: blurry (B, H, W, 3) float in [0, 1], H, W >= 32.

    Args:
      model: the kernel space (F is used, frozen; G only for the "identity" warm-up kernel).
      key: one key (split over the images) or one per image, (B,); an image's result depends only on
        its own key, not on the rest of the batch.
      blurry: (B, H, W, 3) float in [0, 1], H, W >= 32.
      config: a recipe of configs/deblur_generic.py (num_iters, num_warmup_iters, objective, update, ...);
        default: its reference settings (`configs.get("deblur_generic")`).
      vgg_params: VGG19 parameters (`models.vgg.load_vgg19_params`) for a perceptual objective.
      warmup_kernel: (B, h, w, kernel_dim) to override config.warmup_kernel.
      mesh: a 1-D mesh whose axis shards the images (default: all devices).
      progress: show a tqdm bar.
    Returns:
      DeblurResult; kernel (B, *model.kernel_shape(H, W)); history["loss"] (B, warm-up + main steps),
      history["failed_at"] (B,) the step that went non-finite (-1: none), history["objective"].
    """
    check_key(key, "deblur(model, key, blurry, ...)")
    config = configs.get("deblur_generic") if config is None else config
    check_images("blurry", blurry)
    batch, height, width = blurry.shape[:3]
    keys = image_keys(key, batch)
    if jnp.dtype(model.dtype) != jnp.dtype(config.compute_dtype):
        model = model.with_dtype(jnp.dtype(config.compute_dtype))
    settings = settings_from_config(config, model, vgg_params is not None)
    crop = config.kernel_crop
    if crop and (height > crop or width > crop):
        return _deblur_with_crop(model, blurry, keys, config, settings, vgg_params, mesh, progress)
    size = padded_size(model.config, height, width)
    padded = pad_to(blurry.astype(jnp.float32), size)
    if warmup_kernel is None:
        kernels = warmup_kernels(model, padded, config.warmup_kernel)
    else:
        kernels = jnp.asarray(warmup_kernel, jnp.float32)
        if kernels.shape != (batch, *model.kernel_shape(height, width)):
            raise ValueError(
                f"warmup_kernel must be {(batch, *model.kernel_shape(height, width))}, got {kernels.shape}"
            )
    sharp, kernel, history = _search(
        model,
        padded,
        kernels,
        keys,
        settings,
        config.num_warmup_iters,
        config.num_iters,
        vgg_params,
        mesh,
        progress,
    )
    reblurred = model.blur(sharp, kernel)[:, :height, :width]
    return DeblurResult(sharp[:, :height, :width], kernel, reblurred, history)


def _deblur_with_crop(model, blurry, keys, config, settings, vgg_params, mesh, progress) -> DeblurResult:
    """k from a joint search on the centre crop (config.kernel_crop per side), its mean cell spread
    over the whole image's grid (a uniform blur), then x alone on the whole image with that k."""
    height, width = blurry.shape[1:3]
    crop_h, crop_w = min(config.kernel_crop, height), min(config.kernel_crop, width)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop_config = config.copy_and_resolve_references()
    crop_config.kernel_crop = 0
    crop_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    crop_result = deblur(
        model,
        crop_keys,
        blurry[:, top : top + crop_h, left : left + crop_w],
        config=crop_config,
        vgg_params=vgg_params,
        mesh=mesh,
        progress=progress,
    )
    cells = model.kernel_shape(height, width)[:2]
    kernels = fit_to_grid(jnp.mean(crop_result.kernel, axis=(1, 2), keepdims=True), cells)
    size = padded_size(model.config, height, width)
    sharp, kernel, history = _search(
        model,
        pad_to(blurry.astype(jnp.float32), size),
        kernels,
        keys,
        dataclasses.replace(settings, update=FIXED_KERNEL),
        config.num_warmup_iters,
        config.num_iters,
        vgg_params,
        mesh,
        progress,
    )
    history["kernel_search"] = crop_result.history
    reblurred = model.blur(sharp, kernel)[:, :height, :width]
    return DeblurResult(sharp[:, :height, :width], kernel, reblurred, history)


__all__ = [
    "TERMS",
    "TRACE_NAME",
    "DeblurResult",
    "SearchSettings",
    "SearchState",
    "blurry_features_of",
    "deblur",
    "init_state",
    "init_states",
    "resolve_objective",
    "run_chunk",
    "settings_from_config",
    "step_decay_schedule",
]
