"""Starting a VAE from a woVAE model: the same F(x, G(x, y)), a unit-RMS mean, small sigma; and in train.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelspace_jax as ksj
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.kernel_space.config import micro
from kernelspace_jax.kernel_space.vae_warm_start import rescale_kernel, widen_to_vae
from kernelspace_jax.training.loop import train_and_evaluate
from tests.training.test_training import tiny_config


def trained_like(blocks: int) -> ksj.KernelSpaceModel:
    """A micro woVAE model with O(1) weights everywhere (a fresh reference init barely uses k)."""
    config = dataclasses.replace(micro(), extractor_blocks=blocks, hr_width=8)
    return ksj.KernelSpaceModel(ksj.init_params(jax.random.key(0), config, scheme="kaiming"), config)


def pair(size=128 + 64, n=3):
    keys = jax.random.split(jax.random.key(1), 2)
    sharp = jax.random.uniform(keys[0], (n, size, size, 3))
    return sharp, jnp.clip(sharp + 0.1 * jax.random.normal(keys[1], sharp.shape), 0, 1)


@pytest.mark.parametrize("blocks", [0, 1])
def test_widened_vae_keeps_the_mean_and_f(blocks):
    model = trained_like(blocks)
    sharp, blurry = pair()
    mean, _ = model.extract(sharp, blurry)
    vae = widen_to_vae(model, jax.random.key(2))
    assert vae.config == dataclasses.replace(model.config, use_vae=True)
    vae_mean, sigma = vae.extract(sharp, blurry)
    np.testing.assert_allclose(vae_mean, mean, rtol=1e-5, atol=1e-5 * float(jnp.abs(mean).max()))
    assert float(jnp.abs(sigma).max()) > 0  # the new channels are alive
    k = jax.random.normal(jax.random.key(3), mean.shape)
    np.testing.assert_array_equal(vae.blur(sharp, k), model.blur(sharp, k))


@pytest.mark.parametrize("blocks", [0, 1])
def test_calibrated_widening_gives_unit_rms_mean_and_small_sigma(blocks):
    model = trained_like(blocks)
    sharp, blurry = pair()
    mean, _ = model.extract(sharp, blurry)
    vae = widen_to_vae(model, jax.random.key(2), calibration=(sharp, blurry), sigma_rms=0.1)
    vae_mean, sigma = vae.extract(sharp, blurry)
    assert float(jnp.sqrt(jnp.mean(vae_mean**2))) == pytest.approx(1.0, rel=1e-4)
    rms_sigma = float(jnp.sqrt(jnp.mean(sigma**2)))
    assert rms_sigma == pytest.approx(0.1, rel=1e-4) if blocks == 0 else 0.02 < rms_sigma < 0.5
    # F(x, G(x, y)) is unchanged: the scale moved from G's output into F's kernel input.
    np.testing.assert_allclose(vae.blur(sharp, vae_mean), model.blur(sharp, mean), atol=2e-5)


def test_rescale_kernel_is_exact_and_checked():
    model = trained_like(0)
    sharp, blurry = pair()
    mean, _ = model.extract(sharp, blurry)
    scaled = rescale_kernel(model, 8.0)
    np.testing.assert_allclose(scaled.extract(sharp, blurry)[0], mean / 8.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaled.blur(sharp, mean / 8.0), model.blur(sharp, mean), atol=2e-5)
    with pytest.raises(ValueError, match="positive"):
        rescale_kernel(model, 0.0)
    vae = widen_to_vae(model, jax.random.key(0))
    with pytest.raises(ValueError, match="already a VAE"):
        widen_to_vae(vae, jax.random.key(0))
    with pytest.raises(ValueError, match="woVAE"):
        rescale_kernel(vae, 2.0)


def test_train_py_starts_a_vae_from_a_wovae_checkpoint(tmp_path):
    architecture = ksj.KernelSpaceConfig.from_dict(tiny_config().model)
    source = ksj.KernelSpaceModel(ksj.init_params(jax.random.key(0), architecture, scheme="kaiming"), architecture)
    ksj.save(source, tmp_path / "wovae")
    config = tiny_config(total_steps=2)
    config.model.use_vae = True
    config.loss.kl_weight = 10.0
    config.init_from = str(tmp_path / "wovae")
    config.checkpoint_every = 1
    train_and_evaluate(config, str(tmp_path / "run"))
    first = ksj.load(tmp_path / "run", step=1)
    assert first.config.use_vae
    # One Adam step (lr 1e-3) away from the woVAE's weights, not from a fresh initialisation.
    old = np.asarray(source.params["extractor"]["down_0"]["kernel"])
    new = np.asarray(first.params["extractor"]["down_0"]["kernel"])
    assert new.shape == old.shape and np.abs(new - old).max() < 1.1e-3 < np.abs(old).max()
    wrong = tiny_config(total_steps=1)
    wrong.model.update(nf=16, kernel_dim=128)
    wrong.init_from = str(tmp_path / "wovae")
    with pytest.raises(CheckpointMismatchError, match="init_from"):
        train_and_evaluate(wrong, str(tmp_path / "wrong"))
