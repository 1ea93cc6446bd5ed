"""The public API of F and G: transformations, any size, dtypes, and clear errors on bad input."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_inputs

import kernelspace_jax as ksj
from kernelspace_jax.kernel_space import config, model


@pytest.fixture(scope="module")
def energized(micro_models):
    return micro_models["golden_energized", "wvae"]


@pytest.fixture(scope="module")
def inputs():
    z = golden_inputs("256")
    return {k: jnp.asarray(v) for k, v in z.items()}


def test_parameter_counts_of_the_released_configs_equal_the_reference():
    expected = {
        False: {
            "features": 814_208,
            "extractor": 25_542_656,
            "adapter": 21_037_120,
            "reconstruction": 1_811_203,
        },
        True: {
            "features": 814_208,
            "extractor": 91_602_944,
            "adapter": 21_037_120,
            "reconstruction": 1_811_203,
        },
    }
    for use_vae, parts in expected.items():
        tree = model.abstract_params(config.released(use_vae))
        counts = {name: sum(x.size for x in jax.tree.leaves(sub)) for name, sub in tree.items()}
        assert counts == parts
    assert sum(expected[False].values()) == 49_205_187 and sum(expected[True].values()) == 115_265_475


def test_jit_equals_eager(energized, inputs):
    x, y, k = inputs["sharp"], inputs["blurry"], inputs["kernel_rand"]
    with jax.disable_jit():
        eager_mean, _ = energized.extract(x, y)
    jit_mean, _ = jax.jit(lambda m, a, b: m.extract(a, b))(energized, x, y)
    np.testing.assert_allclose(jit_mean, eager_mean, atol=1e-5 * float(jnp.abs(eager_mean).max()))
    eager_out = energized.blur(x, k)  # op by op outside jit
    jit_out = jax.jit(lambda m, a, b: m.blur(a, b))(energized, x, k)
    np.testing.assert_allclose(jit_out, eager_out, atol=1e-5)


def test_batch_and_vmap_equal_a_loop(energized, inputs):
    key = jax.random.key(0)
    sharp = jnp.concatenate([inputs["sharp"], inputs["blurry"], 1 - inputs["sharp"]])
    kernels = jax.random.normal(key, (3, *energized.kernel_shape(256, 256)))
    blur = jax.jit(lambda m, a, b: m.blur(a, b))
    loop = jnp.concatenate([blur(energized, sharp[i : i + 1], kernels[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(blur(energized, sharp, kernels), loop, atol=2e-5)
    vmapped = jax.jit(jax.vmap(lambda a, b: energized.blur(a[None], b[None])[0]))(sharp, kernels)
    np.testing.assert_allclose(vmapped, loop, atol=2e-5)
    means = jax.jit(jax.vmap(lambda a, b: energized.extract(a[None], b[None])[0][0]))(sharp, sharp[::-1])
    for i in range(3):
        alone = energized.extract(sharp[i : i + 1], sharp[::-1][i : i + 1])[0][0]
        np.testing.assert_allclose(means[i], alone, atol=1e-5 * float(jnp.abs(alone).max()))


def test_gradients_of_blur_agree_with_finite_differences(energized, inputs):
    """One central difference along a random direction in (sharp, kernel) against both gradients."""
    # In float64: with O(1) weights, float32 rounding of the objective is as large as the finite
    # difference of any step small enough for the network to be linear over it. (XLA:CPU runs float64
    # convolutions in its generic loop: one direction for both arguments halves the test's time.)
    with jax.enable_x64(True):
        f64 = energized.with_dtype(jnp.float64)
        x, k = (inputs[name].astype(jnp.float64) for name in ("sharp", "kernel_rand"))
        weights = jax.random.normal(jax.random.key(1), x.shape, jnp.float64)

        def objective(sharp, kernel):
            return jnp.sum(f64.blur(sharp, kernel) * weights)

        grad_x, grad_k = jax.jit(jax.grad(objective, argnums=(0, 1)))(x, k)
        assert grad_x.dtype == grad_k.dtype == jnp.float64
        dx, dk = (
            jax.random.normal(key, a.shape, jnp.float64)
            for key, a in zip(jax.random.split(jax.random.key(2)), (x, k), strict=True)
        )
        dx, dk = dx / jnp.linalg.norm(dx), dk / jnp.linalg.norm(dk)
        h = 1e-5
        f = jax.jit(objective)
        numeric = (f(x + h * dx, k + h * dk) - f(x - h * dx, k - h * dk)) / (2 * h)
        along_x, along_k = float(jnp.vdot(grad_x, dx)), float(jnp.vdot(grad_k, dk))
        # Neither part vacuous, nor one too small to show an error in the other's gradient.
        assert min(abs(along_x), abs(along_k)) > 0.1 and 0.1 < abs(along_x / along_k) < 10, (along_x, along_k)
        np.testing.assert_allclose(numeric, along_x + along_k, rtol=1e-3)


@pytest.mark.parametrize(
    ("height", "width", "cells"),
    [(256, 256, (2, 2)), (37, 300, (2, 3)), (257, 129, (3, 2)), (384, 640, (3, 5))],
)
def test_any_size_gives_cropped_outputs_and_matching_kernels(energized, height, width, cells):
    rng = np.random.default_rng(0)
    sharp = jnp.asarray(rng.uniform(size=(2, height, width, 3)), jnp.float32)
    mean, sigma = energized.extract(sharp, sharp[::-1])
    assert mean.shape == sigma.shape == (2, *cells, 64) == (2, *energized.kernel_shape(height, width))
    out = energized.blur(sharp, mean)
    assert out.shape == sharp.shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_padding_reflects_at_the_bottom_right(energized, inputs):
    x, k = inputs["sharp"][:, :, :200], inputs["kernel_rand"]
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, 56), (0, 0)), mode="reflect")
    apply = jax.jit(model.network(energized.config).apply, static_argnames="method")
    direct = apply({"params": energized.params}, padded, k, method=lambda n, a, b: n.blur(a, b))
    np.testing.assert_allclose(energized.blur(x, k), direct[:, :, :200], atol=1e-6)


def test_sample_reparameterises(energized, micro_models, inputs):
    mean, sigma = energized.extract(inputs["sharp"], inputs["blurry"])
    a, b = energized.sample(jax.random.key(3), mean, sigma), energized.sample(jax.random.key(3), mean, sigma)
    np.testing.assert_array_equal(a, b)
    eps = (a - mean) / sigma
    assert abs(float(jnp.mean(eps))) < 0.3 and 0.7 < float(jnp.std(eps)) < 1.3
    plain = micro_models["golden_energized", "wovae"]
    m0, s0 = plain.extract(inputs["sharp"], inputs["blurry"])
    np.testing.assert_array_equal(plain.sample(jax.random.key(3), m0, s0), m0)


def test_model_is_a_pytree_for_grad(energized, inputs):
    x, k = inputs["sharp"], inputs["kernel_rand"]
    grads = jax.jit(jax.grad(lambda m: jnp.mean(m.blur(x, k))))(energized)
    assert isinstance(grads, ksj.KernelSpaceModel) and grads.config == energized.config
    assert len(jax.tree.leaves(grads)) == len(jax.tree.leaves(energized.params))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bfloat16_compute_is_close_to_float32(energized, inputs):
    x, k = inputs["sharp"], inputs["kernel_rand"]
    full = energized.blur(x, k)
    half = energized.with_dtype(jnp.bfloat16).blur(x, k)
    assert half.dtype == jnp.float32  # params and output stay float32
    residual = float(jnp.abs(full - x).max())
    assert float(jnp.abs(half - full).max()) < 0.05 * residual
    assert jax.tree.leaves(energized.with_dtype(jnp.bfloat16).params)[0].dtype == jnp.float32


def _precision_kinds(lowered) -> set[str]:
    """The precision attributes of every convolution and dot of a lowered program."""
    text = lowered.as_text()
    ops = [line for line in text.splitlines() if "stablehlo.convolution" in line or "stablehlo.dot_general" in line]
    assert len(ops) > 20
    return {(re.findall(r"precision[ =\[<]+(\w+)", op) or ["DEFAULT"])[0] for op in ops}


def _precisions(m, x, k):
    """Of F's forward and backward pass."""
    return _precision_kinds(jax.jit(jax.grad(lambda m, x: jnp.sum(m.blur(x, k)), argnums=(0, 1))).lower(m, x))


def test_float32_asks_for_float32_products_and_bfloat16_or_a_users_setting_for_the_default(energized, inputs):
    """No silent TF32 (GPUs) or bfloat16 passes (TPUs) where float32 was asked for."""
    x, k = inputs["sharp"], inputs["kernel_rand"]
    with jax.default_matmul_precision(None):  # conftest.py sets "highest" for every test: a user's default
        assert _precisions(energized, x, k) == {"HIGHEST"}
        assert _precisions(energized.with_dtype(jnp.bfloat16), x, k) == {"DEFAULT"}
    with jax.default_matmul_precision("tensorfloat32"):  # the user's own setting applies ("HIGH")
        assert _precisions(energized, x, k) == {"HIGH"}


def test_the_training_step_keeps_xlas_default_precision_unless_the_user_sets_one(energized, inputs):
    """The package's own loops run as the reference's PyTorch does on GPUs (TF32 convolutions)."""
    import optax

    from kernelspace_jax.training.step import create_state, train_step

    tx = optax.adam(1e-4)
    state = create_state(energized.params, tx)
    batch = {"sharp": inputs["sharp"], "blurry": inputs["blurry"]}
    step = lambda s, b: train_step(
        s, b, model=energized.config, tx=tx, key=jax.random.key(0), pixel_weight=1.0, kl_weight=1e-5
    )

    with jax.default_matmul_precision(None):
        assert _precision_kinds(jax.jit(step).lower(state, batch)) == {"DEFAULT"}
    with jax.default_matmul_precision("highest"):
        assert _precision_kinds(jax.jit(step).lower(state, batch)) == {"HIGHEST"}


def test_init_follows_the_reference_initialisation(energized, micro_models, inputs):
    fresh = ksj.init(
        jax.random.key(0),
        {
            "nf": 8,
            "kernel_dim": 64,
            "front_blocks": 1,
            "back_blocks": 1,
            "extractor_blocks": 1,
            "use_vae": True,
        },
    )
    assert fresh.config == energized.config
    assert jax.tree.structure(fresh.params) == jax.tree.structure(energized.params)
    assert fresh.num_params() == 938_683
    other = ksj.init(jax.random.key(1), fresh.config)
    assert not np.allclose(jax.tree.leaves(fresh.params)[0], jax.tree.leaves(other.params)[0])
    # Same statistics as the reference's own init (golden/ holds a KernelWizard straight from torch).
    reference = micro_models["golden", "wvae"].params
    for path in [
        ("features", "conv_0", "kernel"),
        ("features", "block_0", "conv1", "kernel"),
        ("extractor", "conv_in", "kernel"),
        ("adapter", "up_1", "kernel"),
        ("reconstruction", "conv_hr", "kernel"),
    ]:
        ours, theirs = fresh.params, reference
        for name in path:
            ours, theirs = ours[name], theirs[name]
        np.testing.assert_allclose(np.std(ours), np.std(theirs), rtol=0.15, err_msg=str(path))
        np.testing.assert_allclose(np.abs(ours).max(), np.abs(theirs).max(), rtol=0.2, err_msg=str(path))
    np.testing.assert_array_equal(fresh.params["features"]["block_0"]["conv1"]["bias"], 0.0)
    # ... so F starts nearly the identity, as in the reference (mean |F(x, k) - x| = 0.012 there).
    mean, _ = fresh.extract(inputs["sharp"], inputs["blurry"])
    assert float(jnp.abs(fresh.blur(inputs["sharp"], mean) - inputs["sharp"]).mean()) < 0.03


@pytest.mark.parametrize(
    ("sharp", "match"),
    [
        (np.zeros((256, 256, 3), np.float32), "NHWC"),
        (np.zeros((1, 256, 256, 4), np.float32), "3 channels"),
        (np.zeros((1, 256, 256, 3), np.uint8), "floating point"),
        (np.zeros((1, 16, 256, 3), np.float32), "at least 32"),
        ([[0.0]], "must be an array"),
    ],
)
def test_bad_images_are_rejected(energized, sharp, match):
    with pytest.raises((ValueError, TypeError), match=match):
        energized.blur(sharp, np.zeros((1, 2, 2, 64), np.float32))
    with pytest.raises((ValueError, TypeError), match=match):
        energized.extract(sharp, sharp)


def test_kernel_of_the_wrong_shape_names_the_expected_one(energized, inputs):
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 64\)"):
        energized.blur(inputs["sharp"], jnp.zeros((1, 2, 2, 512)))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 64\)"):
        energized.blur(jnp.zeros((1, 256, 384, 3)), jnp.zeros((1, 2, 2, 64)))


def test_sharp_and_blurry_must_match(energized, inputs):
    with pytest.raises(ValueError, match="same shape"):
        energized.extract(inputs["sharp"], inputs["blurry"][:, :, :128])


def test_config_validation():
    with pytest.raises(ValueError, match="8 \\* nf"):
        ksj.KernelSpaceConfig(nf=64, kernel_dim=256)
    with pytest.raises(ValueError, match="unknown"):
        ksj.KernelSpaceConfig.from_dict({"nf": 8, "kernel_dim": 64, "bogus": 1})
    with pytest.raises(TypeError, match="use_vae"):
        ksj.KernelSpaceConfig(use_vae="yes")


@pytest.mark.parametrize("variant", ["released_wovae", "released_wvae", "micro_wovae", "micro_wvae"])
def test_config_files_describe_valid_architectures(variant):
    from kernelspace_jax.configs import kernel_space

    cfg = ksj.KernelSpaceConfig.from_dict(kernel_space.get_config(variant))
    assert cfg.use_vae == variant.endswith("_wvae") and cfg.nf == (64 if variant.startswith("released") else 8)
    with pytest.raises(ValueError, match="unknown variant"):
        kernel_space.get_config("huge_wvae")


def test_a_generator_without_resnet_blocks_runs_at_128():
    cfg = ksj.KernelSpaceConfig(nf=8, kernel_dim=64, front_blocks=1, back_blocks=1, extractor_blocks=0)
    small = ksj.init(jax.random.key(0), cfg)
    assert ksj.padded_size(cfg, 100, 130) == (128, 256)
    assert ksj.padded_size(config.micro(), 100, 130) == (256, 256)
    x = jnp.full((1, 128, 128, 3), 0.5)
    mean, _ = small.extract(x, x)
    assert mean.shape == (1, 1, 1, 64) and small.blur(x, mean).shape == x.shape


def test_kaiming_init_starts_near_the_identity_but_sees_its_kernel(inputs):
    config = dataclasses.replace(ksj.kernel_space.config.micro(), extractor_blocks=0, hr_width=8)
    sharp, blurry = inputs["sharp"][:, :128, :128], inputs["blurry"][:, :128, :128]
    sensitivity = {}
    for scheme in model.INIT_SCHEMES:
        fresh = ksj.KernelSpaceModel(model.init_params(jax.random.key(0), config, scheme=scheme), config)
        mean, _ = fresh.extract(sharp, blurry)
        reblurred = fresh.blur(sharp, mean)
        assert float(jnp.abs(reblurred - sharp).mean()) < 0.15, scheme  # random images: mean |x| ~ 0.5
        sensitivity[scheme] = float(jnp.abs(reblurred - fresh.blur(sharp, jnp.zeros_like(mean))).mean())
    # The reference's init leaves F all but blind to k (~1e-9); kaiming makes it respond (~1e-4 here).
    assert sensitivity["reference"] < 1e-6 < 1e-5 < sensitivity["kaiming"], sensitivity
    with pytest.raises(ValueError, match="init scheme must be one of"):
        model.init_params(jax.random.key(0), config, scheme="xavier")


def test_swapped_kernel_metric_tells_whether_f_uses_its_kernel(energized, inputs):
    from kernelspace_jax.training.metrics import reconstruction_metrics

    config = dataclasses.replace(ksj.kernel_space.config.micro(), extractor_blocks=0, hr_width=8)
    sharp = jax.image.resize(jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)), (2, 256, 256, 3), "linear")
    pair = sharp, jnp.stack([sharp[0], 0.3 + 0.4 * sharp[1]])  # two different "blurs"
    blind = ksj.KernelSpaceModel(model.init_params(jax.random.key(0), config, scheme="reference"), config)
    out = reconstruction_metrics(blind, *pair)  # F ignores k (~1e-9): the same PSNR either way
    np.testing.assert_allclose(out["swapped_psnr"], out["psnr"], atol=2e-4)
    out = reconstruction_metrics(energized, *pair)  # O(1) weights: F depends on k
    assert np.abs(np.asarray(out["swapped_psnr"] - out["psnr"])).min() > 2e-3, out
    single = reconstruction_metrics(energized, inputs["sharp"], inputs["blurry"])
    np.testing.assert_array_equal(single["swapped_psnr"], single["psnr"])


def test_sharp_skip_only_adds_the_sharp_image_to_fs_full_resolution_tail(inputs):
    plain = dataclasses.replace(ksj.kernel_space.config.micro(), extractor_blocks=0, hr_width=8)
    skip = dataclasses.replace(plain, sharp_skip=True)
    params = model.init_params(jax.random.key(0), skip, scheme="kaiming")
    conv_hr = params["reconstruction"]["conv_hr"]["kernel"]
    assert conv_hr.shape == (3, 3, 8 + 3, 8)  # (kh, kw, hr_width + RGB, hr_width)
    sharp, blurry = inputs["sharp"][:, :128, :128], inputs["blurry"][:, :128, :128]
    kernel, _ = ksj.KernelSpaceModel(params, skip).extract(sharp, blurry)

    # With the sharp image's weights zeroed, F is the reference's F with the remaining parameters.
    blind = jax.tree.map(lambda a: a, params)
    blind["reconstruction"]["conv_hr"]["kernel"] = conv_hr.at[:, :, 8:].set(0.0)
    reference = jax.tree.map(lambda a: a, blind)
    reference["reconstruction"]["conv_hr"]["kernel"] = conv_hr[:, :, :8]
    np.testing.assert_allclose(
        ksj.KernelSpaceModel(blind, skip).blur(sharp, kernel),
        ksj.KernelSpaceModel(reference, plain).blur(sharp, kernel),
        atol=1e-6,
    )
    # With them, every pixel's residual sees its own sharp pixel directly.
    moved = ksj.KernelSpaceModel(params, skip).blur(sharp, kernel)
    assert float(jnp.abs(moved - ksj.KernelSpaceModel(blind, skip).blur(sharp, kernel)).max()) > 1e-3
