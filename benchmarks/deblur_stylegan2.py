"""Speed of the StyleGAN2 (domain-specific) search (kernelspace_jax.deblurring.stylegan2.search) at 256x256.

    python benchmarks/deblur_stylegan2.py                       # batches 1, 2; the images in turn and vmapped
    python benchmarks/deblur_stylegan2.py --chunk-size 1 --batches 1
    python benchmarks/deblur_stylegan2.py --modes map --batches 1,4 --repeats 5

An FFHQ-256-sized generator (Generator(256, 512, 8), channel multiplier 2) and the released F, both with
random weights (speed does not depend on them), and the KernelDIP of configs/deblur_stylegan2.py. For
every batch size and batch mode ("map": the images take turns, the CPU default; "vmap": vmapped, the
accelerator default): the first call of a chunk (compile), then the median time per image and step of
each step kind (x-step: generator, F and their gradients; k-step: KernelDIP and F; warm-up: KernelDIP
alone) over `--repeats` timed chunks after a warm-up chunk. The rows' chunks are called in turn, so a
machine whose speed drifts slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.deblur import machine
from kernelspace_jax.configs.deblur_stylegan2 import get_config
from kernelspace_jax.deblurring.stylegan2 import search as stylegan2_search
from kernelspace_jax.deblurring.stylegan2.prior import StyleGAN2Prior
from kernelspace_jax.deblurring.warmup import warmup_kernels
from kernelspace_jax.kernel_space import config as configs
from kernelspace_jax.kernel_space.inputs import image_keys
from kernelspace_jax.kernel_space.model import init
from kernelspace_jax.models.stylegan2 import Generator, init_generator

KINDS = ("x", "k", "warmup")
COUNT_FIELDS = ("num_warmup_iters", "num_epochs", "num_x_iters", "num_k_iters")


def build_row(model, prior, config, batch, mode) -> dict:
    """A batch of random 256x256 images, its search state and the first (compiling) chunk call."""
    config = config.copy_and_resolve_references()
    config.batch_mode = mode
    settings = stylegan2_search.settings_from_config(config, model)
    chunk = settings.chunk_size
    # One chunk of warm-up steps, then one epoch of one chunk of x-steps and one of k-steps.
    config.num_warmup_iters, config.num_epochs, config.num_x_iters, config.num_k_iters = chunk, 1, chunk, chunk
    counts = tuple(np.int32(config[k]) for k in COUNT_FIELDS)
    blurry = jax.random.uniform(jax.random.key(2), (batch, prior.size, prior.size, 3))
    kernels = warmup_kernels(model, blurry, "zero")
    keys = image_keys(jax.random.key(3), batch)
    state = stylegan2_search.init_states(keys, blurry, kernels, prior, settings=settings)

    def run(state, t0):
        return stylegan2_search.run_chunk(state, blurry, kernels, np.int32(t0), counts, model, prior, settings=settings)

    start = time.perf_counter()
    state, loss = run(state, 0)
    loss.block_until_ready()
    starts = {"warmup": 0, "x": chunk, "k": 2 * chunk}
    return {
        "batch": batch,
        "mode": mode,
        "chunk": chunk,
        "compile_s": time.perf_counter() - start,
        "run": run,
        "state": state,
        "starts": starts,
        "times": {kind: [] for kind in KINDS},
    }


def time_in_turns(rows, repeats) -> None:
    """Each kind's chunk of every row in turn, a warm-up round then `repeats` timed ones; sets row[kind]
    to the median seconds per image and step."""
    for kind in KINDS:
        for i in range(repeats + 1):
            for row in rows:
                start = time.perf_counter()
                row["state"], loss = row["run"](row["state"], row["starts"][kind])
                loss.block_until_ready()
                if i:
                    row["times"][kind].append((time.perf_counter() - start) / (row["chunk"] * row["batch"]))
    for row in rows:
        for kind in KINDS:
            row[kind] = statistics.median(row["times"][kind])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--modes", default="map,vmap", help="batch modes: map (in turn), vmap")
    parser.add_argument("--chunk-size", type=int, default=0, help="steps per chunk (0: the library default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks per step kind")
    args = parser.parse_args(argv)

    print(machine(), flush=True)
    model = init(jax.random.key(1), configs.released())
    generator = Generator()
    variables = init_generator(generator, jax.random.key(0))
    prior = StyleGAN2Prior({"params": variables["params"]}, jnp.zeros(512), jnp.ones(512), generator)
    config = get_config()
    config.chunk_size = args.chunk_size
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for mode in args.modes.split(","):
            if batch == 1 and mode != args.modes.split(",")[0]:
                continue  # a batch of one runs the same program either way
            rows.append(build_row(model, prior, config, batch, mode))
            print(f"compiled batch {batch} ({mode}): {rows[-1]['compile_s']:.1f} s", flush=True)
    time_in_turns(rows, args.repeats)

    alone = {kind: next((r[kind] for r in rows if r["batch"] == 1), None) for kind in KINDS}
    print(f"\nStyleGAN2 search at 256x256, chunks of {rows[0]['chunk']} steps, median of {args.repeats} chunks")
    print("| batch | mode | first call (s) | x-step (s / image) | k-step | warm-up step | x-step vs alone |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['x'] / alone['x']:.2f}" if alone["x"] else "-"
        print(
            f"| {row['batch']} | {row['mode']} | {row['compile_s']:.0f} | {row['x']:.3f} | {row['k']:.3f} | "
            f"{row['warmup']:.3f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
