"""Deblurring losses against the reference (golden/losses_io.npz); VGG19 perceptual loss on random weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GOLDEN

from kernelspace_jax.deblurring.losses import (
    hyper_laplacian_penalty,
    kernel_norm,
    perceptual_loss,
    perceptual_loss_to_features,
    ssim,
    vgg_features,
)
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.vgg import (
    PERCEPTUAL_OUTPUTS,
    VGG19Features,
    load_vgg19_params,
    vgg19_convs,
    vgg19_params,
)
from kernelspace_jax.training.losses import charbonnier_sum

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="module")
def golden():
    z = np.load(GOLDEN / "losses_io.npz")
    nhwc = lambda name: jnp.asarray(z[name].astype(np.float32).transpose(0, 2, 3, 1) / 256)
    scalars = {k: float(z[k]) for k in ("ssim", "charbonnier_sum", "hyper_laplacian_a")}
    return nhwc("a_u8"), nhwc("b_u8"), scalars


def test_ssim_matches_reference(golden):
    a, b, ref = golden
    assert abs(float(ssim(a, b)) - ref["ssim"]) <= 1e-5
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(b, a)) == pytest.approx(float(ssim(a, b)), abs=1e-7)


def test_ssim_filter_is_the_references_2d_window_and_its_own_gradient():
    """ssim filters with two 1-D passes and a hand-written gradient (the filter itself: the window is
    symmetric); both must equal the reference's 2-D window as a grouped convolution, and its gradient."""
    from kernelspace_jax.deblurring import losses as deblur_losses

    a, b = jax.random.uniform(jax.random.key(0), (2, 2, 23, 19, 3))
    taps = deblur_losses.gaussian_taps(deblur_losses.SSIM_WINDOW, deblur_losses.SSIM_SIGMA)
    window = np.outer(taps, taps)  # the reference's create_window: normalised 1-D, then the product
    kernel = jnp.broadcast_to(jnp.asarray(window)[:, :, None, None], (*window.shape, 1, 3))
    pad = window.shape[0] // 2
    plain = lambda x: jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3
    )
    np.testing.assert_allclose(jax.jit(deblur_losses._gaussian_filter)(a), plain(a), rtol=1e-5, atol=1e-6)
    dy = jax.random.normal(jax.random.key(1), a.shape)
    want = jax.vjp(plain, a)[1](dy)[0]
    got = jax.jit(lambda a: jax.vjp(deblur_losses._gaussian_filter, a)[1](dy)[0])(a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(jax.grad(ssim)(a, b)).max()) > 0


def test_charbonnier_matches_reference(golden):
    """The formula is the reference's to float64 precision; the float32 sum itself is XLA:CPU's: with
    YNNPACK fusion off (kernelspace_jax.xla_options) it reduces sequentially, ~3e-5 relative off here."""
    a, b, ref = golden
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    exact = float(np.sum(np.sqrt(diff * diff + 1e-6)))
    assert exact == pytest.approx(ref["charbonnier_sum"], rel=1e-6)
    assert float(charbonnier_sum(a, b)) == pytest.approx(exact, rel=1e-4)
    assert float(charbonnier_sum(a, b)) != pytest.approx(float(charbonnier_sum(a, b, eps=1e-2)), rel=1e-3)


def test_hyper_laplacian_matches_reference(golden):
    a, _, ref = golden
    assert abs(float(hyper_laplacian_penalty(a)) - ref["hyper_laplacian_a"]) <= 2e-5


def test_kernel_norm():
    k = np.random.default_rng(0).standard_normal((1, 2, 2, 64)).astype(np.float32)
    expected = np.sqrt(np.sum(k.astype(np.float64) ** 2))
    assert float(kernel_norm(jnp.asarray(k))) == pytest.approx(expected, rel=1e-6)


def _random_vgg19(rng, depth):
    """A torchvision-style vgg19 state_dict with He-normal weights for the first `depth` convs."""
    state = {"classifier.0.bias": np.zeros(4096, np.float32)}  # ignored by the loader
    for layer in vgg19_convs()[:depth]:
        fan_in = 9 * layer.in_channels
        state[f"features.{layer.index}.weight"] = (
            rng.standard_normal((layer.out_channels, layer.in_channels, 3, 3)) * np.sqrt(2 / fan_in)
        ).astype(np.float32)
        bias = 0.1 * rng.standard_normal(layer.out_channels)
        state[f"features.{layer.index}.bias"] = bias.astype(np.float32)
    return state


def _np_conv_relu(x, weight, bias):
    """3x3 conv, zero padding 1, then ReLU, in float64: x (B, H, W, I), weight OIHW."""
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(
        np.einsum("bhwi,oi->bhwo", padded[:, dy : dy + h, dx : dx + w], weight[:, :, dy, dx])
        for dy in range(3)
        for dx in range(3)
    )
    return np.maximum(out + bias, 0)


def _np_maxpool(x):
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_vgg19_features_and_perceptual_loss(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "vgg19.npz", **_random_vgg19(rng, depth=13))  # conv5_1 feeds relu5_1
    params = load_vgg19_params(tmp_path / "vgg19.npz")
    x, y = (jnp.asarray(rng.uniform(size=(2, 32, 48, 3)), jnp.float32) for _ in range(2))

    features = jax.jit(VGG19Features().apply)({"params": params}, x)
    assert {name: f.shape for name, f in features.items()} == {
        "relu1_1": (2, 32, 48, 64),
        "relu2_1": (2, 16, 24, 128),
        "relu3_1": (2, 8, 12, 256),
        "relu4_1": (2, 4, 6, 512),
        "relu5_1": (2, 2, 3, 512),
    }
    assert all(float(f.max()) > 0 for f in features.values())  # the random net did not die
    loss = jax.jit(perceptual_loss)
    assert float(loss(params, x, x)) == 0.0
    assert float(loss(params, x, y)) > 0.0
    # Against y's features computed beforehand (what the search does): the same loss and gradient.
    y_features = vgg_features(params, y)
    to_features = jax.jit(perceptual_loss_to_features)
    np.testing.assert_allclose(to_features(params, x, y_features), loss(params, x, y), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(to_features, 1)(params, x, y_features), jax.grad(loss, 1)(params, x, y), rtol=1e-5, atol=1e-9
    )


def test_perceptual_loss_against_numpy(tmp_path):
    # relu1_1 and relu2_1: conv1_1, conv1_2, max pool, conv2_1 = features.0, .2, .5 of torchvision.
    rng = np.random.default_rng(1)
    state = _random_vgg19(rng, depth=3)
    np.savez(tmp_path / "vgg19_head.npz", **state)
    outputs, weights = ("relu1_1", "relu2_1"), (0.2, 0.4)
    params = load_vgg19_params(tmp_path / "vgg19_head.npz", outputs)
    x, y = (rng.uniform(size=(1, 10, 14, 3)).astype(np.float32) for _ in range(2))

    def features(image):
        r11 = _np_conv_relu(image.astype(np.float64), state["features.0.weight"], state["features.0.bias"])
        r12 = _np_conv_relu(r11, state["features.2.weight"], state["features.2.bias"])
        return r11, _np_conv_relu(_np_maxpool(r12), state["features.5.weight"], state["features.5.bias"])

    expected = sum(w * np.mean(np.abs(fx - fy)) for w, fx, fy in zip(weights, features(x), features(y), strict=True))
    got = perceptual_loss(params, jnp.asarray(x), jnp.asarray(y), outputs, weights)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_vgg19_loader_errors():
    state = _random_vgg19(np.random.default_rng(2), depth=1)
    with pytest.raises(CheckpointMismatchError, match=r"missing key 'features\.2\.weight'"):
        vgg19_params(state, PERCEPTUAL_OUTPUTS)
    state["features.0.weight"] = state["features.0.weight"][:, :1]
    with pytest.raises(CheckpointMismatchError, match=r"'features\.0\.weight' has shape \(64, 1, 3, 3\)"):
        vgg19_params(state, ("relu1_1",))
    with pytest.raises(ValueError, match="subset"):
        VGG19Features(("relu6_1",)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
