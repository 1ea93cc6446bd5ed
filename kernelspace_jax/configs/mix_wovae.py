"""F and G on GoPro and REDS together, no VAE (the authors' GoPro + REDS checkpoint).

python train.py --config configs/mix_wovae.py --workdir runs/mix_wovae
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config():
    config = reference_recipe("released_wovae")
    config.data.names = ("reds", "gopro")
    config.data.repeats = (1, 10)  # the reference's dataset_weights: GoPro is much smaller than REDS
    config.data.batch_size = 16
    return config
