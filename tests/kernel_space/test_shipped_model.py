"""The shipped models (synthetic_tiny and its VAE): their configs, and what they were shipped for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernelspace_jax import synthesis
from kernelspace_jax.assets import load_shipped
from kernelspace_jax.configs import synthetic_tiny, synthetic_tiny_vae
from kernelspace_jax.data import sources
from kernelspace_jax.kernel_space.config import KernelSpaceConfig
from kernelspace_jax.training.metrics import reconstruction_metrics


@pytest.fixture(scope="module")
def held_out():
    config = synthetic_tiny.get_config()
    _, source = sources.build(config.data, config.seed)  # unseen images and kernels
    pairs = [source[i] for i in range(len(source))]
    assert len(pairs) == 16
    return tuple(jnp.asarray(np.stack([p[name] for p in pairs])) for name in ("sharp", "blurry"))


def test_shipped_models_have_their_configs_architectures():
    assert load_shipped().config == KernelSpaceConfig.from_dict(synthetic_tiny.get_config().model)
    assert load_shipped(vae=True).config == KernelSpaceConfig.from_dict(synthetic_tiny_vae.get_config().model)


def test_shipped_model_reconstructs_held_out_pairs_and_uses_its_kernel(held_out):
    out = reconstruction_metrics(load_shipped(), *held_out)
    psnr, swapped, identity = (float(jnp.mean(out[k])) for k in ("psnr", "swapped_psnr", "identity_psnr"))
    # Measured when shipped (16 pairs): 34.58 dB, another pair's kernel 28.78, the identity 24.54.
    assert 9.0 <= psnr - identity < 11.0, (psnr, identity)
    assert psnr - swapped > 4.0, (psnr, swapped)


def test_shipped_vae_reconstructs_and_its_prior_samples_differ(held_out):
    vae = load_shipped(vae=True)
    out = reconstruction_metrics(vae, *held_out)
    psnr, swapped, identity = (float(jnp.mean(out[k])) for k in ("psnr", "swapped_psnr", "identity_psnr"))
    # Measured when shipped: 33.68 dB, swapped 29.16, identity 24.54.
    assert psnr - identity > 8.0 and psnr - swapped > 3.0, (psnr, swapped, identity)
    # 8 prior samples for each of 4 images: mean absolute difference between two samples' blurs of an
    # image, in 8-bit levels (measured when shipped: 2.23; a VAE whose F ignores
    # its kernel gives about 0).
    sharp = jnp.repeat(held_out[0][:4], 8, axis=0)
    blurs, _ = synthesis.sample(vae, jax.random.key(0), sharp)
    blurs = blurs.reshape(4, 8, *blurs.shape[1:])
    pairwise = jnp.abs(blurs[:, :, None] - blurs[:, None]).mean(axis=(3, 4, 5)) * 255
    assert float(pairwise.sum() / (4 * 8 * 7)) > 1.1
