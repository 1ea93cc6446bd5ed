"""The training loop: `train_and_evaluate(config, workdir)`, resumable and interruptible.

workdir/
  checkpoints/<step>/   Orbax: params + config (what `kernelspace_jax.load(workdir)` reads),
                        optimiser state and step, data-iterator state
  logs/                 metrics.jsonl, TensorBoard event files, grid_<step>.png

A run resumes from the latest checkpoint without being asked. SIGTERM / SIGINT save a checkpoint
after the current step and stop; a NaN/inf loss stops the run with the last good checkpoint kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from kernelspace_jax import xla_options
from kernelspace_jax.data import pipeline, sources
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.io.images import image_grid, write_png
from kernelspace_jax.kernel_space import checkpoints
from kernelspace_jax.kernel_space.model import KernelSpaceModel, abstract_params, init_params
from kernelspace_jax.kernel_space.vae_warm_start import widen_to_vae
from kernelspace_jax.training import step as training
from kernelspace_jax.training.metrics import MetricWriter, reconstruction_metrics

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT stopped the run after it saved its latest step (with `raise_on_interrupt`)."""


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _initial_params(config, model_config, calibration_batch):
    if config.get("init_from"):
        pretrained = checkpoints.load(config.init_from)
        if model_config.use_vae and pretrained.config == dataclasses.replace(model_config, use_vae=False):
            # A VAE started from a woVAE model (vae_warm_start.py), its kernel scaled on held-out pairs.
            batch = calibration_batch()
            vae = widen_to_vae(
                pretrained,
                jax.random.key(config.seed),
                calibration=(batch["sharp"], batch["blurry"]),
                scheme=config.get("init_scheme", "reference"),
            )
            return vae.params
        if pretrained.config != model_config:
            raise checkpoints.CheckpointMismatchError(
                f"init_from={config.init_from} holds {pretrained.config}, but the config asks for {model_config}"
            )
        return pretrained.params
    return init_params(jax.random.key(config.seed), model_config, scheme=config.get("init_scheme", "reference"))


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def _save(manager, state, train_iter, config, model_config, force=False):
    meta = checkpoints.checkpoint_meta(model_config, train_config=config.to_dict())
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        config=ocp.args.JsonSave(meta),
        data=grain.checkpoint.CheckpointSave(train_iter),
    )
    manager.save(int(state.step), args=args, force=force)


def _restore(manager, step, abstract_state, train_iter, model_config):
    meta = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    saved = checkpoints.KernelSpaceConfig.from_dict(meta["kernel_space"])
    if saved != model_config:
        raise checkpoints.CheckpointMismatchError(
            f"the checkpoints in this workdir are of {saved}, but the config asks for {model_config}; "
            "use another --workdir"
        )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            train_state=ocp.args.StandardRestore({"step": abstract_state.step, "opt_state": abstract_state.opt_state}),
            data=grain.checkpoint.CheckpointRestore(train_iter),
        ),
    )
    return training.TrainState(
        step=restored["train_state"]["step"],
        params=restored["params"],
        opt_state=restored["train_state"]["opt_state"],
    )


def evaluate(model: KernelSpaceModel, batches, max_batches: int | None = None) -> tuple[dict[str, float], list]:
    """Mean kernel-encoding metrics over eval batches (padding marked `valid`=False is left out), and
    (sharp, blurry, reconstruction) triples of the first batch for a picture."""
    metric_fn = xla_options.jit(reconstruction_metrics)
    names = ("psnr", "ssim", "identity_psnr", "identity_ssim", "swapped_psnr")
    totals, count, examples = dict.fromkeys(names, 0.0), 0, []
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        out = metric_fn(model, batch["sharp"], batch["blurry"])
        valid = np.asarray(batch.get("valid", np.ones(len(batch["sharp"]), bool)))
        for name in names:
            totals[name] += float(np.sum(np.asarray(out[name])[valid]))
        count += int(valid.sum())
        if not examples:
            triples = zip(batch["sharp"], batch["blurry"], np.asarray(out["reconstruction"]), strict=True)
            examples = [t for t, ok in zip(triples, valid, strict=True) if ok]
    means = {f"eval/{k}": v / max(count, 1) for k, v in totals.items()}
    means["eval/psnr_gain"] = means["eval/psnr"] - means["eval/identity_psnr"]
    return means, examples


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, raise_on_interrupt: bool = False
) -> KernelSpaceModel:
    """Trains F and G as `config` says, in `workdir`, resuming from its latest checkpoint.

    SIGTERM / SIGINT save the current step and stop the run: the model so far is returned, or with
    `raise_on_interrupt` TrainingInterrupted is raised (the command line exits non-zero with it).
    """
    # Devices and input.
    if config.get("distributed"):
        jax.distributed.initialize()
    mesh = data_mesh()
    if config.data.batch_size % jax.device_count():
        raise ValueError(f"batch_size {config.data.batch_size} must be a multiple of the {jax.device_count()} devices")
    host_batch = config.data.batch_size // jax.process_count()
    train_source, eval_source = sources.build(config.data, config.seed)
    train_iter = pipeline.make_train_iterator(
        train_source,
        crop_size=tuple(config.data.crop_size),
        batch_size=host_batch,
        seed=config.seed,
        flips=config.data.flips,
        rotations=config.data.rotations,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        worker_count=config.data.get("worker_count", 0),
    )

    # Model, optimiser, state.
    model_config = training.model_config(config)
    schedule = training.make_schedule(config)
    tx = training.make_optimizer(config)
    replicated = NamedSharding(mesh, P())
    abstract_state = jax.eval_shape(lambda p: training.create_state(p, tx), abstract_params(model_config))
    abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract_state)

    # Checkpoints: resume from the latest, if any.
    manager = _checkpoint_manager(workdir, config)
    latest = manager.latest_step()
    if latest is not None:
        state = _restore(manager, latest, abstract_state, train_iter, model_config)
        log.info("resumed from step %d", latest)
    else:
        first_eval_batch = lambda: next(
            iter(pipeline.make_eval_batches(eval_source, crop_size=tuple(config.data.crop_size), batch_size=8))
        )
        params = _initial_params(config, model_config, first_eval_batch)
        state = jax.device_put(training.create_state(params, tx), replicated)
    step_fn = training.compile_train_step(config, tx, mesh)
    batch_sharding = NamedSharding(mesh, P("data"))

    writer = MetricWriter(os.path.join(workdir, "logs"), enabled=jax.process_index() == 0)
    start = int(state.step)
    progress = tqdm(total=config.total_steps, initial=start, desc="train", disable=jax.process_index() != 0)
    last_time, last_step = time.perf_counter(), start
    try:
        with _StopRequest() as stop:
            while int(state.step) < config.total_steps:
                local = next(train_iter)
                batch = training.global_batch({k: local[k] for k in ("sharp", "blurry")}, batch_sharding)
                state, metrics = step_fn(state, batch)
                if not float(metrics["finite"]):  # the step was skipped: state is still the last good one
                    if manager.latest_step() != int(state.step):
                        _save(manager, state, train_iter, config, model_config)
                    raise training.NonFiniteLossError(
                        f"non-finite loss or gradient at step {int(state.step) + 1}; stopped and saved the "
                        f"last good checkpoint, step {int(state.step)}, in {workdir}"
                    )
                step = int(state.step)
                progress.update(1)
                if step % config.log_every == 0 or step == config.total_steps:
                    now = time.perf_counter()
                    scalars = {k: float(v) for k, v in metrics.items() if k != "finite"}
                    scalars["steps_per_second"] = (step - last_step) / (now - last_time)
                    scalars["learning_rate"] = float(schedule(step - 1))
                    last_time, last_step = now, step
                    writer.write(step, scalars)
                    progress.set_postfix(loss=f"{scalars['loss']:.4g}", steps_s=f"{scalars['steps_per_second']:.2f}")
                if step % config.eval_every == 0 or step == config.total_steps:
                    model = KernelSpaceModel(state.params, model_config)
                    scores, examples = evaluate(
                        model,
                        pipeline.make_eval_batches(
                            eval_source,
                            crop_size=tuple(config.data.crop_size),
                            batch_size=config.eval.batch_size,
                        ),
                        config.eval.max_batches,
                    )
                    writer.write(step, scores)
                    grid = image_grid(examples[: config.eval.grid_images])
                    writer.write_image(step, "eval/sharp_blurry_reconstructed", grid)
                    if jax.process_index() == 0:
                        write_png(os.path.join(workdir, "logs", f"grid_{step:08d}.png"), grid)
                    log.info("step %d: %s", step, {k: round(v, 3) for k, v in scores.items()})
                if step % config.checkpoint_every == 0 or step == config.total_steps or stop.signal:
                    _save(manager, state, train_iter, config, model_config)
                if stop.signal:
                    manager.wait_until_finished()
                    log.warning("%s received: saved step %d; run the same command to resume", stop.signal, step)
                    break
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        progress.close()
    if stop.signal and raise_on_interrupt:
        step = int(state.step)
        raise TrainingInterrupted(f"{stop.signal} received: saved step {step}; run the same command to resume")
    return KernelSpaceModel(state.params, model_config)
