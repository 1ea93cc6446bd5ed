"""A small kernel space trained on the built-in synthetic camera-shake pairs (one GPU, about 4 minutes).

    python train.py --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny

The model shipped in kernelspace_jax/assets/synthetic_tiny was made with this command on one H100
(README, "The shipped models"). Differences from the reference recipe: nf 32, kernel_dim 256, one
block each, no ResNet blocks in G (so 128x128 crops need no padding and the kernel is one 256-vector
per 128x128 cell), a 16-wide full-resolution tail (hr_width) that also sees the sharp image
(sharp_skip: without it F must pass the image's fine detail through its 1/4-resolution U-Net), a
higher learning rate with one cosine period, larger blur (15-35 px kernels) than GoPro's, and uniform
blur only (a non-uniform blur is not what one kernel cell can encode). F starts to use its kernel
after about 6000-8000 steps (eval/swapped_psnr falls below eval/psnr); 1500 steps on a CPU give a
model that applies one average blur whatever the kernel.
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config():
    config = reference_recipe("micro_wovae")
    config.model.update(
        nf=32, kernel_dim=256, front_blocks=1, back_blocks=1, extractor_blocks=0, hr_width=16, sharp_skip=True
    )
    config.total_steps = 16_000
    config.log_every = 500
    config.eval_every = 2_000
    config.checkpoint_every = 2_000
    config.keep_checkpoints = 2
    config.optimizer.update(lr=1e-3, periods=(16_000,), restarts=(), restart_weights=(), eta_min=1e-6)
    config.data.kind = "synthetic"
    config.data.crop_size = (128, 128)
    config.data.batch_size = 8
    config.data.worker_count = 8  # the synthetic pairs are made on the fly: ~1000 per second need 8 processes
    config.data.synthetic.update(
        num_train=20_000, num_eval=16, image_size=(128, 128), kernel_size_range=(15, 35), nonuniform_prob=0.0
    )
    config.eval.update(batch_size=4, max_batches=4, grid_images=4)
    return config
