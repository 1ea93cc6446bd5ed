"""ImageDIP / KernelDIP against the reference (golden/dips_micro_io.npz), and the state_dict conversion."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import GOLDEN

from kernelspace_jax.deblurring.dip_checkpoints import image_dip_params, kernel_dip_params
from kernelspace_jax.io.pth import read_pth
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.dips import (
    IMAGE_DIP_MICRO,
    KERNEL_DIP_MICRO,
    ImageDIP,
    ImageDIPConfig,
    KernelDIP,
    KernelDIPConfig,
    batch_norm,
    init_params,
    upsample_bilinear2x,
)

jax.config.update("jax_default_matmul_precision", "highest")


def _nhwc(array):
    return np.asarray(array).transpose(0, 2, 3, 1)


def _assert_close(actual, reference, tol):
    """|port - ref| <= tol * max(1, max|ref|), the golden README's check."""
    np.testing.assert_allclose(
        np.asarray(actual), reference, rtol=0, atol=tol * max(1.0, float(np.abs(reference).max()))
    )


@pytest.fixture(scope="module")
def io():
    return np.load(GOLDEN / "dips_micro_io.npz")


@pytest.fixture(scope="module")
def image_state():
    return read_pth(GOLDEN / "image_dip_micro_init.pth")


@pytest.fixture(scope="module")
def kernel_state():
    return read_pth(GOLDEN / "kernel_dip_micro_init.pth")


@pytest.fixture(scope="module")
def image_dip_apply():
    return jax.jit(ImageDIP(IMAGE_DIP_MICRO).apply)


def _bnrand_state(state):
    """The state_dict with the BatchNorm weights/biases of image_dip_micro_bnrand_params.npz."""
    with np.load(GOLDEN / "image_dip_micro_bnrand_params.npz") as z:
        replaced = {k.removeprefix("bnrand."): z[k] for k in z.files if k.startswith("bnrand.")}
    assert replaced and set(replaced) <= set(state)
    return {**state, **replaced}


@pytest.mark.parametrize(("bn", "output", "tol"), [("init", "x", 1e-5), ("bnrand", "x_bnrand", 2e-4)])
def test_image_dip_matches_reference(io, image_state, image_dip_apply, bn, output, tol):
    # At init the non-local blocks are identities (W-BatchNorm scale 0); bnrand exercises them.
    state = image_state if bn == "init" else _bnrand_state(image_state)
    z = jnp.asarray(_nhwc(io["zx_u8"]).astype(np.float32) / 256)
    x = image_dip_apply({"params": image_dip_params(state, IMAGE_DIP_MICRO)}, z)
    assert x.shape == (1, 64, 64, 3)
    _assert_close(x, _nhwc(io[output]), tol)


def test_kernel_dip_matches_reference(io, kernel_state):
    z = jnp.asarray(_nhwc(io["zk_u8"]).astype(np.float32) / 256)
    params = kernel_dip_params(kernel_state, KERNEL_DIP_MICRO)
    k = jax.jit(KernelDIP(KERNEL_DIP_MICRO).apply)({"params": params}, z)
    assert k.shape == (1, 2, 2, 64)
    _assert_close(k, _nhwc(io["k"]), 1e-5)


@pytest.mark.parametrize("which", ["image", "kernel"])
def test_converted_tree_is_the_module_tree(image_state, kernel_state, which):
    if which == "image":
        module, params = ImageDIP(IMAGE_DIP_MICRO), image_dip_params(image_state, IMAGE_DIP_MICRO)
        z_shape = (1, 64, 64, 8)
    else:
        module, params = KernelDIP(KERNEL_DIP_MICRO), kernel_dip_params(kernel_state, KERNEL_DIP_MICRO)
        z_shape = (1, 64, 64, 64)
    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(z_shape))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(lambda s: s.shape, expected)


def test_state_dict_errors_name_the_key(image_state, kernel_state):
    missing = {k: v for k, v in image_state.items() if k != "model.1.1.4.0.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing key 'model\.1\.1\.4\.0\.bias'"):
        image_dip_params(missing, IMAGE_DIP_MICRO)
    reshaped = {**kernel_state, "model.7.weight": np.zeros((32, 16, 5, 5), np.float32)}
    with pytest.raises(CheckpointMismatchError, match=r"'model\.7\.weight' has shape \(32, 16, 5, 5\)"):
        kernel_dip_params(reshaped, KERNEL_DIP_MICRO)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key 'model\.99\.weight'"):
        kernel_dip_params({**kernel_state, "model.99.weight": np.zeros(3)}, KERNEL_DIP_MICRO)
    # The micro weights do not fit the full-size network.
    with pytest.raises(CheckpointMismatchError, match=r"'model\.1\.0\.1\.0\.weight' has shape \(4, 8, 1,"):
        image_dip_params(image_state)


def test_upsample_matches_torch_bilinear():
    # torch: nn.Upsample(scale_factor=2, mode='bilinear')(tensor([0., 1., 2., 3.]) along one axis).
    up = np.array([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    rows, cols = np.arange(4.0), np.arange(3.0)
    x = (rows[:, None] + 10 * cols[None, :])[None, :, :, None].astype(np.float32)
    expected = up[:, None] + 10 * np.array([0, 0.25, 0.75, 1.25, 1.75, 2])[None, :]
    np.testing.assert_allclose(upsample_bilinear2x(jnp.asarray(x))[0, :, :, 0], expected, atol=1e-6)


def _output_shape(module, z_shape):
    return jax.eval_shape(lambda z: module.init_with_output(jax.random.key(0), z)[0], jnp.zeros(z_shape))


@pytest.mark.parametrize(
    ("config", "z_shape", "out_shape"),
    [
        (ImageDIPConfig(), (1, 256, 256, 8), (1, 256, 256, 3)),
        (IMAGE_DIP_MICRO, (1, 66, 98, 8), (1, 66, 98, 3)),  # odd sides inside: Concat centre-crops
        # no skip branch at scale 0
        (ImageDIPConfig(channels_down=(8, 8), channels_up=(8, 8), channels_skip=(0, 4)), (2, 8, 8, 8), (2, 8, 8, 3)),
    ],
)
def test_image_dip_shapes(config, z_shape, out_shape):
    out = _output_shape(ImageDIP(config), z_shape)
    assert out.shape == out_shape


def test_full_size_kernel_dip_shape():
    out = _output_shape(KernelDIP(), (1, 64, 64, 64))
    assert out.shape == (1, 2, 2, 512)


def test_configs_are_checked():
    with pytest.raises(ValueError, match="kernel_dim"):
        KernelDIPConfig(nf=8, kernel_dim=512)
    with pytest.raises(ValueError, match="equal length"):
        ImageDIPConfig(channels_down=(8, 8), channels_up=(8,), channels_skip=(4, 4))


def test_init_params_are_torch_style(image_dip_apply, image_state):
    z = jnp.zeros((1, 64, 64, 8))
    params = init_params(ImageDIP(IMAGE_DIP_MICRO), jax.random.key(0), z)
    assert jax.tree.structure(params) == jax.tree.structure(image_dip_params(image_state, IMAGE_DIP_MICRO))
    convs = [node for _, node in _nodes(params) if "kernel" in node]
    assert len(convs) == sum(v.ndim == 4 for v in image_state.values())
    for node in convs:  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch's Conv2d, bias included
        bound = 1 / math.sqrt(math.prod(node["kernel"].shape[:-1]))
        assert 0.5 * bound < float(jnp.abs(node["kernel"]).max()) <= bound
        assert 0 < float(jnp.abs(node["bias"]).max()) <= bound
    norms = {path: node for path, node in _nodes(params, ()) if "scale" in node}
    assert len(norms) == sum(k.endswith("running_mean") for k in image_state)
    for path, node in norms.items():  # torch: weight 1, bias 0; the non-local W-BatchNorm weight 0
        np.testing.assert_array_equal(node["scale"], 0.0 if path[-1] == "w_norm" else 1.0)
        np.testing.assert_array_equal(node["bias"], 0.0)
    x = image_dip_apply({"params": params}, jax.random.uniform(jax.random.key(1), z.shape) * 0.1)
    assert np.all(np.isfinite(x)) and np.all((x > 0) & (x < 1))


def _nodes(tree, path=()):
    """(path, dict) of every dict in a parameter tree."""
    yield path, tree
    for name, child in tree.items():
        if isinstance(child, dict):
            yield from _nodes(child, (*path, name))


def test_batch_norm_and_its_written_out_gradients_equal_the_textbook_formula():
    """batch_norm's own backward pass against differentiating mean / biased variance, in float64."""

    def textbook(x, scale, bias):
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias

    with jax.enable_x64(True):
        kx, ks, kb, kr = jax.random.split(jax.random.key(0), 4)
        x = 3.0 * jax.random.normal(kx, (2, 6, 5, 7), jnp.float64) + 1.0
        scale, bias = jax.random.normal(ks, (7,), jnp.float64), jax.random.normal(kb, (7,), jnp.float64)
        weights = jax.random.normal(kr, x.shape, jnp.float64)
        np.testing.assert_allclose(batch_norm(x, scale, bias), textbook(x, scale, bias), rtol=1e-12, atol=1e-12)
        # A non-linear loss, so that the gradient depends on the normalised values, not only their sum.
        loss = lambda f: lambda *a: jnp.sum(weights * jnp.tanh(f(*a)))
        got = jax.grad(loss(batch_norm), (0, 1, 2))(x, scale, bias)
        want = jax.grad(loss(textbook), (0, 1, 2))(x, scale, bias)
        for g, w in zip(got, want, strict=True):
            assert float(jnp.abs(w).max()) > 1e-3
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
