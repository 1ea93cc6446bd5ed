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
import shutil
import signal
import threading
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


class _ChecksummedCheckpointManager(ocp.CheckpointManager):
    """Orbax's CheckpointManager that gives every step folder its checksums.json
    (`checkpoints.write_checksums`) as soon as Orbax has finished writing it: a thread per save waits
    for Orbax, so saving stays asynchronous, and `wait_until_finished` (which `save` and `close` call)
    waits for those threads too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recorders: list[threading.Thread] = []

    def save(self, step, *args, **kwargs):
        saved = super().save(step, *args, **kwargs)
        if saved and jax.process_index() == 0:
            thread = threading.Thread(target=self._record, args=(int(step),), name=f"checksums-{step}", daemon=True)
            thread.start()
            self._recorders.append(thread)
        return saved

    def _record(self, step: int) -> None:
        try:
            super().wait_until_finished()
        except BaseException:  # the save failed; Orbax raises it to the training thread
            return
        path = _step_path(self, step)
        if os.path.isdir(path):
            try:
                checkpoints.write_checksums(path)
            except OSError as error:
                log.warning("could not write the checksums of %s (%s); it will load unverified", path, error)

    def wait_until_finished(self):
        super().wait_until_finished()
        while self._recorders:
            self._recorders.pop(0).join()


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return _ChecksummedCheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def _step_path(manager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))


_DAMAGED_STEP_ADVICE = "resuming tries the step before it"


def _save(manager, state, train_iter, config, model_config, force=False):
    meta = checkpoints.checkpoint_meta(model_config, train_config=config.to_dict())
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        config=ocp.args.JsonSave(meta),
        data=grain.checkpoint.CheckpointSave(train_iter),
    )
    manager.save(int(state.step), args=args, force=force)


def _restore(manager, step, abstract_state, train_iter, model_config, worker_count=0):
    """The TrainState of `step`, its files verified first; CheckpointCorruptError if it is damaged."""
    path, advice = _step_path(manager, step), _DAMAGED_STEP_ADVICE
    checkpoints.verify_checksums(path, advice=advice)
    try:
        meta = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        saved = checkpoints.KernelSpaceConfig.from_dict(meta["kernel_space"])
    except Exception as error:  # Orbax, tensorstore and the file system raise many kinds
        raise checkpoints.restore_failed(path, "config", error, advice) from error
    if saved != model_config:
        raise checkpoints.CheckpointMismatchError(
            f"the checkpoints in this workdir are of {saved}, but the config asks for {model_config}; "
            "use another --workdir"
        )
    # The data iterator's saved state has the shape of an iterator with the same worker_count
    # (pipeline.make_train_iterator); another count fails deep in grain with a KeyError.
    saved_workers = meta.get("train_config", {}).get("data", {}).get("worker_count", 0)
    if saved_workers != worker_count:
        raise checkpoints.CheckpointMismatchError(
            f"step {step} in this workdir was written with data.worker_count={saved_workers}, but the config "
            f"asks for {worker_count}; the data position can only be restored with the same count: resume "
            f"with --config.data.worker_count={saved_workers}, or use another --workdir"
        )
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state.params),
                train_state=ocp.args.StandardRestore(
                    {"step": abstract_state.step, "opt_state": abstract_state.opt_state}
                ),
                data=grain.checkpoint.CheckpointRestore(train_iter),
            ),
        )
    except KeyError as error:  # grain's state of another iterator layout
        raise checkpoints.CheckpointMismatchError(
            f"the data-iterator state of step {step} in this workdir does not fit this run's iterator "
            f"(missing {error}); resume with the data settings it was written with, or use another --workdir"
        ) from None
    except Exception as error:
        raise checkpoints.restore_failed(path, "params, train_state or data", error, advice) from error
    return training.TrainState(
        step=restored["train_state"]["step"],
        params=restored["params"],
        opt_state=restored["train_state"]["opt_state"],
    )


def _resume(manager, abstract_state, train_iter, model_config, worker_count=0):
    """The TrainState of the newest intact step, None without steps.

    A damaged step (`checkpoints.CheckpointCorruptError`) is skipped with a warning and, once an older
    one has been restored, moved to workdir/damaged_checkpoints/ (kept, out of the way of the steps the
    run saves again). Raises CheckpointCorruptError, listing what is wrong with each, if none is intact.
    """
    damaged = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = _restore(manager, step, abstract_state, train_iter, model_config, worker_count)
        except checkpoints.CheckpointCorruptError as error:
            log.warning("%s", error)
            damaged.append((step, error))
            continue
        if damaged:
            moved = _move_damaged(manager, [s for s, _ in damaged])
            log.warning(
                "resumed from step %d, the newest intact checkpoint; damaged step(s) %s moved to %s",
                step,
                ", ".join(str(s) for s, _ in damaged),
                moved,
            )
        else:
            log.info("resumed from step %d", step)
        return state
    if damaged:
        listed = "; ".join(str(e).removesuffix(f"; {_DAMAGED_STEP_ADVICE}") for _, e in damaged[:3])
        more = f"; and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        raise checkpoints.CheckpointCorruptError(
            f"no intact checkpoint to resume from in {os.fspath(manager.directory)} ({listed}{more}); move that "
            "folder away (or use another --workdir) to train from the start"
        )
    return None


def _move_damaged(manager, steps) -> str:
    """Moves the step folders `steps` to workdir/damaged_checkpoints/ (process 0); returns that folder."""
    target = os.path.join(os.path.dirname(os.fspath(manager.directory)), "damaged_checkpoints")
    if jax.process_index() == 0:
        os.makedirs(target, exist_ok=True)
        for step in steps:
            name, n = str(step), 1
            while os.path.lexists(os.path.join(target, name)):
                name, n = f"{step}-{n}", n + 1
            shutil.move(_step_path(manager, step), os.path.join(target, name))
    manager.reload()
    return target


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


def check_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Raises ValueError / NotADirectoryError (one line) for a config or workdir that a run cannot use,
    before anything is built, loaded or compiled: data.batch_size >= 1 and a multiple of the devices,
    data.worker_count >= 0, the step intervals >= 1, model fields that describe an architecture
    (`KernelSpaceConfig`'s own checks), and a workdir that is a folder or does not exist yet. data.kind
    is `sources.build`'s to check (the next thing a run does)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir} is a file; give a folder (created if missing)")
    batch_size = config.data.batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}")
    if batch_size % jax.device_count():
        raise ValueError(f"data.batch_size {batch_size} must be a multiple of the {jax.device_count()} devices")
    worker_count = config.data.get("worker_count", 0)
    if not isinstance(worker_count, int) or worker_count < 0:
        raise ValueError(f"data.worker_count must be an integer >= 0, got {worker_count!r}")
    for field in ("total_steps", "log_every", "eval_every", "checkpoint_every"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"{field} must be a positive integer, got {config[field]!r}")
    try:
        training.model_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the model fields describe no architecture: {error}") from None


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, raise_on_interrupt: bool = False
) -> KernelSpaceModel:
    """Trains F and G as `config` says, in `workdir`, resuming from its latest checkpoint.

    SIGTERM / SIGINT save the current step and stop the run: the model so far is returned, or with
    `raise_on_interrupt` TrainingInterrupted is raised (the command line exits non-zero with it).
    A config or workdir it cannot use raises first (`check_config`), before anything is built.
    """
    # Devices and input.
    if config.get("distributed"):
        jax.distributed.initialize()
    check_config(config, workdir)
    mesh = data_mesh()
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

    # Checkpoints: resume from the newest intact one, if any.
    manager = _checkpoint_manager(workdir, config)
    state = _resume(manager, abstract_state, train_iter, model_config, config.data.get("worker_count", 0))
    if state is None:
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
