"""Training: the pure step, resuming (also after kill -9), several devices, NaN guard, loading a run."""

import contextlib
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import kernelspace_jax as ksj
from kernelspace_jax.configs.common import reference_recipe
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.kernel_space.model import init_params
from kernelspace_jax.training import step as training
from kernelspace_jax.training.loop import train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]  # no conftest import: subprocesses import this module


def tiny_config(total_steps=6):
    """A 128x128 micro model on synthetic pairs: a few seconds a run after compilation."""
    config = reference_recipe("micro_wovae")
    config.model.update(extractor_blocks=0, hr_width=8)
    config.total_steps = total_steps
    config.log_every, config.eval_every, config.checkpoint_every = 1, 6, 2
    config.optimizer.update(lr=1e-3, periods=(100,), restarts=(), restart_weights=())
    config.data.update(kind="synthetic", crop_size=(128, 128), batch_size=2)
    config.data.synthetic.update(num_train=16, num_eval=2, image_size=(128, 128), kernel_size_range=(5, 9))
    config.eval.update(batch_size=2, max_batches=1, grid_images=2)
    return config


def losses(workdir):
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def leaves_close(a, b, tol=0.0):
    return all(np.allclose(x, y, rtol=0, atol=tol) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    model = train_and_evaluate(tiny_config(), workdir)
    return workdir, model


def test_step_learns_and_skips_non_finite_batches():
    config = tiny_config()
    tx = training.make_optimizer(config)
    state = training.create_state(init_params(jax.random.key(0), training.model_config(config)), tx)
    step = training.compile_train_step(config, tx, data_mesh())
    rng = np.random.default_rng(0)
    sharp = rng.uniform(size=(2, 128, 128, 3)).astype(np.float32)
    batch = {"sharp": sharp, "blurry": 0.5 * sharp + 0.25}
    first = None
    for _ in range(8):
        state, metrics = step(state, batch)
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.97 * first and int(state.step) == 8
    bad = {"sharp": sharp, "blurry": np.full_like(sharp, np.nan)}
    params_before = jax.tree.map(np.asarray, state.params)
    state, metrics = step(state, bad)
    assert float(metrics["finite"]) == 0 and int(state.step) == 8
    assert leaves_close(state.params, params_before)


def test_run_writes_metrics_grid_and_a_loadable_checkpoint(uninterrupted):
    workdir, model = uninterrupted
    assert sorted(losses(workdir)) == [1, 2, 3, 4, 5, 6]
    assert os.path.exists(os.path.join(workdir, "logs", "grid_00000006.png"))
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
        evals = [json.loads(line) for line in f if "eval/psnr" in line]
    assert evals and {"eval/identity_psnr", "eval/ssim", "eval/psnr_gain", "eval/swapped_psnr"} <= set(evals[0])
    loaded = ksj.load(workdir)
    assert loaded.config == model.config and leaves_close(loaded.params, model.params)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
    earlier = ksj.load(workdir, step=2)
    assert not leaves_close(earlier.params, model.params)


def test_resume_gives_the_uninterrupted_run(uninterrupted, tmp_path):
    workdir, model = uninterrupted
    train_and_evaluate(tiny_config(total_steps=3), str(tmp_path))  # stops after a checkpoint at 2 and at 3
    resumed = train_and_evaluate(tiny_config(), str(tmp_path))
    expected = losses(workdir)
    got = losses(str(tmp_path))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(expected)], rtol=1e-5)
    assert leaves_close(resumed.params, model.params, tol=1e-6)


def test_kill_minus_9_then_resume(uninterrupted, tmp_path):
    workdir, model = uninterrupted
    process = _start_slow_run(tmp_path, 4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = train_and_evaluate(tiny_config(), str(tmp_path))
    expected, got = losses(workdir), losses(str(tmp_path))
    for step in (5, 6):
        np.testing.assert_allclose(got[step], expected[step], rtol=1e-5)
    assert leaves_close(resumed.params, model.params, tol=1e-6)


def _start_slow_run(workdir, until_checkpoint, worker_count=0, **popen_kwargs) -> subprocess.Popen:
    """`_run_slowly` in a subprocess, returned once it has written the checkpoint of `until_checkpoint`."""
    code = f"import sys; from tests.training.test_training import _run_slowly; _run_slowly(sys.argv[1], {worker_count})"
    process = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, **popen_kwargs)
    checkpoint = workdir / "checkpoints" / str(until_checkpoint)
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), f"the run did not reach its step-{until_checkpoint} checkpoint"
    return process


def _run_slowly(workdir, worker_count=0):
    """The tiny run with a pause after each step, so that a test can kill it between checkpoints."""
    from kernelspace_jax.training import loop as trainer

    original = trainer.training.global_batch

    def slow(local, sharding):
        time.sleep(1.0)
        return original(local, sharding)

    trainer.training.global_batch = slow
    config = tiny_config()
    config.data.worker_count = worker_count
    train_and_evaluate(config, workdir)


def test_ctrl_c_to_the_process_group_with_data_workers_saves_then_resumes(uninterrupted, tmp_path):
    """Ctrl-C in a terminal reaches the data worker processes too: the run must still save and stop."""
    workdir, model = uninterrupted
    process = _start_slow_run(tmp_path, 2, worker_count=2, start_new_session=True, stderr=subprocess.PIPE, text=True)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert "received: saved step" in err
    config = tiny_config()
    config.data.worker_count = 2  # the saved data position is that of a 2-worker iterator
    resumed = train_and_evaluate(config, str(tmp_path))
    expected, got = losses(workdir), losses(str(tmp_path))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(expected)], rtol=1e-5)
    assert leaves_close(resumed.params, model.params, tol=1e-6)


def test_several_devices_give_the_same_losses(uninterrupted, tmp_path):
    from conftest import with_two_cpu_devices  # not at the top: this file's subprocesses lack tests/ on their path

    workdir, _ = uninterrupted
    env = with_two_cpu_devices(dict(os.environ))
    code = (
        "import sys, jax; assert jax.device_count() == 2; "
        "from tests.training.test_training import tiny_config; "
        "from kernelspace_jax.training.loop import train_and_evaluate; "
        "train_and_evaluate(tiny_config(), sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, check=True, capture_output=True)
    expected, got = losses(workdir), losses(str(tmp_path))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(expected)], rtol=1e-4)


def test_non_finite_loss_stops_with_the_last_good_checkpoint(uninterrupted, tmp_path, monkeypatch):
    """A batch that makes step 5 non-finite (as a diverging run would) stops the run with step 4 saved."""
    workdir, _ = uninterrupted
    original, calls = training.global_batch, []

    def poisoned(local, sharding):
        calls.append(None)
        if len(calls) == 5:
            local = {**local, "blurry": np.full_like(local["blurry"], np.nan)}
        return original(local, sharding)

    monkeypatch.setattr(training, "global_batch", poisoned)
    with pytest.raises(training.NonFiniteLossError, match=r"at step 5; .* last good checkpoint, step 4"):
        train_and_evaluate(tiny_config(), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    assert leaves_close(ksj.load(str(tmp_path)).params, ksj.load(workdir, step=4).params, tol=1e-6)


def _damage_step(workdir, step, how):
    """Flips bytes of (or deletes) the largest parameter file of checkpoint `step`."""
    params = pathlib.Path(workdir) / "checkpoints" / str(step) / "params"
    victim = max((p for p in params.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    if how == "delete":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))


def _copy_checkpoints(workdir, target):
    shutil.copytree(pathlib.Path(workdir) / "checkpoints", pathlib.Path(target) / "checkpoints")


@contextlib.contextmanager
def _warnings_of_the_package():
    records, logger = [], logging.getLogger("kernelspace_jax")
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_every_step_records_its_checksums(uninterrupted):
    from kernelspace_jax.kernel_space import checkpoints

    workdir, _ = uninterrupted
    for step in ("2", "4", "6"):
        assert checkpoints.verify_checksums(os.path.join(workdir, "checkpoints", step)) is True


def test_resume_falls_back_to_the_newest_intact_checkpoint(uninterrupted, tmp_path):
    """Steps 6 and 4 damaged: the run warns, resumes from step 2 and gives the uninterrupted run; the
    damaged folders are kept in damaged_checkpoints/."""
    workdir, model = uninterrupted
    _copy_checkpoints(workdir, tmp_path)
    _damage_step(tmp_path, 6, "flip")
    _damage_step(tmp_path, 4, "delete")
    with _warnings_of_the_package() as records:
        resumed = train_and_evaluate(tiny_config(), str(tmp_path))
    warnings = [r.getMessage() for r in records]
    assert any("checkpoints/6: checkpoint damaged: item 'params'" in w for w in warnings), warnings
    assert any("checkpoints/4: checkpoint damaged: item 'params'" in w and "is missing" in w for w in warnings)
    assert any(w.startswith("resumed from step 2, the newest intact checkpoint") for w in warnings), warnings
    expected, got = losses(workdir), losses(str(tmp_path))
    assert sorted(got) == [3, 4, 5, 6]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)], rtol=1e-5)
    assert leaves_close(resumed.params, model.params, tol=1e-6)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]
    assert sorted(os.listdir(tmp_path / "damaged_checkpoints")) == ["4", "6"]


def test_resume_without_an_intact_checkpoint_is_one_clear_error(uninterrupted, tmp_path):
    from kernelspace_jax.kernel_space.checkpoints import CheckpointCorruptError

    workdir, _ = uninterrupted
    _copy_checkpoints(workdir, tmp_path)
    for step in (2, 4, 6):
        _damage_step(tmp_path, step, "flip")
    with pytest.raises(CheckpointCorruptError, match=r"no intact checkpoint to resume from in .*checkpoints/6: .*"):
        train_and_evaluate(tiny_config(), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]  # nothing moved or deleted


def test_cpu_recipe_runs_by_name_and_learns_within_its_first_steps(tmp_path):
    """`synthetic_tiny:cpu` (README's first training command), its first 150 steps with their own
    one-period schedule: F(x, G(x, y)) must already beat the identity on the held-out pairs by 0.8 dB
    (all its steps: docs/training.md)."""
    from kernelspace_jax import configs
    from kernelspace_jax.cli import train

    config = configs.get("synthetic_tiny:cpu")
    assert config.model.nf == 16 and tuple(config.data.crop_size) == (64, 64) and config.data.worker_count == 0
    with pytest.raises(ValueError, match="unknown synthetic_tiny variant"):
        configs.get("synthetic_tiny:tpu")
    steps = 150
    workdir = tmp_path / "cpu"
    argv = ["--config", "synthetic_tiny:cpu", "--workdir", str(workdir), f"--config.total_steps={steps}"]
    argv += [f"--config.{name}={steps}" for name in ("eval_every", "checkpoint_every")]
    assert train.main([*argv, f"--config.optimizer.periods=({steps},)"]) == 0
    with open(workdir / "logs" / "metrics.jsonl") as f:
        final = [row for row in map(json.loads, f) if "eval/psnr_gain" in row][-1]
    assert final["step"] == steps
    assert final["eval/psnr_gain"] > 0.8, final
