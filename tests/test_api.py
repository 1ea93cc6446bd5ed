"""The public API: what `kernelspace_jax` exports and one argument order for all of it (as dm_pix's
api_test): models first, then the PRNG key, then arrays; options keyword-only."""

import inspect

import jax
import pytest

import kernelspace_jax as ksj

PUBLIC = {
    "MIN_SIDE",
    "BlurOperator",
    "DeblurResult",
    "KernelSpaceConfig",
    "KernelSpaceModel",
    "blur",
    "build_bank",
    "configs",
    "deblur",
    "deblur_stylegan2",
    "extract",
    "init",
    "init_params",
    "interpolate",
    "kernel_shape",
    "load",
    "load_bank",
    "load_shipped",
    "load_stylegan2_prior",
    "make_augmentation",
    "padded_size",
    "reblur",
    "sample",
    "save",
    "save_bank",
    "synthesis",
    "transfer",
}
MODELS = ("model", "prior")
# Positional parameters that are data (arrays, sizes, paths), not options.
DATA = {  # arrays, shapes, sizes, files and sources
    *("sharp", "blurry", "images", "kernel", "kernel_a", "kernel_b", "mean", "sigma", "eps", "params", "keys"),
    *("source_sharp", "source_blurry", "target_sharp", "source", "bank", "config"),
    *("num", "batch", "height", "width", "grid", "size", "path", "checkpoint", "name"),
}


def public_functions():
    names = [n for n in ksj.__all__ if inspect.isfunction(getattr(ksj, n))]
    names += [f"synthesis.{n}" for n in ksj.synthesis.__all__ if inspect.isfunction(getattr(ksj.synthesis, n))]
    return names


def resolve(name):
    obj = ksj
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def test_exports_are_the_curated_api():
    assert set(ksj.__all__) == PUBLIC
    for name in ksj.__all__:
        assert getattr(ksj, name) is not None


@pytest.mark.parametrize("name", public_functions())
def test_argument_order(name):
    """Models, then `key`, then data; anything with a default (an option) is keyword-only."""
    parameters = list(inspect.signature(resolve(name)).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for p in positional:
        assert p.default is p.empty, f"{name}: option {p.name!r} must be keyword-only"
    names = [p.name for p in positional]
    leading = 0
    while leading < len(names) and names[leading] in MODELS:
        leading += 1
    if "key" in names:
        assert names.index("key") == leading, f"{name}: the key comes right after {names[:leading]}, got {names}"
    for n in names[leading:]:
        assert n == "key" or n in DATA, f"{name}: positional {n!r} is neither a model, the key nor data"


def test_deblur_refuses_the_old_argument_order():
    model = ksj.load_shipped()
    images = jax.numpy.zeros((1, 64, 64, 3))
    with pytest.raises(TypeError, match="key comes before"):
        ksj.deblur(model, images, jax.random.key(0))
