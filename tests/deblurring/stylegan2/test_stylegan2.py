"""StyleGAN2 prior of domain-specific deblurring: generator parity, converter, GEOCROSS, spherical step.

Goldens: tests/data/golden_stylegan2 (see its README; NCHW, made with the reference on CPU in float32).
Tolerances follow that README.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA

from kernelspace_jax.deblurring.stylegan2.checkpoints import load_stylegan2
from kernelspace_jax.deblurring.stylegan2.ops import (
    geocross,
    lr_schedule,
    project_to_sphere,
    sphere_radii,
    spherical_step,
    torch_adam,
)
from kernelspace_jax.io.pth import CheckpointFormatError, read_pth
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.stylegan2 import Generator, init_generator, make_noise, noise_shapes, upfirdn2d

jax.config.update("jax_default_matmul_precision", "highest")

GOLDEN = DATA / "golden_stylegan2"
KERNEL_WIZARD_PTH = DATA / "golden" / "kw_micro_wovae_init.pth"
IMAGE_TOL = 1e-4
GRAD_REL_TOL = 2e-5
SPHERE_TOL = 1e-5


def nhwc(array):
    return np.asarray(array).transpose(0, 2, 3, 1)


def max_err(actual, expected):
    return float(np.abs(np.asarray(actual, np.float64) - expected).max())


@pytest.fixture(scope="module")
def io():
    return dict(np.load(GOLDEN / "stylegan2_micro_io.npz"))


@pytest.fixture(scope="module")
def losses_io():
    return dict(np.load(GOLDEN / "dsd_losses_io.npz"))


@pytest.fixture(scope="module")
def micro():
    return load_stylegan2(GOLDEN / "stylegan2_micro.pt")


@pytest.fixture(scope="module")
def noise(io):
    return [jnp.asarray(nhwc(io[f"noise_{i}"])) for i in range(7)]


@pytest.fixture(scope="module")
def synth(micro):
    """Jitted synthesis from W+ latents with explicit noise: (B, 8, 32), noise list -> (B, 32, 32, 3)."""
    gen = micro.generator
    run = jax.jit(lambda variables, latent, noise: gen.apply(variables, [latent], input_is_latent=True, noise=noise))
    return lambda latent, noise: run(micro.variables, latent, noise)


@pytest.fixture(scope="module")
def eager_buffer_image(micro, io):
    """Eager (un-jitted) synthesis of `latent` with the stored noise buffers; warms the eager op cache."""
    return micro.generator.apply(micro.variables, [io["latent"]], input_is_latent=True, randomize_noise=False)


# ---------------------------------------------------------------------------------------------
# Generator parity
# ---------------------------------------------------------------------------------------------


def test_micro_config_is_inferred(micro):
    gen = micro.generator
    assert (gen.size, gen.style_dim, gen.n_mlp, gen.widths) == (32, 32, 2, (16, 16, 12, 8))
    assert (gen.n_latent, gen.num_layers) == (8, 7)
    assert micro.ignored == () and micro.missing_buffers == () and micro.latent_avg is None
    assert [b.shape for b in jax.tree.leaves(micro.variables["buffers"])] == noise_shapes(32)


def test_mapping_network(micro, io):
    w = jax.jit(lambda z: micro.generator.apply(micro.variables, z, method=Generator.get_latent))(io["z"])
    assert max_err(w, io["w"]) <= IMAGE_TOL


def test_synthesis_with_given_noise_batch1_and_batch2(synth, io, noise):
    # one call: row 0 is the batch-1 case, rows 1-2 the batch-2 case (per-sample modulation, shared noise)
    images = synth(np.concatenate([io["latent"], io["latent_b2"]]), noise)
    assert max_err(images[:1], nhwc(io["image"])) <= IMAGE_TOL
    assert max_err(images[1:], nhwc(io["image_b2"])) <= IMAGE_TOL


def test_synthesis_with_stored_noise_buffers(eager_buffer_image, io):
    assert max_err(eager_buffer_image, nhwc(io["image_buffer_noise"])) <= IMAGE_TOL


def test_jit_equals_eager(synth, micro, io, eager_buffer_image):
    buffers = micro.variables["buffers"]["noises"]
    # the batch-3 shapes of the test above, so the compiled function is reused
    jitted = synth(np.concatenate([io["latent"], io["latent_b2"]]), [buffers[f"noise_{i}"] for i in range(7)])
    np.testing.assert_allclose(jitted[:1], eager_buffer_image, rtol=0, atol=1e-5)


def test_generate_from_z(micro, io, noise):
    gen = micro.generator
    run = jax.jit(lambda variables, z, noise: gen.apply(variables, [z], noise=noise, return_latents=True))
    image, latent = run(micro.variables, io["z"], noise)
    assert max_err(image, nhwc(io["image_from_z"])) <= IMAGE_TOL
    assert max_err(latent, io["latent_from_z"]) <= IMAGE_TOL


def test_gradients_wrt_latent_and_noise(micro, io, noise):
    weight = nhwc(io["grad_weight"])

    def loss(latent, noise, variables):
        return jnp.sum(micro.generator.apply(variables, [latent], input_is_latent=True, noise=noise) * weight)

    grad_latent, grad_noise = jax.jit(jax.grad(loss, argnums=(0, 1)))(io["latent"], noise, micro.variables)
    assert max_err(grad_latent, io["grad_latent"]) <= GRAD_REL_TOL * np.abs(io["grad_latent"]).max()
    for i, g in enumerate(grad_noise):
        ref = nhwc(io[f"grad_noise_{i}"])
        assert max_err(g, ref) <= GRAD_REL_TOL * np.abs(ref).max(), f"grad_noise_{i}"


def test_random_noise_comes_from_the_noise_rng(micro, io, eager_buffer_image):
    def sample(seed):
        return micro.generator.apply(
            micro.variables, [io["latent"]], input_is_latent=True, rngs={"noise": jax.random.key(seed)}
        )

    a = sample(1)
    np.testing.assert_array_equal(a, sample(1))
    assert float(jnp.abs(a - sample(2)).max()) > 1e-2


def test_style_mixing_splits_at_inject_index(micro, io, eager_buffer_image):
    w1, w2 = io["latent_b2"][:1, 0], io["latent_b2"][:1, 1]
    _, latent = micro.generator.apply(
        micro.variables,
        [w1, w2],
        input_is_latent=True,
        inject_index=3,
        noise=make_noise(jax.random.key(0), 32),
        return_latents=True,
    )
    np.testing.assert_array_equal(latent[:, :3], np.repeat(w1[:, None], 3, 1))
    np.testing.assert_array_equal(latent[:, 3:], np.repeat(w2[:, None], 5, 1))


def test_full_size_shapes_with_dsd_noise_list():
    """DSD's call: 14 W+ vectors and 14 noise tensors, the 14th (512 px) unused; shapes only (eval_shape)."""
    gen = Generator()
    dsd_noise = [jax.ShapeDtypeStruct((1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), 1), jnp.float32) for i in range(14)]

    def forward(key, latent, noise):
        return gen.apply(init_generator(gen, key), [latent], input_is_latent=True, noise=noise)

    latent = jax.ShapeDtypeStruct((1, 14, 512), jnp.float32)
    assert jax.eval_shape(forward, jax.random.key(0), latent, dsd_noise).shape == (1, 256, 256, 3)


def test_upfirdn2d_matches_direct_formula():
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    kernel = np.arange(1, 13, dtype=np.float32).reshape(3, 4) / 78
    up, down, pad = 2, 2, (2, -1)
    # zero-stuff, pad (negative crops), true convolution, keep every `down`-th sample
    stuffed = np.zeros((2, 5 * up, 6 * up, 3), np.float32)
    stuffed[:, ::up, ::up] = x
    padded = np.pad(stuffed, ((0, 0), (2, 0), (2, 0), (0, 0)))[:, :-1, :-1]
    flipped = kernel[::-1, ::-1]
    rows, cols = padded.shape[1] - 3 + 1, padded.shape[2] - 4 + 1
    full = np.stack(
        [
            np.stack([np.einsum("bhwc,hw->bc", padded[:, i : i + 3, j : j + 4], flipped) for j in range(cols)], 1)
            for i in range(rows)
        ],
        1,
    )
    np.testing.assert_allclose(
        upfirdn2d(jnp.asarray(x), jnp.asarray(kernel), up, down, pad), full[:, ::down, ::down], rtol=0, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# Converter
# ---------------------------------------------------------------------------------------------


def _full_state_dict():
    """The full Generator(256, 512, 8) key set with zero tensors (no 120 MB checkpoint needed)."""
    shapes = json.loads((GOLDEN / "full_g_ema_keys.json").read_text())["state_dict_shapes"]
    blur = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 16
    return {k: blur if k.endswith("kernel") else np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}


def test_full_size_key_set_converts():
    ckpt = load_stylegan2({"g_ema": _full_state_dict(), "latent_avg": np.zeros(512, np.float32)})
    gen = ckpt.generator
    assert (gen.size, gen.style_dim, gen.n_mlp) == (256, 512, 8)
    assert (gen.channel_multiplier, gen.channels) == (2, None)
    assert (gen.n_latent, gen.num_layers) == (14, 13)
    assert gen.widths == (512, 512, 512, 512, 512, 256, 128)
    assert sum(x.size for x in jax.tree.leaves(ckpt.variables["params"])) == 30034338
    assert ckpt.latent_avg.shape == (512,)
    abstract = jax.eval_shape(lambda key: init_generator(Generator(), key), jax.random.key(0))
    assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, ckpt.variables)


def test_non_strict_quirks_missing_noise_and_extra_entries(micro):
    g_ema = {k: v for k, v in read_pth(GOLDEN / "stylegan2_micro.pt")["g_ema"].items() if not k.startswith("noises.")}
    ckpt = load_stylegan2({"g_ema": g_ema, "latent_avg": np.ones(32, np.float32), "g": {}, "d": {}})
    assert ckpt.ignored == ("g", "d")
    assert ckpt.missing_buffers == tuple(f"noises.noise_{i}" for i in range(7))
    assert "buffers" not in ckpt.variables
    np.testing.assert_array_equal(ckpt.latent_avg, np.ones(32))
    same = jax.tree.map(np.array_equal, ckpt.variables["params"], micro.variables["params"])
    assert all(jax.tree.leaves(same))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("convs.3.activate.bias"), "missing key 'convs.3.activate.bias'"),
        (
            lambda s: s.update({"convs.1.conv.weight": np.zeros((1, 16, 8, 3, 3), np.float32)}),
            r"'convs.1.conv.weight' has shape \(1, 16, 8, 3, 3\), expected \(1, 16, 16, 3, 3\)",
        ),
        (
            lambda s: s.update({"convs.1.conv.blur.kernel": np.zeros((4, 4), np.float32)}),
            "unexpected key 'convs.1.conv.blur.kernel'",
        ),
        (lambda s: s.pop("style.1.weight"), "missing key 'style.1.weight'"),
        (lambda s: s.update({"to_rgbs.1.upsample.kernel": np.ones((4, 4), np.float32)}), "blur kernel"),
    ],
)
def test_converter_names_the_first_mismatch(edit, message):
    g_ema = dict(read_pth(GOLDEN / "stylegan2_micro.pt")["g_ema"])
    edit(g_ema)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_stylegan2({"g_ema": g_ema})


def test_kernel_wizard_checkpoint_is_rejected():
    if not KERNEL_WIZARD_PTH.exists():
        pytest.skip(f"{KERNEL_WIZARD_PTH} is absent (the kernel-space test data copies it there)")
    with pytest.raises(CheckpointFormatError, match=r"not a StyleGAN2 checkpoint.*KernelWizard"):
        load_stylegan2(KERNEL_WIZARD_PTH)


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"weights": np.zeros(3)}, "not a StyleGAN2 checkpoint: no 'g_ema' entry"),
        ({"g_ema": [np.zeros(3)]}, "'g_ema' is not a state_dict"),
    ],
)
def test_other_dicts_are_rejected(checkpoint, message):
    with pytest.raises(CheckpointFormatError, match=message):
        load_stylegan2(checkpoint)


# ---------------------------------------------------------------------------------------------
# Search pieces
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2])
def test_geocross(losses_io, batch):
    value, grad = jax.value_and_grad(geocross)(jnp.asarray(losses_io[f"geocross_latent_b{batch}"]))
    np.testing.assert_allclose(float(value), losses_io[f"geocross_b{batch}"], rtol=1e-5)
    assert max_err(grad, losses_io[f"geocross_grad_b{batch}"]) <= 1e-6
    assert float(geocross(jnp.ones((2, 1, 512)))) == losses_io["geocross_tiled_returns"] == 0


def _run_spherical(params, weights, steps):
    """SphericalOptimizer(Adam, lr=0.2) on the loss sum(p * W); returns radii and params after each step."""
    radii = sphere_radii(params)
    opt = torch_adam(0.2)
    grads = jax.grad(lambda p: sum(jnp.sum(p[k] * weights[k]) for k in p))
    step = jax.jit(lambda p, state: spherical_step(opt, grads(p), state, p, radii))
    state, history = opt.init(params), []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return radii, history


def test_spherical_step_latent_only(losses_io):
    params = {"latent": jnp.asarray(losses_io["sph_a_latent0"])}
    radii, history = _run_spherical(params, {"latent": losses_io["sph_a_weight"]}, 3)
    assert max_err(radii["latent"], losses_io["sph_a_radii"]) <= SPHERE_TOL
    assert max_err(history[0]["latent"], losses_io["sph_a_latent_step1"]) <= SPHERE_TOL
    assert max_err(history[2]["latent"], losses_io["sph_a_latent_step3"]) <= SPHERE_TOL
    adam_only, _ = torch_adam(0.2).update({"latent": losses_io["sph_a_weight"]}, torch_adam(0.2).init(params))
    assert max_err(params["latent"] + adam_only["latent"], losses_io["sph_a_adam_only_step1"]) <= SPHERE_TOL


def test_spherical_step_latent_and_nhwc_noise(losses_io):
    params = {"latent": jnp.asarray(losses_io["sph_b_latent0"]), "noise": jnp.asarray(nhwc(losses_io["sph_b_noise0"]))}
    weights = {"latent": losses_io["sph_b_latent_weight"], "noise": nhwc(losses_io["sph_b_noise_weight"])}
    radii, history = _run_spherical(params, weights, 3)
    assert max_err(radii["latent"], losses_io["sph_b_latent_radii"]) <= SPHERE_TOL
    assert max_err(radii["noise"], losses_io["sph_b_noise_radii"]) <= SPHERE_TOL
    for step in (1, 3):
        assert max_err(history[step - 1]["latent"], losses_io[f"sph_b_latent_step{step}"]) <= SPHERE_TOL
        assert max_err(history[step - 1]["noise"], nhwc(losses_io[f"sph_b_noise_step{step}"])) <= SPHERE_TOL


def test_projection_restores_radius():
    params = {"latent": jax.random.normal(jax.random.key(0), (2, 14, 512))}
    radii = sphere_radii(params)
    moved = project_to_sphere({"latent": params["latent"] * 3 + 1}, radii)
    np.testing.assert_allclose(sphere_radii(moved)["latent"], radii["latent"], rtol=1e-6)


def _reference_linear1cycledrop(x, steps):
    if x < 0.9 * steps:
        return (9 * (1 - np.abs(x / (0.9 * steps) - 1 / 2) * 2) + 1) / 10
    return 1 / 10 + (x - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 1 / 10)


def test_linear1cycledrop_schedule():
    steps = 25 * 300
    schedule = lr_schedule("linear1cycledrop", 0.2, steps)
    counts = np.array([0, 1, 2, 1000, 3374, 3375, 3376, 6749, 6750, 6751, 7000, 7499])
    expected = [0.2 * _reference_linear1cycledrop(x, steps) for x in counts]
    np.testing.assert_allclose(schedule(jnp.asarray(counts)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(0)), 0.02, rtol=1e-6)  # the first x-step's lr
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        lr_schedule("cosine", 0.2, steps)


def test_scheduled_adam_first_step_uses_scheduled_lr():
    opt = torch_adam(lr_schedule("linear1cycledrop", 0.2, 7500))
    params = jnp.zeros(4)
    update, _ = opt.update(jnp.array([1.0, -2.0, 3.0, -4.0]), opt.init(params))
    np.testing.assert_allclose(update, [-0.02, 0.02, -0.02, 0.02], rtol=1e-6)
