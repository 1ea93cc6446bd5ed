"""The deblurring search (kernelspace_jax.deblurring.dip) on a micro kernel space and tiny priors.

Compiling a search chunk costs tens of seconds on a CPU; running the tiny one is fast. So one test
(`test_search`) makes every check that needs a search, on one compiled chunk (batches of two 64x64
images, padded to 128x128, `tiny_config()`, the chunk test_deblur_cli.py uses too), while a
subprocess with two CPU devices compiles and runs the sharded, single-image and alternating searches
on the other core.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import start_on_two_cpu_devices

import kernelspace_jax as ksj
from kernelspace_jax.configs.deblur_generic import get_config
from kernelspace_jax.deblurring import dip as search
from kernelspace_jax.deblurring import engine
from kernelspace_jax.deblurring.warmup import fit_to_grid, load_kernel_file, unsharp_mask, warmup_kernels

SIZE = 64


def tiny_model():
    """micro() without G's ResNet blocks (so 64-128 px images pad to 128, not 256) and a narrow tail."""
    config = dataclasses.replace(ksj.kernel_space.config.micro(), extractor_blocks=0, hr_width=8)
    return ksj.init(jax.random.key(0), config)


def tiny_config(**overrides):
    """One-scale priors, 4 warm-up + 8 main steps, one step per compiled chunk (cheapest to compile;
    the chunk size does not change the results).

    The reference's learning rate: with much larger ones Adam's first, sign-like steps turn float
    round-off (which differs between batch sizes) into visible differences.
    """
    config = get_config("local")
    config.image_dip.update(channels_down=(4,), channels_up=(4,), channels_skip=(2,))
    config.kernel_dip.update(nf=2, n_blocks=0)
    config.update(num_warmup_iters=4, num_iters=8, chunk_size=1)
    config.update(**overrides)
    return config


def blurry_images(n, seed=0):
    """Smooth random images (B, 64, 64, 3) in [0, 1]."""
    noise = jax.random.uniform(jax.random.key(seed), (n, SIZE // 8, SIZE // 8, 3))
    return jax.image.resize(noise, (n, SIZE, SIZE, 3), "linear")


KEYS = jax.random.split(jax.random.key(7), 2)

SUBPROCESS = """
import sys
import jax, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
from tests.deblurring.test_dip_search import KEYS, blurry_images, tiny_config, tiny_model
from kernelspace_jax.deblurring import dip as search
assert jax.device_count() == 2
model = tiny_model()
# vmapped images here; the main process maps them (batch_mode "auto" on a CPU): same results.
batch = search.deblur(model, KEYS, blurry_images(2), config=tiny_config(batch_mode="vmap"))
alone = search.deblur(model, KEYS[1:], blurry_images(2)[1:], config=tiny_config(batch_mode="vmap"))
config = tiny_config(update_mode="alternating", remat=True, compute_dtype="bfloat16")
alternating = search.deblur(model, jax.random.key(1), blurry_images(1, seed=3), config=config)
# x alone, k fixed to the "sharpened" warm-up kernel of the padded image.
fixed = search.deblur(model, jax.random.key(2), blurry_images(1, seed=4),
                      config=tiny_config(update_mode="fixed_kernel", warmup_kernel="sharpened"))
padded = np.pad(np.asarray(blurry_images(1, seed=4)), ((0, 0), (0, 64), (0, 64), (0, 0)), "reflect")
from kernelspace_jax.deblurring.warmup import warmup_kernels
np.savez(sys.argv[1], devices=len(batch.sharp.sharding.device_set), sharp=np.asarray(batch.sharp),
         loss=batch.history["loss"], alone=np.asarray(alone.sharp), alone_loss=alone.history["loss"],
         alone_kernel=np.asarray(alone.kernel), alternating_loss=alternating.history["loss"],
         alternating_dtype=str(alternating.sharp.dtype), alternating_update=alternating.history["update"],
         fixed_kernel=np.asarray(fixed.kernel), fixed_loss=fixed.history["loss"],
         sharpened=np.asarray(warmup_kernels(model, padded, "sharpened")), fixed_update=fixed.history["update"])
"""


def check_result(result, model):
    sharp, kernel, reblurred, history = result
    assert sharp.shape == reblurred.shape == (2, SIZE, SIZE, 3)
    assert kernel.shape == (2, *model.kernel_shape(SIZE, SIZE))
    assert float(sharp.min()) >= 0 and float(sharp.max()) <= 1
    assert history["loss"].shape == (2, 12) and np.isfinite(history["loss"]).all()
    np.testing.assert_array_equal(history["failed_at"], [-1, -1])
    assert history["objective"] == "fallback" and history["update"] == "joint"
    # F(x, k) of the padded x the search optimised: F of the cropped x differs only near the padding.
    np.testing.assert_allclose(reblurred[:, :48, :48], model.blur(sharp, kernel)[:, :48, :48], atol=1e-5)
    loss = history["loss"]
    assert (loss[:, 3] < loss[:, 0]).all(), loss  # the warm-up fits
    assert (loss[:, 7] < loss[:, 4]).all(), loss  # the first half of the main phase (same weights)


def check_other_iteration_counts_reuse_the_chunk(model):
    traces = engine.trace_count(search.TRACE_NAME)
    for num_iters, num_warmup in ((5, 3), (16, 4)):
        config = tiny_config(num_iters=num_iters, num_warmup_iters=num_warmup)
        result = search.deblur(model, KEYS, blurry_images(2), config=config)
        assert result.history["loss"].shape == (2, num_iters + num_warmup)
        assert np.isfinite(result.history["loss"]).all()
    assert engine.trace_count(search.TRACE_NAME) == traces


def check_alone_in_longer_chunks_gives_the_batch_result(result, model):
    """Image 1 alone, in 5-step chunks (a rolled lax.scan; 12 steps leave a 3-step tail that must change
    nothing), runs the search it ran second in a batch of two in 1-step chunks (the CPU default, images
    taking turns)."""
    alone = search.deblur(model, KEYS[1:], blurry_images(2)[1:], config=tiny_config(chunk_size=5))
    np.testing.assert_allclose(alone.history["loss"][0], result.history["loss"][1], rtol=1e-5)
    np.testing.assert_allclose(alone.sharp[0], result.sharp[1], atol=1e-5)
    np.testing.assert_allclose(alone.kernel[0], result.kernel[1], atol=1e-5, rtol=1e-5)


def check_non_finite_steps_stop_only_their_image(result, model):
    config = tiny_config()
    settings = search.settings_from_config(config, model, has_vgg=False)
    padded = jnp.asarray(np.pad(np.asarray(blurry_images(2)), ((0, 0), (0, 64), (0, 64), (0, 0)), "reflect"))
    kernels = warmup_kernels(model, padded, "identity")
    counts = (np.int32(config.num_warmup_iters), np.int32(config.num_iters))

    def run(state, steps):
        for t0 in steps:  # as deblur() calls it, so the compiled chunk is reused
            state, loss = search.run_chunk(
                state, padded, None, kernels, np.int32(t0), *counts, model, None, settings=settings, mesh=None
            )
        return state, loss

    traces = engine.trace_count(search.TRACE_NAME)
    state, _ = run(search.init_states(KEYS, padded, kernels, settings=settings), range(6))
    last_finite = np.asarray(state.sharp[1])
    clean, _ = run(jax.tree.map(jnp.copy, state), range(6, 12))  # run_chunk donates its state
    # NaN parameters in image 1's prior make its step 6 non-finite: it stops there and keeps its x.
    state = state.replace(x_params=jax.tree.map(lambda a: a.at[1].set(jnp.nan), state.x_params))
    state, _ = run(state, range(6, 12))
    np.testing.assert_array_equal(state.failed_at, [-1, 6])
    np.testing.assert_array_equal(state.sharp[1], last_finite)
    # Image 0 goes on exactly as without the NaN, and as deblur() ran it (compiled separately: round-off).
    np.testing.assert_allclose(state.sharp[0], clean.sharp[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(state.sharp[0, :SIZE, :SIZE], result.sharp[0], atol=1e-4)
    # Steps past the end (a last chunk's spare steps) change nothing and report NaN.
    done = np.asarray(state.sharp)
    state, loss = run(state, [12])
    assert np.isnan(loss).all()
    np.testing.assert_array_equal(state.sharp, done)
    assert engine.trace_count(search.TRACE_NAME) == traces

    # Through deblur(): a NaN pixel stops image 1 at its first step; image 0 is unaffected.
    nan_pixel = search.deblur(model, KEYS, blurry_images(2).at[1, 5, 5, 0].set(jnp.nan), config=config)
    np.testing.assert_array_equal(nan_pixel.history["failed_at"], [-1, 0])
    assert np.isnan(nan_pixel.history["loss"][1]).all()
    np.testing.assert_allclose(nan_pixel.sharp[0], result.sharp[0], atol=1e-6)


def check_two_device_searches(got, result):
    """On two devices every device runs a single-image search of the split batch. Image 1 alone is
    the same program there, so it must equal its batch result exactly; against the batch on one
    device (another program) the results agree up to round-off as Adam amplifies it: its first
    updates are nearly lr * sign(gradient), so a gradient that is zero but for round-off moves its
    parameter by up to 2 lr. After 12 steps x differs by ~4e-4 (a tenth of an 8-bit level)."""
    assert got["devices"] == 2
    np.testing.assert_allclose(got["alone"][0], got["sharp"][1], atol=1e-6)
    np.testing.assert_allclose(got["alone_loss"][0], got["loss"][1], rtol=1e-6)
    np.testing.assert_allclose(got["sharp"], result.sharp, atol=2e-3)
    np.testing.assert_allclose(got["loss"], result.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(got["alone_kernel"][0], result.kernel[1], atol=2e-3, rtol=1e-3)
    # The alternating update, with rematerialisation and a bfloat16 F.
    loss = got["alternating_loss"][0]
    assert np.isfinite(loss).all() and loss[7] < loss[4] and loss[3] < loss[0], loss
    assert got["alternating_dtype"] == "float32" and got["alternating_update"] == "alternating"
    # fixed_kernel: k stays the warm-up kernel, bit for bit, while x's loss falls.
    assert got["fixed_update"] == "fixed_kernel"
    np.testing.assert_array_equal(got["fixed_kernel"], got["sharpened"])
    loss = got["fixed_loss"][0]
    assert np.isfinite(loss).all() and loss[7] < loss[4] and loss[3] < loss[0], loss


def test_search(tmp_path):
    two_devices = start_on_two_cpu_devices(SUBPROCESS, str(tmp_path / "two_devices.npz"))
    try:
        model = tiny_model()
        result = search.deblur(model, KEYS, blurry_images(2), config=tiny_config())
        check_result(result, model)
        check_other_iteration_counts_reuse_the_chunk(model)
        check_alone_in_longer_chunks_gives_the_batch_result(result, model)
        check_non_finite_steps_stop_only_their_image(result, model)
        _, stderr = two_devices.communicate(timeout=900)
    finally:
        two_devices.kill()
    assert two_devices.returncode == 0, stderr[-3000:]
    check_two_device_searches(np.load(tmp_path / "two_devices.npz"), result)


def test_reference_objective_with_the_blurry_images_vgg_features_computed_once():
    """The perceptual objective compares F(x, k) with VGG19 features of y computed once before the
    search; the reference recomputes them every step. The search's objective gives the same loss either
    way, and a main-phase step of the search runs on them."""
    from kernelspace_jax.models.vgg import VGG19Features

    model = tiny_model()
    vgg = VGG19Features().init(jax.random.key(2), jnp.zeros((1, 32, 32, 3)))["params"]
    settings = search.settings_from_config(tiny_config(), model, has_vgg=True)
    assert settings.objective.name == "reference"
    padded = jnp.asarray(np.pad(np.asarray(blurry_images(2)), ((0, 0), (0, 64), (0, 64), (0, 0)), "reflect"))
    kernels = warmup_kernels(model, padded, "zero")
    features = search.blurry_features_of(padded, vgg, settings=settings)
    assert features["relu1_1"].shape == (2, 128, 128, 64) and features["relu5_1"].shape == (2, 8, 8, 512)

    objective = search._objective_fn(settings, model, vgg, np.int32(4), np.int32(8))
    sharp = padded[::-1]  # a wrong guess of x, so that F(x, k) and y differ
    k = 0.1 * jax.random.normal(jax.random.key(3), kernels.shape)
    given = jax.jit(jax.vmap(lambda x, k, y, f, w: objective(x, k, y, f, w, 5)))
    computed = jax.jit(jax.vmap(lambda x, k, y, w: objective(x, k, y, None, w, 5)))
    loss = given(sharp, k, padded, features, kernels)
    np.testing.assert_allclose(loss, computed(sharp, k, padded, kernels), rtol=1e-5)
    swapped = given(sharp, k, padded, jax.tree.map(lambda f: f[::-1], features), kernels)
    assert (np.abs(np.asarray(swapped) - np.asarray(loss)) > 1e-3 * np.abs(np.asarray(loss))).all()

    state = search.init_states(KEYS, padded, kernels, settings=settings)
    before = np.asarray(state.sharp)
    state, loss = search.run_chunk(
        state, padded, features, kernels, np.int32(5), np.int32(4), np.int32(8), model, vgg, settings=settings
    )
    assert np.isfinite(loss).all() and loss.shape == (1, 2)
    assert np.abs(np.asarray(state.sharp) - before).max() > 1e-4


def test_step_decay_schedule_is_the_references_steplr():
    # torch: StepLR(step_size=1000, gamma=0.7) stepped before each of the 5000 main updates, after 300
    # warm-up updates at the base rate: update i of the main phase uses 0.7^((i + 1) // 1000).
    schedule = search.step_decay_schedule(5e-4, 0.7, 5, 300, 5000)
    counts = np.array([0, 299, 300, 1298, 1299, 2299, 5299])
    expected = 5e-4 * 0.7 ** np.array([0, 0, 0, 0, 1, 2, 5])
    np.testing.assert_allclose([float(schedule(c)) for c in counts], expected, rtol=1e-6)


def test_objective_without_vgg_and_unknown_settings():
    model = tiny_model()
    with pytest.raises(ValueError, match="needs VGG19 weights"):
        search.resolve_objective(tiny_config(objective="reference"), has_vgg=False)
    assert search.resolve_objective(tiny_config(), has_vgg=True).name == "reference"
    with pytest.raises(ValueError, match="batch_mode must be one of"):
        search.settings_from_config(tiny_config(batch_mode="pmap"), model, False)
    assert search.settings_from_config(tiny_config(), model, False).sequential == (jax.default_backend() == "cpu")
    with pytest.raises(ValueError, match="update must be one of"):
        search.settings_from_config(tiny_config(update_mode="both"), model, False)
    with pytest.raises(ValueError, match="both sides must be at least 32"):
        search.deblur(model, KEYS[0], jnp.zeros((1, 20, 64, 3)), config=tiny_config())
    with pytest.raises(TypeError, match="floating point"):
        search.deblur(model, KEYS[0], jnp.zeros((1, 64, 64, 3), jnp.uint8), config=tiny_config())
    with pytest.raises(ValueError, match="one per image"):
        search.deblur(model, KEYS.reshape(2, 1), jnp.zeros((2, 64, 64, 3)), config=tiny_config())


def test_warmup_kernel_files_and_grids(tmp_path):
    model = tiny_model()
    dim = model.config.kernel_dim
    nchw = np.arange(dim * 4, dtype=np.float32).reshape(1, dim, 2, 2)  # how torch saves the reference's
    np.save(tmp_path / "nchw.npy", nchw)
    np.savez(tmp_path / "nhwc.npz", kernel=nchw.transpose(0, 2, 3, 1)[0])
    for name in ("nchw.npy", "nhwc.npz"):
        np.testing.assert_array_equal(load_kernel_file(tmp_path / name, dim), nchw.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"\(1, h, w, 512\)"):
        load_kernel_file(tmp_path / "nchw.npy", 512)
    with pytest.raises(FileNotFoundError, match="neither one of"):
        warmup_kernels(model, jnp.zeros((1, 128, 128, 3)), "no_such_kernel.npy")
    # A 2x2 file for an image with a 1x2 grid is resized; the same grid passes unchanged.
    kernels = warmup_kernels(model, jnp.zeros((3, 128, 256, 3)), os.fspath(tmp_path / "nchw.npy"))
    assert kernels.shape == (3, 1, 2, dim)
    same = jnp.asarray(nchw.transpose(0, 2, 3, 1))
    assert fit_to_grid(same, (2, 2)) is same
    assert warmup_kernels(model, jnp.zeros((1, 128, 128, 3)), "zero").shape == (1, 1, 1, dim)
    identity = warmup_kernels(model, blurry_images(1), "identity")
    np.testing.assert_allclose(identity, model.extract(blurry_images(1), blurry_images(1))[0], atol=1e-6)
    sharpened = warmup_kernels(model, blurry_images(1), "sharpened")
    guess = unsharp_mask(blurry_images(1))
    np.testing.assert_allclose(sharpened, model.extract(guess, blurry_images(1))[0], atol=1e-6)


def test_unsharp_mask():
    """y + (y - Gaussian_2(y)), clipped: a constant image stays, an edge overshoots on both sides."""
    flat = jnp.full((1, 16, 16, 3), 0.4)
    np.testing.assert_allclose(unsharp_mask(flat), flat, atol=1e-6)
    edge = jnp.broadcast_to(jnp.where(jnp.arange(16) < 8, 0.3, 0.6)[None, None, :, None], (1, 16, 16, 3))
    out = np.asarray(unsharp_mask(edge))[0, 8, :, 0]
    assert out[7] < 0.3 - 0.05 and out[8] > 0.6 + 0.05  # the edge's contrast grows
    np.testing.assert_allclose(out[[0, 15]], [0.3, 0.6], atol=1e-6)  # far from it nothing changes
    np.testing.assert_array_equal(unsharp_mask(jnp.where(edge > 0.5, 1.0, 0.0)), jnp.where(edge > 0.5, 1.0, 0.0))


def test_config_variants():
    reference, fast = get_config(), get_config("fast")
    assert (reference.num_warmup_iters, reference.num_iters, reference.lr_gamma) == (300, 5000, 0.7)
    assert (reference.warmup_kernel, reference.update_mode) == ("zero", "joint")
    assert max(fast.image_dip.channels_down) == 32 and fast.num_iters < reference.num_iters
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("demo")


def test_all_finite_is_computed_once_in_the_compiled_step():
    """The step's keep-flag: right values, and not a chain of `and`s copied into every leaf's update."""
    leaves = [jnp.full((4, 4), float(i)) for i in range(60)]
    assert bool(engine.all_finite(leaves, jnp.float32(1.0)))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        assert not bool(engine.all_finite([*leaves[:30], leaves[30].at[1, 2].set(bad), *leaves[31:]]))

    def update(leaves, old):
        keep = engine.all_finite(leaves)
        return [jnp.where(keep, new * 2.0, prev) for new, prev in zip(leaves, old, strict=True)]

    program = jax.jit(update).lower(leaves, leaves).compile().as_text()
    # One `and` per leaf's reduction at most; jnp.all of the stacked flags gave 60 x 60 = 3600.
    assert program.count(" and(") <= len(leaves)
