"""The VAE of configs/synthetic_tiny.py, started from the trained woVAE model (one GPU, about 2 minutes).

    python train.py --config configs/synthetic_tiny_vae.py --workdir runs/synthetic_tiny_vae

The model shipped in kernelspace_jax/assets/synthetic_tiny_vae was made with this command on one
H100 (README, "The shipped models"). G is widened from the shipped woVAE model
(`vae_warm_start.widen_to_vae`: the same F(x, G(x, y)), its kernel scaled to unit RMS, sigma
starting small); trained from scratch, this small VAE's kernel collapses before F learns to use it.
Then the reference's VAE recipe: KL weight KL_WEIGHT, learning rate 1e-4.
"""

from kernelspace_jax.assets import SHIPPED_CHECKPOINT
from kernelspace_jax.configs import synthetic_tiny

KL_WEIGHT = 10.0


def get_config():
    config = synthetic_tiny.get_config()
    config.model.use_vae = True
    config.init_from = str(SHIPPED_CHECKPOINT)
    config.loss.kl_weight = KL_WEIGHT
    config.total_steps = 8_000
    config.data.worker_count = 4
    config.optimizer.update(lr=1e-4, periods=(8_000,))
    return config
