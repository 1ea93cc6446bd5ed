"""A small kernel space trained on the built-in synthetic camera-shake pairs, for a CPU.

    python train.py --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny

The model shipped in kernelspace_jax/assets/synthetic_tiny was made with this command (README, "The
shipped model"). Differences from the reference recipe, all for speed: nf 32, kernel_dim 256, one
block each, no ResNet blocks in G (so 128x128 crops need no padding), a 16-wide full-resolution
tail (hr_width), batch 4, a higher learning rate with one cosine period, and larger blur (15-35 px
kernels) than GoPro's, which a small F learns sooner.
"""

from configs.common import reference_recipe


def get_config():
    config = reference_recipe("micro_wovae")
    config.model.update(nf=32, kernel_dim=256, front_blocks=1, back_blocks=1, extractor_blocks=0, hr_width=16)
    config.total_steps = 1_200
    config.log_every = 50
    config.eval_every = 200
    config.checkpoint_every = 200
    config.optimizer.update(lr=5e-4, periods=(1_200,), restarts=(), restart_weights=(), eta_min=1e-6)
    config.data.kind = "synthetic"
    config.data.crop_size = (128, 128)
    config.data.batch_size = 4
    config.data.synthetic.update(num_train=20_000, num_eval=16, image_size=(128, 128), kernel_size_range=(15, 35))
    config.eval.update(batch_size=4, max_batches=4, grid_images=4)
    return config
