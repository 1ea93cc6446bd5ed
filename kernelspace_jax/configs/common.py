"""The reference's training recipe (options/kernel_encoding/*.yml), shared by the dataset configs."""

import ml_collections

from kernelspace_jax.configs import kernel_space


def reference_recipe(variant: str) -> ml_collections.ConfigDict:
    """600k Adam steps, batch 8, 256x256 crops, cosine annealing with restarts; `variant` of kernel_space."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = kernel_space.get_config(variant)
    config.init_scheme = "reference"  # of a fresh model: model.INIT_SCHEMES
    config.init_from = ""  # a .pth or checkpoint to start from (the reference's pretrain_model_G)
    config.compute_dtype = "float32"  # or "bfloat16"
    config.distributed = False  # True on multi-host TPU/GPU: calls jax.distributed.initialize()
    config.total_steps = 600_000
    config.log_every = 100
    config.eval_every = 5_000
    config.checkpoint_every = 5_000
    config.keep_checkpoints = 3

    use_vae = config.model.use_vae
    config.optimizer = ml_collections.ConfigDict(
        dict(
            lr=1e-4,
            b1=0.9,
            b2=0.99,
            periods=(50_000, 100_000, 150_000, 150_000, 150_000),
            restarts=(50_000, 150_000, 300_000, 450_000),
            restart_weights=(1.0, 1.0, 1.0, 1.0),
            eta_min=1e-8 if use_vae else 1e-6,
        )
    )
    config.loss = ml_collections.ConfigDict(dict(pixel_weight=1.0, kl_weight=10.0 if use_vae else 0.0))

    config.data = ml_collections.ConfigDict(
        dict(
            kind="tfds",  # "tfds" (built datasets) or "synthetic"
            names=("gopro",),  # several names make a mix
            repeats=(),  # with a mix: how many times each dataset is repeated (() = once each)
            data_dir="",  # TFDS data_dir ("" = its default)
            train_split="train",
            eval_split="",  # "" = each dataset's held-out split (GoPro test, REDS val)
            crop_size=(256, 256),
            batch_size=8,
            flips=True,
            rotations=True,
            worker_count=0,  # > 0: build batches in that many processes (grain); keep it when resuming
            synthetic=ml_collections.ConfigDict(
                dict(num_train=0, num_eval=0, image_size=(288, 288), kernel_size_range=(9, 31), nonuniform_prob=0.3)
            ),
        )
    )
    config.eval = ml_collections.ConfigDict(dict(batch_size=4, max_batches=50, grid_images=4))
    return config
