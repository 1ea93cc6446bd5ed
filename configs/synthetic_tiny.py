"""A small kernel space trained on the built-in synthetic camera-shake pairs, for a CPU.

    python train.py --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny

The model shipped in kernelspace_jax/assets/synthetic_tiny was made with this command (README, "The
shipped model"). Differences from the reference recipe, all for speed: nf 32, kernel_dim 256, one
block each, no ResNet blocks in G (so 128x128 crops need no padding), a 16-wide full-resolution
tail (hr_width) that also sees the sharp image (sharp_skip: without it F must pass the image's fine
detail through its 1/4-resolution U-Net and gains +0.75 dB in 600 steps instead of +4.4), batch 4, a
higher learning rate with one cosine period, and larger blur (15-35 px kernels) than GoPro's.
"""

from configs.common import reference_recipe


def get_config():
    config = reference_recipe("micro_wovae")
    config.model.update(
        nf=32, kernel_dim=256, front_blocks=1, back_blocks=1, extractor_blocks=0, hr_width=16, sharp_skip=True
    )
    config.total_steps = 1_500
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint_every = 500
    config.optimizer.update(lr=1e-3, periods=(1_500,), restarts=(), restart_weights=(), eta_min=1e-6)
    config.data.kind = "synthetic"
    config.data.crop_size = (128, 128)
    config.data.batch_size = 4
    config.data.synthetic.update(num_train=20_000, num_eval=16, image_size=(128, 128), kernel_size_range=(15, 35))
    config.eval.update(batch_size=4, max_batches=4, grid_images=4)
    return config
