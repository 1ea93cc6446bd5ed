"""Domain-specific deblurring with a StyleGAN2 prior: the reference's settings
(options/domain_specific_deblur/stylegan2.yml, DSDStyleGAN2).

    python deblur.py --prior stylegan2 --stylegan2 stylegan2-ffhq-256.pt --checkpoint GOPRO_woVAE.pth \\
        --input faces/ --output out/
    python deblur.py --prior stylegan2 --stylegan2 stylegan2-ffhq-256.pt --input faces/ --output out/ \\
        --config=configs/deblur_stylegan2.py:local   # smoke run

Images must have the generator's size (256 x 256 for FFHQ 256). Any field can be overridden on the
command line (--config.<field>=<value>).
"""

import ml_collections


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
    """`reference` (default) or `local`: a narrow KernelDIP and 5 + 2 x (3 + 2) steps, to check that things run."""
    config = ml_collections.ConfigDict()
    config.num_warmup_iters = 150  # k fitted to the warm-up kernel
    config.num_epochs = 25  # each: num_x_iters x-steps, then num_k_iters k-steps
    config.num_x_iters = 300
    config.num_k_iters = 200
    config.x_lr = 0.2  # Adam on the sphere, on w and the trainable noise maps
    config.lr_schedule = "linear1cycledrop"  # of x_lr over all x-steps: "fixed", "linear1cycle", "linear1cycledrop"
    config.k_lr = 5e-4  # Adam on the KernelDIP; StepLR over the k-steps:
    config.k_lr_gamma = 0.7  # lr * gamma every num_epochs * num_k_iters // k_lr_decays k-steps
    config.k_lr_decays = 5
    config.num_trainable_noise_layers = 5  # the first noise maps are searched with w, the others stay fixed
    config.reg_noise_std = 1e-3  # fresh N(0, std^2) added to z_k each step
    config.z_scale = 0.1  # z_k ~ U(0, z_scale)
    # loss = l2_weight * mean((F(x, k) - y)^2) + geocross_weight * GEOCROSS(w) + kernel_norm_weight * |k|
    config.l2_weight = 100.0
    config.geocross_weight = 0.1
    config.kernel_norm_weight = 1e-4
    # "identity" (G(y, y)), "zero", or a .npy/.npz/.pth file (the reference's experiments/pretrained/kernel.pth).
    config.warmup_kernel = "identity"
    config.kernel_dip = ml_collections.ConfigDict(dict(nf=64, n_blocks=6))  # kernel_dim: the model's
    config.gaussian_fit_samples = 1_000_000  # z mapped once for the Gaussian fit of W (cached beside the checkpoint)

    config.chunk_size = 0  # steps per compiled lax.scan call; 0: 10 on CPUs, 50 on GPUs/TPUs
    config.batch_mode = "auto"  # "vmap" the images of a batch, or "map" them in turn; auto: map on CPUs
    config.compute_dtype = "float32"  # of F; "bfloat16" halves its activations (the generator stays float32)
    config.max_pixels = 1024 * 1024  # larger inputs are refused before anything runs

    if variant == "local":
        config.num_warmup_iters = 5
        config.num_epochs = 2
        config.num_x_iters = 3
        config.num_k_iters = 2
        config.kernel_dip.update(nf=16, n_blocks=1)
        config.gaussian_fit_samples = 10_000
    elif variant != "reference":
        raise ValueError(f"unknown variant {variant!r}: reference or local")
    return config
