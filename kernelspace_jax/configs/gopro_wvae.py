"""F and G on GoPro with the VAE kernel extractor, kl_weight 10 (the authors' GOPRO_wVAE.pth).

python train.py --config configs/gopro_wvae.py --workdir runs/gopro_wvae
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config():
    return reference_recipe("released_wvae")
