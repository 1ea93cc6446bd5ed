"""Blind deblurring of image files with a kernel space (F frozen, deep image priors searched).

    kernelspace-deblur --demo                                   # held-out synthetic images, shipped model
    python deblur.py --input blurry/ --output out/             # files, folders or globs; resumable
    python deblur.py --checkpoint GOPRO_wVAE.pth --vgg-weights vgg19-dcbb9e9d.pth --input a.png --output out/
    python deblur.py --input blurry/ --sharp sharp/ --output out/ --batch-size 8 --iters 2000
    python deblur.py --input blurry/ --output out/ --config.update_mode=alternating --config.remat=True
    python deblur.py --prior stylegan2 --stylegan2 stylegan2-ffhq-256.pt --checkpoint GOPRO_woVAE.pth \
        --input faces/ --output out/                           # 256x256 faces, StyleGAN2 prior

Writes out/<name>.png (sharp), out/<name>_reblurred.png (F(x, k)) and, with --compare,
out/<name>_compare.png; images already done are skipped. Settings, inputs and ground truth are all
checked before the first search; an image whose result is not finite is not written (exit status 1).
With --sharp, prints PSNR/SSIM per image and their mean beside the blurry input's. Search settings:
configs/deblur_generic.py, or with --prior stylegan2 configs/deblur_stylegan2.py (--config.<field>=...).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from kernelspace_jax import configs
from kernelspace_jax.cli import common

PROG = "kernelspace-deblur"

DEFAULT_CONFIGS = {"generic": "deblur_generic.py", "stylegan2": "deblur_stylegan2.py"}


def _define_prior(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum(
        "prior", "generic", list(DEFAULT_CONFIGS), "Sharp-image prior: deep image prior or StyleGAN2.", flag_values=fv
    )


def default_generic_variant(demo: bool) -> str:
    """The deblur_generic variant run without --config: `fast` on CPUs and for --demo, else `reference`."""
    import jax

    return "fast" if demo or jax.default_backend() == "cpu" else "reference"


def recipe_line(argv: list[str], prior: str) -> str:
    """What deblur.py prints first: the recipe that runs and why."""
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if given is None and "--config" in argv[:-1]:
        given = argv[argv.index("--config") + 1]
    if given is not None:
        if given.startswith(configs.FOLDER + os.sep):  # an installed recipe, named by resolve_argv's path
            given = given[len(configs.FOLDER) + 1 :].replace(".py", "", 1)
        return f"recipe: {given} (--config)"
    if prior != "generic":
        return f"recipe: {DEFAULT_CONFIGS[prior][: -len('.py')]}"
    variant = default_generic_variant("--demo" in argv)
    if variant == "reference":
        return "recipe: deblur_generic:reference (the reference's search; on a CPU the default is :fast)"
    return (
        "recipe: deblur_generic:fast (the default on CPUs and for --demo: minutes an image; the reference's "
        "search, about 100 minutes an image on a 2-core CPU, is --config deblur_generic:reference)"
    )


def _flags(argv: list[str]) -> flags.FlagValues:
    prior = flags.FlagValues()  # read first: it picks the default config file
    _define_prior(prior)
    prior(argv, known_only=True)
    fv = flags.FlagValues()
    _define_prior(fv)
    default_config = os.path.join(configs.FOLDER, DEFAULT_CONFIGS[prior.prior])
    if prior.prior == "generic":
        default_config += ":" + default_generic_variant("--demo" in argv)
    config_flags.DEFINE_config_file(
        "config",
        default_config,
        "Search settings; override fields with --config.<field>=<value>.",
        flag_values=fv,
        sys_argv=argv,
    )
    flags.DEFINE_multi_string("input", [], "Image file, folder or glob (repeatable).", flag_values=fv)
    flags.DEFINE_string("output", None, "Output folder (default with --demo: deblur_demo).", flag_values=fv)
    flags.DEFINE_string(
        "checkpoint",
        None,
        "Kernel space: an authors' .pth, an Orbax folder or a training workdir (default: the shipped model).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch-size", 1, "Images per compiled search (same padded size).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_string(
        "stylegan2", None, "With --prior stylegan2: a rosinality StyleGAN2 checkpoint (.pt with g_ema).", flag_values=fv
    )
    flags.DEFINE_integer(
        "iters",
        None,
        "Main-phase iterations (config.num_iters); epochs with --prior stylegan2.",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", 0, "Seed; image keys are fold_in(key(seed), crc32(name)).", flag_values=fv)
    flags.DEFINE_string(
        "vgg-weights",
        None,
        "torchvision vgg19 .pth or .npz: the reference's perceptual objective (without it: the fallback objective).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "sharp", None, "Folder of ground-truth sharp images named like the inputs: evaluation mode.", flag_values=fv
    )
    flags.DEFINE_bool("compare", False, "Also write <name>_compare.png (blurry | sharp | reblurred).", flag_values=fv)
    flags.DEFINE_bool("demo", False, "Deblur held-out synthetic images and write demo_comparison.png.", flag_values=fv)
    flags.DEFINE_integer("demo-num", 8, "Images in the demo.", flag_values=fv)
    flags.DEFINE_integer("demo-size", 128, "Side of the demo images.", flag_values=fv)
    flags.DEFINE_bool(
        "skip-bad", False, "Skip unreadable / too small / too large inputs instead of stopping.", flag_values=fv
    )
    flags.DEFINE_bool("overwrite", False, "Deblur images again even if their outputs exist.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)
    common.parse(fv, argv[1:], prog=PROG, doc=__doc__)
    common.check_config(fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    argv = configs.resolve_argv([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    try:
        fv = _flags(argv)
    except common.HelpShown:
        return 0
    except (common.UsageError, flags.Error, AttributeError, TypeError, ValueError, OSError) as error:
        return common.usage_error(PROG, error)
    common.enable_compilation_cache()
    from kernelspace_jax.deblurring import files

    print(recipe_line(argv, fv.prior))

    try:
        return files.run(
            inputs=fv.input,
            output=fv.output,
            config=fv.config,
            checkpoint=fv.checkpoint,
            batch_size=fv["batch-size"].value,
            iters=fv.iters,
            seed=fv.seed,
            vgg_weights=fv["vgg-weights"].value,
            sharp=fv.sharp,
            compare=fv.compare,
            demo=fv.demo,
            demo_num=fv["demo-num"].value,
            demo_size=fv["demo-size"].value,
            skip_bad=fv["skip-bad"].value,
            overwrite=fv.overwrite,
            progress=fv.progress,
            prior=fv.prior,
            stylegan2=fv.stylegan2,
        )
    except (OSError, ValueError) as error:  # bad inputs, checkpoints, configs: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
