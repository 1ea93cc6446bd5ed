"""F and G on REDS, no VAE, batch 13 (the authors' REDS_woVAE.pth).

python -m kernelspace_jax.cli.build_data reds --manual_dir /data/REDS
python train.py --config configs/reds_wovae.py --workdir runs/reds_wovae
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config():
    config = reference_recipe("released_wovae")
    config.data.names = ("reds",)
    config.data.eval_split = "val"
    config.data.batch_size = 13
    return config
