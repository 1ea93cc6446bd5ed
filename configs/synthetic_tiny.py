"""A small kernel space trained on the built-in synthetic camera-shake pairs, for a CPU.

    python train.py --config configs/synthetic_tiny.py --workdir runs/synthetic_tiny

About 10 minutes on a 2-core CPU; the model shipped in kernelspace_jax/assets/ was made this way.
"""

from configs.common import reference_recipe


def get_config():
    config = reference_recipe("micro_wovae")
    config.model.nf = 16
    config.model.kernel_dim = 128
    config.model.front_blocks = 2
    config.model.back_blocks = 2
    config.model.extractor_blocks = 1
    config.model.hr_width = 16  # the reference's 64 would cost most of the step time
    config.total_steps = 2_000
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint_every = 250
    config.optimizer.lr = 5e-4
    config.optimizer.periods = (2_000,)
    config.optimizer.restarts = ()
    config.optimizer.restart_weights = ()
    config.optimizer.eta_min = 1e-6
    config.data.kind = "synthetic"
    config.data.crop_size = (256, 256)
    config.data.batch_size = 4
    config.data.synthetic.num_train = 4_000
    config.data.synthetic.num_eval = 16
    config.data.synthetic.image_size = (256, 256)
    config.data.synthetic.kernel_size_range = (7, 21)
    config.eval.batch_size = 4
    config.eval.max_batches = 4
    return config
