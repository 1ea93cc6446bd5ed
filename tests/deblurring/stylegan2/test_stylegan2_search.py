"""The StyleGAN2 (domain-specific) search on the golden micro generator (32 px, a random rosinality
checkpoint) and the micro kernel space of test_search.py.

Compiling a search chunk costs tens of seconds on a CPU, so every check that needs a search runs on
one compiled chunk: batches of two 32x32 images, `tiny_config()`, one step per chunk (the CLI test uses
it too). A subprocess with two CPU devices compiles the sharded search (one image per device, i.e.
each image alone) on the other core meanwhile.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, start_on_two_cpu_devices
from PIL import Image

import kernelspace_jax as ksj
from kernelspace_jax.cli import deblur
from kernelspace_jax.configs.deblur_stylegan2 import get_config
from kernelspace_jax.deblurring import engine
from kernelspace_jax.deblurring.stylegan2 import prior as stylegan2_prior
from kernelspace_jax.deblurring.stylegan2 import search as stylegan2_search
from kernelspace_jax.deblurring.stylegan2.checkpoints import load_stylegan2
from kernelspace_jax.deblurring.stylegan2.ops import on_sphere, sphere_radii, torch_adam
from kernelspace_jax.deblurring.warmup import warmup_kernels
from kernelspace_jax.io.images import png_text, read_image
from kernelspace_jax.models.stylegan2 import Generator
from tests.deblurring.test_dip_search import tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections
GOLDEN = ROOT / "tests" / "data" / "golden_stylegan2"
KERNEL_WIZARD_PTH = ROOT / "tests" / "data" / "golden" / "kw_micro_wovae_init.pth"
SIZE = 32  # the micro generator's
FIT_SAMPLES = 2000
KEYS = jax.random.split(jax.random.key(7), 3)[:2]
OTHER_KEY = jax.random.split(jax.random.key(7), 3)[2]
TINY = {
    "kernel_dip.nf": 2,
    "kernel_dip.n_blocks": 0,
    "num_warmup_iters": 3,
    "num_epochs": 2,
    "num_x_iters": 4,
    "num_k_iters": 3,
    "chunk_size": 1,
    "gaussian_fit_samples": FIT_SAMPLES,
}
STEPS = 3 + 2 * (4 + 3)
COUNT_FIELDS = ("num_warmup_iters", "num_epochs", "num_x_iters", "num_k_iters")


def tiny_config(**overrides):
    """A 2-wide KernelDIP without blocks; 3 warm-up steps and 2 epochs of 4 x-steps and 3 k-steps."""
    config = get_config("local")
    config.kernel_dip.update(nf=2, n_blocks=0)
    config.update({k: v for k, v in TINY.items() if "." not in k}, **overrides)
    return config


def blurry_images(n, seed=0):
    """Smooth random images (n, 32, 32, 3) in [0, 1]."""
    noise = jax.random.uniform(jax.random.key(seed), (n, SIZE // 8, SIZE // 8, 3))
    return jax.image.resize(noise, (n, SIZE, SIZE, 3), "linear")


def copy_generator(folder: pathlib.Path) -> pathlib.Path:
    """The golden micro generator copied to `folder` (the Gaussian fit is cached beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(shutil.copy(GOLDEN / "stylegan2_micro.pt", folder / "stylegan2_micro.pt"))


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    return copy_generator(tmp_path_factory.mktemp("generator"))


@pytest.fixture(scope="module")
def prior(generator_file):
    return stylegan2_prior.load_prior(generator_file, num_samples=FIT_SAMPLES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return ksj.save(tiny_model(), tmp_path_factory.mktemp("kernel_space") / "ckpt")


@pytest.fixture(scope="module")
def model(checkpoint):
    """tiny_model() as deblur.py loads it: its arrays are committed to a device, unlike a fresh model's,
    and jit compiles anew for committed arguments, so every test here uses this one."""
    return ksj.load(checkpoint)


SUBPROCESS = """
import sys
import jax, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
from tests.deblurring.stylegan2.test_stylegan2_search import FIT_SAMPLES, KEYS, blurry_images, tiny_config, tiny_model
from kernelspace_jax.deblurring.stylegan2 import prior as stylegan2_prior
from kernelspace_jax.deblurring.stylegan2.search import deblur_stylegan2
assert jax.device_count() == 2
prior = stylegan2_prior.load_prior(sys.argv[2], num_samples=FIT_SAMPLES)
model = tiny_model()
# vmapped images here; the main process lets them take turns (batch_mode "auto" on a CPU): same results.
batch = deblur_stylegan2(model, prior, KEYS, blurry_images(2), config=tiny_config(batch_mode="vmap"))
alone = deblur_stylegan2(model, prior, KEYS[1:], blurry_images(2)[1:], config=tiny_config(batch_mode="vmap"))
np.savez(sys.argv[1], devices=len(batch.sharp.sharding.device_set), sharp=np.asarray(batch.sharp),
         kernel=np.asarray(batch.kernel), loss=batch.history["loss"], alone=np.asarray(alone.sharp),
         alone_loss=alone.history["loss"])
"""


def check_result(result, model):
    sharp, kernel, reblurred, history = result
    assert sharp.shape == reblurred.shape == (2, SIZE, SIZE, 3)
    assert kernel.shape == (2, *model.kernel_shape(SIZE, SIZE))
    assert float(sharp.min()) >= 0 and float(sharp.max()) <= 1
    loss = history["loss"]
    assert loss.shape == (2, STEPS) and np.isfinite(loss).all()
    np.testing.assert_array_equal(history["failed_at"], [-1, -1])
    assert history["objective"] == "100*L2+0.1*GEOCROSS+0.0001*|k|"
    assert (loss[:, 2] < loss[:, 0]).all(), loss  # the warm-up fits k
    assert (loss[:, 6] < loss[:, 3]).all(), loss  # the first epoch's x-steps
    # The lowest main-phase loss is the one kept.
    np.testing.assert_array_equal(history["best_loss"], loss[:, 3:].min(axis=1))
    np.testing.assert_array_equal(history["best_step"], 3 + loss[:, 3:].argmin(axis=1))
    assert (history["best_loss"] < loss[:, 3] * 0.8).all(), loss
    # Its L2 term (100 * MSE of F(x, k)) is part of that loss.
    l2 = 100 * np.mean(np.square(np.asarray(reblurred) - np.asarray(blurry_images(2))), axis=(1, 2, 3))
    assert (l2 <= history["best_loss"]).all()


def check_step_by_step(result, model, prior):
    """Runs the chunk by hand: the kept x and k change exactly at each new lowest loss, and the
    searched latents and noise maps stay on their initial spheres."""
    config = tiny_config()
    settings = stylegan2_search.settings_from_config(config, model)
    assert settings.sequential == (jax.default_backend() == "cpu")  # the images take turns on CPUs
    blurry = blurry_images(2)
    kernels = warmup_kernels(model, blurry, config.warmup_kernel)
    counts = tuple(np.int32(config[k]) for k in COUNT_FIELDS)
    state = stylegan2_search.init_states(KEYS, blurry, kernels, prior, settings=settings)
    radii = jax.vmap(sphere_radii)(state.x_params)  # per image: the arrays have a leading image axis
    traces = engine.trace_count(stylegan2_search.TRACE_NAME)
    lowest = np.full(2, np.inf)
    for t in range(STEPS + 1):
        before = np.asarray(state.best_sharp)
        state, loss = stylegan2_search.run_chunk(
            state, blurry, kernels, np.int32(t), counts, model, prior, settings=settings, mesh=None
        )
        loss = np.asarray(loss)[0]
        if t == STEPS:  # past the end: NaN, nothing changes
            assert np.isnan(loss).all()
            np.testing.assert_array_equal(state.best_sharp, before)
            break
        np.testing.assert_allclose(loss, result.history["loss"][:, t], rtol=1e-6)
        improved = (t >= 3) & (loss < lowest)
        lowest = np.where(improved, loss, lowest)
        np.testing.assert_array_equal(state.best_loss, lowest)
        for i in range(2):
            assert (state.best_step[i] == t) == improved[i]
            if not improved[i]:
                np.testing.assert_array_equal(state.best_sharp[i], before[i])
    assert engine.trace_count(stylegan2_search.TRACE_NAME) == traces
    np.testing.assert_allclose(np.clip(state.best_sharp, 0, 1), result.sharp, atol=1e-6)
    # On the sphere: |w_i| and |noise map| as at the start (the x-optimiser keeps its radii).
    final = jax.vmap(sphere_radii)(state.x_params)
    for got, expected in zip(jax.tree.leaves(final), jax.tree.leaves(radii), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    for got, kept in zip(jax.tree.leaves(radii), jax.tree.leaves(state.x_opt.radii), strict=True):
        np.testing.assert_allclose(got, kept, rtol=1e-6)
    assert state.x_params["latent"].shape == (2, 1, prior.generator.n_latent, prior.generator.style_dim)
    assert len(state.x_params["noise"]) == 5 and len(state.fixed_noise) == 2


def check_other_counts_reuse_the_chunk(model, prior):
    traces = engine.trace_count(stylegan2_search.TRACE_NAME)
    for counts in ((2, 1, 3, 2), (0, 3, 2, 1)):
        config = tiny_config(**dict(zip(COUNT_FIELDS, counts, strict=True)))
        result = stylegan2_search.deblur_stylegan2(model, prior, KEYS, blurry_images(2), config=config)
        total = counts[0] + counts[1] * (counts[2] + counts[3])
        assert result.history["loss"].shape == (2, total) and np.isfinite(result.history["loss"]).all()
    assert engine.trace_count(stylegan2_search.TRACE_NAME) == traces


def check_an_image_depends_only_on_its_key(result, model, prior):
    """Image 0 with its key, second in a batch beside another image: the same result."""
    images = jnp.concatenate([blurry_images(1, seed=5), blurry_images(2)[:1]])
    keys = jnp.stack([OTHER_KEY, KEYS[0]])
    other = stylegan2_search.deblur_stylegan2(model, prior, keys, images, config=tiny_config())
    np.testing.assert_allclose(other.sharp[1], result.sharp[0], atol=1e-5)
    np.testing.assert_allclose(other.kernel[1], result.kernel[0], atol=1e-5)
    np.testing.assert_allclose(other.history["loss"][1], result.history["loss"][0], rtol=1e-5)
    # A NaN pixel stops image 1 at its first step (its warm-up kernel G(y, y) is NaN); image 0 goes on.
    nan_pixel = stylegan2_search.deblur_stylegan2(
        model, prior, KEYS, blurry_images(2).at[1, 5, 5, 0].set(jnp.nan), config=tiny_config()
    )
    np.testing.assert_array_equal(nan_pixel.history["failed_at"], [-1, 0])
    assert np.isnan(nan_pixel.history["loss"][1]).all() and nan_pixel.history["best_step"][1] == -1
    np.testing.assert_allclose(nan_pixel.sharp[0], result.sharp[0], atol=1e-6)


def check_two_device_searches(got, result):
    """Each device searches one image: image 1 alone (padded to two) is the same program as in the
    batch; against one device's batch of two (the images taking turns: another program) the results
    agree up to round-off, which Adam's first, sign-like steps amplify."""
    assert got["devices"] == 2
    np.testing.assert_allclose(got["alone"][0], got["sharp"][1], atol=1e-6)
    np.testing.assert_allclose(got["alone_loss"][0], got["loss"][1], rtol=1e-6)
    np.testing.assert_allclose(got["sharp"], result.sharp, atol=2e-3)
    np.testing.assert_allclose(got["kernel"], result.kernel, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(got["loss"], result.history["loss"], rtol=1e-3)


def test_search(tmp_path, model, prior, generator_file):
    two_devices = start_on_two_cpu_devices(SUBPROCESS, str(tmp_path / "two_devices.npz"), str(generator_file))
    try:
        result = stylegan2_search.deblur_stylegan2(model, prior, KEYS, blurry_images(2), config=tiny_config())
        check_result(result, model)
        check_step_by_step(result, model, prior)
        check_other_counts_reuse_the_chunk(model, prior)
        check_an_image_depends_only_on_its_key(result, model, prior)
        _, stderr = two_devices.communicate(timeout=900)
    finally:
        two_devices.kill()
    assert two_devices.returncode == 0, stderr[-3000:]
    check_two_device_searches(np.load(tmp_path / "two_devices.npz"), result)


def test_on_sphere_is_the_references_spherical_optimizer():
    """Golden case B of dsd_losses_io.npz: [latent, noise], loss sum(p * W), SphericalOptimizer(Adam, lr 0.2)."""
    io = np.load(GOLDEN / "dsd_losses_io.npz")
    nhwc = lambda a: np.asarray(a).transpose(0, 2, 3, 1)
    params = {"latent": jnp.asarray(io["sph_b_latent0"]), "noise": jnp.asarray(nhwc(io["sph_b_noise0"]))}
    grads = {"latent": jnp.asarray(io["sph_b_latent_weight"]), "noise": jnp.asarray(nhwc(io["sph_b_noise_weight"]))}
    tx = on_sphere(torch_adam(0.2))
    state = tx.init(params)
    np.testing.assert_allclose(state.radii["latent"], io["sph_b_latent_radii"], rtol=1e-6)
    for step in range(1, 4):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if step in (1, 3):
            np.testing.assert_allclose(params["latent"], io[f"sph_b_latent_step{step}"], atol=1e-5)
            np.testing.assert_allclose(params["noise"], nhwc(io[f"sph_b_noise_step{step}"]), atol=1e-5)
    for got, radius in zip(jax.tree.leaves(sphere_radii(params)), jax.tree.leaves(state.radii), strict=True):
        np.testing.assert_allclose(got, radius, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(grads, state)


def test_step_kinds_and_kernel_schedule():
    counts = (2, 2, 3, 1)  # warm-up 2; epochs of 3 x-steps and 1 k-step
    kinds = [int(stylegan2_search.step_kind(t, counts)) for t in range(11)]
    w, x, k, d = stylegan2_search.WARMUP, stylegan2_search.X_STEP, stylegan2_search.K_STEP, stylegan2_search.DONE
    assert kinds == [w, w, x, x, x, k, x, x, x, k, d]
    # torch: StepLR(step_size=25 * 200 // 5, gamma=0.7) stepped after each k-step, not in the 150 warm-up steps.
    schedule = stylegan2_search.kernel_lr_schedule(5e-4, 0.7, 5, 150, 25 * 200)
    counts = np.array([0, 149, 150, 1149, 1150, 5149])
    np.testing.assert_allclose([float(schedule(c)) for c in counts], 5e-4 * 0.7 ** np.array([0, 0, 0, 0, 1, 4]))


def test_gaussian_fit_and_its_cache(tmp_path, monkeypatch):
    loaded = load_stylegan2(GOLDEN / "stylegan2_micro.pt")
    gen, params = loaded.generator, loaded.variables["params"]
    # Three batches of 10, the last one masked to 5, merged: the moments of the 25 samples.
    monkeypatch.setattr(stylegan2_prior, "FIT_BATCH", 10)
    key = jax.random.key(3)
    fit = stylegan2_prior.gaussian_fit(gen, params, key, 25)
    z = jnp.concatenate([jax.random.normal(jax.random.fold_in(key, i), (10, gen.style_dim)) for i in range(3)])[:25]
    w = np.asarray(jax.nn.leaky_relu(gen.apply({"params": params}, z, method=Generator.get_latent), 5.0), np.float64)
    np.testing.assert_allclose(fit["mean"], w.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit["std"], w.std(0, ddof=1), rtol=1e-5)
    monkeypatch.undo()

    checkpoint = copy_generator(tmp_path)
    cache = stylegan2_prior.gaussian_fit_cache_path(checkpoint)
    assert cache == tmp_path / "stylegan2_micro.pt.gaussian_fit.npz"
    first = stylegan2_prior.cached_gaussian_fit(checkpoint, gen, params, 300)
    with np.load(cache) as stored:
        assert int(stored["num_samples"]) == 300 and len(str(stored["checkpoint_sha256"])) == 64
    calls = []
    real_fit = stylegan2_prior.gaussian_fit
    monkeypatch.setattr(stylegan2_prior, "gaussian_fit", lambda *a: calls.append(a[3]) or real_fit(*a))
    again = stylegan2_prior.cached_gaussian_fit(checkpoint, gen, params, 300)
    assert calls == []  # read back
    for name in ("mean", "std"):
        np.testing.assert_array_equal(again[name], first[name])
    stylegan2_prior.cached_gaussian_fit(checkpoint, gen, params, 400)  # another sample count: refitted
    with checkpoint.open("ab") as file:
        file.write(b"\0")  # other bytes: refitted
    stylegan2_prior.cached_gaussian_fit(checkpoint, gen, params, 400)
    assert calls == [400, 400]
    prior = stylegan2_prior.load_prior(copy_generator(tmp_path / "other"), num_samples=300)
    np.testing.assert_array_equal(prior.mean, first["mean"])
    assert prior.size == SIZE and set(prior.variables) == {"params"}


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def tiny_cli_args(generator, checkpoint, output):
    return [
        "--prior=stylegan2",
        f"--stylegan2={generator}",
        f"--checkpoint={checkpoint}",
        f"--output={output}",
        f"--config={ROOT / 'configs' / 'deblur_stylegan2.py'}:local",
        *(f"--config.{k}={v}" for k, v in TINY.items()),
        "--batch-size=2",
        "--noprogress",
    ]


def test_cli(tmp_path, generator_file, checkpoint, model, prior, capsys):
    """deblur.py --prior stylegan2: outputs, resume and evaluation as for the generic prior; errors."""
    traces = engine.trace_count(stylegan2_search.TRACE_NAME)
    images = np.asarray(blurry_images(4, seed=1) * 255).astype(np.uint8)
    for i, name in enumerate(("a", "b", "c", "d")):
        save_png(tmp_path / "blur" / f"{name}.png", images[i])
        save_png(tmp_path / "sharp" / f"{name}.png", 255 - images[i])
    out = tmp_path / "out"
    args = tiny_cli_args(generator_file, checkpoint, out)
    two = ["--input", str(tmp_path / "blur" / "a.png"), "--input", str(tmp_path / "blur" / "b.png")]
    assert deblur.main([*args, *two, "--compare"]) == 0
    for name in ("a", "b"):
        assert read_image(out / f"{name}.png").shape == read_image(out / f"{name}_reblurred.png").shape == (32, 32, 3)
        assert (out / f"{name}_compare.png").is_file()
        text = png_text(out / f"{name}.png")
        assert text["prior"] == "stylegan2" and text["stylegan2"] == str(generator_file)
        assert text["num_epochs"] == "2" and text["status"] == "ok" and "num_iters" not in text
        assert text["objective"] == "100*L2+0.1*GEOCROSS+0.0001*|k|"
    # Resume (a and b are done: c and d make one batch of two) and evaluate all four against ground truth.
    before = (out / "a.png").stat().st_mtime_ns
    assert deblur.main([*args, "--input", str(tmp_path / "blur"), "--sharp", str(tmp_path / "sharp")]) == 0
    printed = capsys.readouterr().out
    assert "2 of 4 images already done" in printed and "| mean (4) |" in printed
    assert (out / "a.png").stat().st_mtime_ns == before
    log = [json.loads(line) for line in (out / "deblur_log.jsonl").read_text().splitlines()]
    assert [r["name"] for r in log] == ["a", "b", "c", "d"] and log[2]["prior"] == "stylegan2"
    assert len(json.loads((out / "metrics.json").read_text())["images"]) == 4

    # Errors: a size other than the generator's, a file that is not a StyleGAN2 checkpoint, flags.
    save_png(tmp_path / "odd" / "wide.png", np.zeros((32, 48, 3), np.uint8))
    odd = ["--input", str(tmp_path / "odd")]
    assert deblur.main([*args, *odd]) == 1
    assert "wide.png: 48x32" in capsys.readouterr().err
    kernel_wizard = [a if not a.startswith("--stylegan2=") else f"--stylegan2={KERNEL_WIZARD_PTH}" for a in args]
    assert deblur.main([*kernel_wizard, *two]) == 1
    assert "not a StyleGAN2 checkpoint" in capsys.readouterr().err
    no_path = [a for a in args if not a.startswith("--stylegan2=")]
    assert deblur.main([*no_path, *two]) == 1
    assert "go together" in capsys.readouterr().err
    assert deblur.main([*args, *two, "--prior=pulse"]) == 2
    with pytest.raises(ValueError, match=r"blurry images are 64x64 but the StyleGAN2 generator makes 32x32"):
        stylegan2_search.deblur_stylegan2(model, prior, KEYS[0], jnp.zeros((1, 64, 64, 3)), config=tiny_config())
    assert engine.trace_count(stylegan2_search.TRACE_NAME) == max(
        traces, 1
    )  # one chunk (test_search's, if it ran) for all
