"""Generic blind deblurring: the reference's settings (options/generic_deblur/default.yml, JointDeblur)
and `fast`, a CPU-sized recipe (deblur.py's default on CPUs).

    python deblur.py --input blurry/ --output out/                          # :fast on a CPU
    python deblur.py --input blurry/ --output out/ --config deblur_generic:reference
    python deblur.py --checkpoint GOPRO_wVAE.pth --input blurry/ --output out/ --vgg-weights vgg19.pth
    python deblur.py --input blurry/ --output out/ --config.num_iters=2000 --config.update_mode=alternating
    python deblur.py --input blurry/ --output out/ --config=configs/deblur_generic.py:local   # smoke run

Any field can be overridden on the command line (--config.<field>=<value>).
"""

import ml_collections

# The reference's two-phase weights (JointDeblur.deblur): 0.6 P + (1 - SSIM) + 5e-5 |k| + 2e-2 HL(x) in
# the first half, P + 5e-2 HL(x) + 5e-4 |k| in the second.
REFERENCE = {
    "phase1": {"perceptual": 0.6, "ssim": 1.0, "kernel_norm": 5e-5, "laplacian": 2e-2},
    "phase2": {"perceptual": 1.0, "kernel_norm": 5e-4, "laplacian": 5e-2},
}
# Without VGG weights the perceptual term becomes a Charbonnier (L1-like) term on F(x, k) - y, 1 - SSIM
# stays in both phases, and the hyper-Laplacian prior on x keeps the reference's weights (chosen over 5
# times them on 8 synthetic validation images with the shipped model: docs/deblurring.md, "Objectives").
FALLBACK = {
    "phase1": {"ssim": 1.0, "pixel": 1.0, "kernel_norm": 5e-5, "laplacian": 2e-2},
    "phase2": {"ssim": 1.0, "pixel": 1.0, "kernel_norm": 5e-4, "laplacian": 5e-2},
}


def get_config(variant: str = "reference") -> ml_collections.ConfigDict:
    """`reference` (the reference's search; deblur.py's default on GPUs and TPUs), `fast` (narrow ImageDIP,
    100 + 400 steps, x alone against the `sharpened` kernel: deblur.py's default on CPUs and for --demo)
    or `local` (tiny priors and 10 + 20 steps, to check that things run)."""
    config = ml_collections.ConfigDict()
    config.num_iters = 5000  # main-phase steps
    config.num_warmup_iters = 300  # warm-up steps (both priors at once)
    config.x_lr = 5e-4
    config.k_lr = 5e-4
    config.lr_gamma = 0.7  # StepLR: lr * gamma every num_iters // lr_decays steps
    config.lr_decays = 5
    config.reg_noise_std = 1e-3  # fresh N(0, std^2) added to z_x and z_k each step
    config.z_scale = 0.1  # z_x, z_k ~ U(0, z_scale)
    # "joint" (the reference), "alternating" (x step, then k step) or "fixed_kernel" (x alone, k = the warm-up kernel)
    config.update_mode = "joint"
    config.objective = "auto"  # "auto": "reference" with --vgg-weights, else "fallback"
    config.objectives = ml_collections.ConfigDict({"reference": REFERENCE, "fallback": FALLBACK})
    # "zero", "identity" (G(y, y)), or a .npy/.npz/.pth file (the reference's kernel.pth for its GoPro
    # model). zero started best on the 8 validation images (docs/deblurring.md, "Warm-up kernel"): with a
    # model that uses k, G(y, y) is the "no blur" kernel, and the search starting there stays near x = y.
    config.warmup_kernel = "zero"
    config.image_dip = ml_collections.ConfigDict(
        dict(
            in_channels=8,
            out_channels=3,
            channels_down=(128,) * 5,
            channels_up=(128,) * 5,
            channels_skip=(16,) * 5,
            filter_size_down=3,
            filter_size_up=3,
            filter_skip_size=1,
            need1x1_up=True,
            need_sigmoid=True,
        )
    )
    config.kernel_dip = ml_collections.ConfigDict(dict(nf=64, n_blocks=6))  # kernel_dim: the model's

    # Speed and memory (results are the same up to float round-off, except kernel_crop).
    config.chunk_size = 0  # steps per compiled lax.scan call; 0: 10 on CPUs, 50 on GPUs/TPUs
    config.compute_dtype = "float32"  # of F; "bfloat16" halves its activations (parameters stay float32)
    config.batch_mode = "auto"  # "vmap" the images of a batch, or "map" them in turn; auto: map on CPUs
    config.remat = False  # recompute the priors, F and the losses in the backward pass (less memory)
    config.kernel_crop = 0  # > 0: estimate k on the centre crop of this side, then x on the whole image
    config.max_pixels = 2048 * 2048  # larger images are refused (use kernel_crop, remat, or downscale)

    if variant == "fast":  # the CPU default and --demo: x alone against a fixed kernel, minutes an image
        # Chosen on the val cases of benchmarks/deblur_quality.py (docs/deblurring_quality.md): the joint
        # search drifts to the "no blur" kernel (+0.11 dB); x against G(unsharp(y), y) gains +0.84 dB.
        config.num_iters = 400
        config.num_warmup_iters = 100
        config.update_mode = "fixed_kernel"
        config.warmup_kernel = "sharpened"
        config.image_dip.update(channels_down=(32,) * 5, channels_up=(32,) * 5, channels_skip=(4,) * 5)
        config.kernel_dip.update(nf=32, n_blocks=2)  # for --config.update_mode=joint / alternating
    elif variant == "local":
        config.num_iters = 20
        config.num_warmup_iters = 10
        config.image_dip.update(channels_down=(8,) * 5, channels_up=(8,) * 5, channels_skip=(4,) * 5)
        config.kernel_dip.update(nf=16, n_blocks=1)
    elif variant != "reference":
        raise ValueError(f"unknown variant {variant!r}: reference, fast or local")
    return config
