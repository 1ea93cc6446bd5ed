"""Recipes as Python files (big_vision style): each `get_config(variant)` returns a ConfigDict.

Training: synthetic_tiny (+ _vae), gopro_wovae, gopro_wvae, reds_wovae, mix_wovae (common.py holds the
reference recipe they share, kernel_space.py the architectures). Deblurring: deblur_generic,
deblur_stylegan2. The command lines take a file (`--config path/to/recipe.py[:variant]`) or, for
these installed recipes, a name (`--config synthetic_tiny[:variant]`).
"""

from __future__ import annotations

import importlib
import os

import ml_collections

FOLDER = os.path.dirname(os.path.abspath(__file__))
HELPERS = ("common", "kernel_space")


def recipes() -> list[str]:
    """The names of the installed recipes."""
    names = (f[: -len(".py")] for f in os.listdir(FOLDER) if f.endswith(".py") and not f.startswith("_"))
    return sorted(name for name in names if name not in HELPERS)


def path(name: str) -> str:
    """The file of recipe `name` (a name from `recipes()`, optionally with ':variant' kept)."""
    base, sep, variant = name.partition(":")
    if base not in recipes():
        raise ValueError(f"no recipe {base!r}; installed recipes: {', '.join(recipes())}")
    return os.path.join(FOLDER, f"{base}.py") + sep + variant


def get(name: str) -> ml_collections.ConfigDict:
    """The ConfigDict of installed recipe `name[:variant]`, e.g. get("deblur_generic:fast")."""
    base, _, variant = name.partition(":")
    path(base)  # ValueError naming the recipes for an unknown one
    module = importlib.import_module(f"{__name__}.{base}")
    return module.get_config(variant) if variant else module.get_config()


def resolve_argv(argv: list[str], flag: str = "config") -> list[str]:
    """argv with `--config NAME[:variant]` (or `--config=...`) turned into the installed recipe's path
    when NAME is not a file but a recipe name; everything else unchanged."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        value, prefix = None, None
        if arg.startswith(f"--{flag}="):
            prefix, value = f"--{flag}=", arg[len(flag) + 3 :]
        elif arg == f"--{flag}" and i + 1 < len(argv):
            out.append(arg)
            i += 1
            prefix, value = "", argv[i]
        if value is not None:
            base = value.partition(":")[0]
            if not os.path.exists(base) and base in recipes():
                value = path(value)
            out.append(prefix + value)
        else:
            out.append(arg)
        i += 1
    return out
