"""A small kernel space trained on the built-in synthetic camera-shake pairs (one GPU, about 4 minutes).

    python train.py --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny
    python train.py --config configs/synthetic_tiny.py:cpu --workdir runs/synthetic_tiny_cpu

`:cpu` is the same recipe cut to a 2-core CPU's ten minutes: nf 16, 64x64 crops of the same blur,
2500 steps, Adam 2e-3, data made in the trainer's process. It checks the whole pipeline and gives a
model whose F applies one average blur: at this step count F does not use its kernel yet
(docs/training.md, "Recipes").
"""

from kernelspace_jax.configs.common import reference_recipe


def get_config(variant: str = ""):
    """The GPU recipe, or with variant "cpu" the ten-minute CPU recipe."""
    if variant not in ("", "cpu"):
        raise ValueError(f"unknown synthetic_tiny variant {variant!r}; expected 'cpu' or none")
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
    if variant == "cpu":
        config.model.update(nf=16, kernel_dim=128)
        config.total_steps = 2_500
        config.log_every = 250
        config.eval_every = config.checkpoint_every = 500
        config.optimizer.update(lr=2e-3, periods=(2_500,))
        config.data.crop_size = (64, 64)
        config.data.worker_count = 0
        config.data.synthetic.update(num_eval=32, image_size=(64, 64))
        config.eval.max_batches = 8
    return config
