"""What the compile time of the training step and of the deblurring chunk is made of.

    python benchmarks/compile_time.py                      # train step and both deblurring recipes
    python benchmarks/compile_time.py --only train --options default,cheap_llvm

For each program (256x256, random weights at the released architecture): the seconds to trace and
lower it to StableHLO (jax), then, for each set of compiler options, the seconds XLA takes to compile
it, the size of the optimised module (instructions, fusions, convolutions) and the median time of a
run, so that an option that compiles faster is seen together with what it costs at run time.

Programs: `train`, train.py's training step of configs/gopro_wovae.py (the released woVAE F and G,
batch 2: forward, backward, Adam on the cosine schedule, the non-finite guard); `fast` and
`reference`, one chunk of the deblurring search of those `deblur_generic` variants (one image, the
library's CPU chunk of 10 rolled steps; the reference's perceptual term with random VGG19 weights).

Option sets (added to the package's `xla_options.compiler_options()`):
  default       the package's options (XLA:CPU's YNNPACK off)
  cheap_llvm    xla_llvm_disable_expensive_passes: LLVM without its expensive optimisation passes
  opt_level_1   xla_backend_optimization_level=1 (XLA:CPU's default is 2)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_utils import machine, search_inputs

from kernelspace_jax import xla_options
from kernelspace_jax.configs import gopro_wovae
from kernelspace_jax.configs.deblur_generic import get_config
from kernelspace_jax.deblurring import dip as search
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.kernel_space import config as configs
from kernelspace_jax.kernel_space.model import init, init_params
from kernelspace_jax.models.vgg import VGG19Features
from kernelspace_jax.training import step as step_lib

OPTION_SETS = {
    "default": {},
    "cheap_llvm": {"xla_llvm_disable_expensive_passes": True},
    "opt_level_1": {"xla_backend_optimization_level": 1},
}


def train_program(size: int, batch: int):
    """(jitted fn, args, feed) of train.py's step for configs/gopro_wovae.py (the released woVAE recipe)."""
    config = gopro_wovae.get_config()
    tx = step_lib.make_optimizer(config)
    state = step_lib.create_state(init_params(jax.random.key(0), step_lib.model_config(config)), tx)
    rng = np.random.default_rng(0)
    batch = {name: jnp.asarray(rng.random((batch, size, size, 3), np.float32)) for name in ("sharp", "blurry")}
    return step_lib.compile_train_step(config, tx, data_mesh()), (state, batch), lambda out, a: (out[0], a[1])


def deblur_program(variant: str, size: int):
    """(jitted fn, args, feed) of one chunk of the `deblur_generic:variant` search on one image."""
    model = init(jax.random.key(0), configs.released())
    config = get_config(variant)
    vgg = None
    if config.objective == "reference":
        vgg = VGG19Features().init(jax.random.key(2), jnp.zeros((1, 32, 32, 3)))["params"]
    settings, state, images = search_inputs(model, 1, size, size, config, vgg)
    counts = (np.int32(config.num_warmup_iters), np.int32(config.num_iters))
    fn = jax.jit(lambda state, *rest: search.run_chunk(state, *rest, settings=settings), donate_argnums=0)
    return fn, (state, *images, np.int32(0), *counts, model, vgg), lambda out, a: (out[0], *a[1:])


def module_size(compiled) -> tuple[int, int, int]:
    """(instructions, fusions, convolutions) of the optimised HLO module."""
    text = compiled.as_text()
    lines = [line for line in text.splitlines() if re.match(r"\s+(ROOT )?%?[\w.-]+ = ", line)]
    fusions = sum(" fusion(" in line for line in lines)
    convolutions = sum(" convolution(" in line for line in lines)
    return len(lines), fusions, convolutions


def measure(name, fn, args, feed, option_sets, repeats):
    start = time.perf_counter()
    lowered = fn.lower(*args)
    lower_s = time.perf_counter() - start
    print(f"{name}: traced and lowered in {lower_s:.1f} s", flush=True)
    rows = []
    base = xla_options.compiler_options() or {}
    for option_name in option_sets:
        start = time.perf_counter()
        compiled = lowered.compile(compiler_options={**base, **OPTION_SETS[option_name]} or None)
        compile_s = time.perf_counter() - start
        state, times = args, []
        for i in range(repeats + 1):
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(*state))
            if i:
                times.append(time.perf_counter() - start)
            state = feed(out, state)
        args = state
        rows.append((name, lower_s, option_name, compile_s, *module_size(compiled), statistics.median(times)))
        print(f"  {option_name}: compiled in {compile_s:.1f} s, run {statistics.median(times):.2f} s", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="train,fast,reference", help="comma-separated subset of train,fast,reference")
    parser.add_argument("--options", default=",".join(OPTION_SETS), help=f"comma-separated, of {list(OPTION_SETS)}")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per compiled program (default 3)")
    args = parser.parse_args(argv)

    print(machine(), flush=True)
    option_sets = [o.strip() for o in args.options.split(",") if o.strip()]
    rows = []
    for what in (w.strip() for w in args.only.split(",") if w.strip()):
        if what == "train":
            program = train_program(args.size, batch=2)
        else:
            program = deblur_program(what, args.size)
        rows += measure(what, *program, option_sets, args.repeats)
        del program

    print(
        f"\n{args.size}x{args.size}; run: median of {args.repeats} calls (train: one step; deblurring: one chunk)\n"
        "| program | trace + lower (s) | options | XLA compile (s) | instructions | fusions | convolutions "
        "| run (s) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for name, lower_s, option_name, compile_s, instructions, fusions, convolutions, run_s in rows:
        print(
            f"| {name} | {lower_s:.1f} | {option_name} | {compile_s:.1f} | {instructions} | {fusions} | "
            f"{convolutions} | {run_s:.2f} |"
        )


if __name__ == "__main__":
    main()
