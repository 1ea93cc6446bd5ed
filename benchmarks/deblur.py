"""Speed and memory of the deblurring search (kernelspace_jax.deblurring.dip) at 256x256.

    python benchmarks/deblur.py                 # batches 1, 4, 8; reference objective (random VGG19)
    python benchmarks/deblur.py --quick         # fewer timed steps
    python benchmarks/deblur.py --objective fallback --batches 1,8
    python benchmarks/deblur.py --memory 256,512,720x1280   # XLA's buffer sizes per resolution

The released configuration of F (random weights: speed does not depend on them), the full priors of
configs/deblur_generic.py, and the reference objective with randomly initialised VGG19 weights (what
the reference's step includes) unless --objective fallback. For every batch
size: the compile time of one search chunk, the median time per step (after a warm-up chunk; the
batch sizes' chunks are called in turn, so that a machine whose speed drifts slows them alike), the
time per image and step, and the whole reference run (300 warm-up + 5000 steps) per image. A second
iteration count is run through the same compiled chunk to show that nothing is recompiled. Memory:
XLA's buffer assignment of the compiled chunk (arguments + outputs + temporaries, the peak a device
needs), and on GPUs the allocator's peak over the run (all batch sizes' states are held at once).
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

from bench_utils import machine, search_inputs

from kernelspace_jax.configs.deblur_generic import get_config
from kernelspace_jax.deblurring import dip as search
from kernelspace_jax.deblurring import engine
from kernelspace_jax.kernel_space import config as configs
from kernelspace_jax.kernel_space.model import init
from kernelspace_jax.models.vgg import VGG19Features

REFERENCE_STEPS = 300 + 5000
# The reference's main-phase step (JointDeblur.deblur, first half: VGG + SSIM objective), PyTorch 2.13 on a
# 2-core Intel Xeon (AVX-512), 256x256, random weights, median of 10 steps (benchmarks/reference_step.py;
# other machines in benchmarks/README.md): pass your machine's figure with --reference-step-s.
REFERENCE_CPU_STEP_S = 1.82


def memory_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of XLA's buffer assignment (aliased buffers counted once)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:
        return None
    if stats is None:
        return None
    return (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )


def compile_batch(model, config, vgg, batch, size) -> dict:
    """The compiled search chunk for `batch` random images at size x size, with its inputs."""
    settings, state, images = search_inputs(model, batch, size, size, config, vgg)
    counts = (np.int32(config.num_warmup_iters), np.int32(config.num_iters))
    start = time.perf_counter()
    compiled = search.run_chunk.lower(state, *images, np.int32(0), *counts, model, vgg, settings=settings).compile()
    return {
        "batch": batch,
        "compile_s": time.perf_counter() - start,
        "buffers": memory_bytes(compiled),
        "run": [compiled, state, (*images, counts)],
        "times": [],
    }


def time_in_turns(rows, model, vgg, chunk_size, main_start, timed_chunks) -> None:
    """Calls every batch size's chunk in turn, a warm-up round then `timed_chunks` timed ones, so that a
    machine whose speed drifts (shared CPUs) slows all batch sizes alike; sets row["step_s"] (median)."""
    for i in range(timed_chunks + 1):
        # Main-phase steps (t >= warm-up): F and the objective run, as in 5000 of the 5300 steps.
        t0 = np.int32(main_start + i * chunk_size)
        for row in rows:
            compiled, state, (blurry, features, kernels, counts) = row["run"]
            start = time.perf_counter()
            state, loss = compiled(state, blurry, features, kernels, t0, *counts, model, vgg)
            loss.block_until_ready()
            row["run"][1] = state
            if i:
                row["times"].append((time.perf_counter() - start) / chunk_size)
    for row in rows:
        row["step_s"] = statistics.median(row["times"])
        del row["run"]


def retrace_check(model, config, vgg, size) -> tuple[int, float, float]:
    """deblur() of one image with chunk_size, then 3 x chunk_size main steps; returns (traces during the
    second call, seconds of each call)."""
    blurry = jax.random.uniform(jax.random.key(1), (1, size, size, 3))
    seconds, traces = [], 0
    for num_iters in (config.chunk_size, 3 * config.chunk_size):
        c = config.copy_and_resolve_references()
        c.update(num_iters=num_iters, num_warmup_iters=0)
        traces = engine.trace_count(search.TRACE_NAME)
        start = time.perf_counter()
        search.deblur(model, jax.random.key(0), blurry, config=c, vgg_params=vgg)
        seconds.append(time.perf_counter() - start)
    return engine.trace_count(search.TRACE_NAME) - traces, *seconds


def memory_table(model, config, vgg, sizes):
    rows = []
    variants = {
        "float32": {},
        "bfloat16 F": {"compute_dtype": "bfloat16"},
        "remat": {"remat": True},
        "bfloat16 F + remat": {"compute_dtype": "bfloat16", "remat": True},
    }
    for size in sizes:
        height, width = size
        for name, overrides in variants.items():
            c = config.copy_and_resolve_references()
            c.update(**overrides)
            m = model.with_dtype(jnp.dtype(c.compute_dtype))
            settings, state, images = search_inputs(m, 1, height, width, c, vgg)
            counts = (np.int32(c.num_warmup_iters), np.int32(c.num_iters))
            start = time.perf_counter()
            compiled = search.run_chunk.lower(state, *images, np.int32(0), *counts, m, vgg, settings=settings).compile()
            rows.append((f"{height}x{width}", name, memory_bytes(compiled), time.perf_counter() - start))
            print(f"  {rows[-1][0]} {name}: {rows[-1][2] / 2**30:.2f} GiB", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 timed chunk of 2 steps per batch size")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--objective", choices=("reference", "fallback"), default="reference")
    parser.add_argument("--memory", default="", help="also XLA buffer sizes at these sizes, e.g. 256,720x1280")
    parser.add_argument(
        "--reference-step-s",
        type=float,
        default=REFERENCE_CPU_STEP_S,
        help="the reference's step time on this machine, for the ratio column (default: the development CPU's)",
    )
    args = parser.parse_args(argv)

    print(machine(), flush=True)
    model = init(jax.random.key(0), configs.released())
    config = get_config()
    config.objective = args.objective
    # The library's default chunk (config.chunk_size 0): 10 steps on CPUs, 50 on accelerators.
    default_chunk = search.settings_from_config(config, model, args.objective == "reference").chunk_size
    config.chunk_size = 2 if args.quick else default_chunk
    timed_chunks = 1 if args.quick else 2
    vgg = None
    if args.objective == "reference":
        vgg = VGG19Features().init(jax.random.key(2), jnp.zeros((1, 32, 32, 3)))["params"]

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        rows.append(compile_batch(model, config, vgg, batch, args.size))
        print(f"  batch {batch}: compiled in {rows[-1]['compile_s']:.0f} s", flush=True)
    time_in_turns(rows, model, vgg, config.chunk_size, config.num_warmup_iters, timed_chunks)
    for row in rows:
        print(f"  batch {row['batch']}: {', '.join(f'{t:.3f}' for t in row['times'])} s / step", flush=True)
    new_traces, first_s, second_s = retrace_check(model, config, vgg, args.size)

    single = rows[0]["step_s"] / rows[0]["batch"]
    # The reference's time is a CPU figure of its full objective: compare only like with like.
    cpu_reference = args.objective == "reference" and jax.default_backend() == "cpu"
    reference = args.reference_step_s if cpu_reference else None
    gib = lambda b: f"{b / 2**30:.2f}" if b else "n/a"
    print(
        f"\nsearch at {args.size}x{args.size}, objective {args.objective}, full priors, released F "
        f"(random weights), {timed_chunks} x {config.chunk_size} timed steps after a warm-up chunk, "
        "the batch sizes' chunks called in turn\n"
    )
    print(
        "| batch | compile (s) | s / step | s / image-step | vs batch 1 | whole run / image (5300 steps) "
        "| buffers (GiB) |" + (" vs reference |" if reference else "")
    )
    print("|---|---|---|---|---|---|---|" + ("---|" if reference else ""))
    for r in rows:
        per_image = r["step_s"] / r["batch"]
        whole = per_image * REFERENCE_STEPS
        print(
            f"| {r['batch']} | {r['compile_s']:.0f} | {r['step_s']:.2f} | {per_image:.3f} | "
            f"{per_image / single:.2f} | {whole / 60:.0f} min | {gib(r['buffers'])} |"
            + (f" {per_image / reference:.2f} |" if reference else "")
        )
    if jax.default_backend() == "gpu":
        peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
        print(f"\nGPU allocator peak, all batch sizes' states held at once: {gib(peak)} GiB")
    if reference:
        print(
            f"\nreference (PyTorch, one image): {reference} s / step, "
            f"{reference * REFERENCE_STEPS / 60:.0f} min per image"
        )
    print(
        f"\nrecompiles for a second iteration count: {new_traces} "
        f"(deblur() with {config.chunk_size} and {3 * config.chunk_size} steps: {first_s:.1f} s, {second_s:.1f} s)"
    )

    if args.memory:
        sizes = [tuple(int(v) for v in s.split("x")) if "x" in s else (int(s), int(s)) for s in args.memory.split(",")]
        print("\nXLA buffers of one search chunk, batch 1:")
        table = memory_table(model, config, vgg, sizes)
        print("| image | variant | buffers (GiB) | compile (s) |\n|---|---|---|---|")
        for size, name, size_bytes, seconds in table:
            print(f"| {size} | {name} | {gib(size_bytes)} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
