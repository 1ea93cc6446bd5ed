"""F and G on GoPro, no VAE (the authors' GOPRO_woVAE.pth).

python -m kernelspace_jax.cli.build_data gopro --manual_dir /data/GOPRO_Large
python train.py --config configs/gopro_wovae.py --workdir runs/gopro_wovae
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config():
    return reference_recipe("released_wovae")
