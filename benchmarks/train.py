"""Training throughput of the full kernel space: steps/s, images/s and the fraction of peak FLOP/s.

    python benchmarks/train.py                      # released woVAE config, 256x256, batch 8
    python benchmarks/train.py --vae --batch 16 --peak-tflops 989   # e.g. an H100's bf16 dense peak

Times the library's own jitted, sharded `training.compile_train_step` (forward, backward, Adam; state
donated) over all local devices, after one warm-up step; the median of --repeats runs is reported.
Model FLOPs per step come from XLA's cost analysis of the lowered step (before optimisation, so that
the convolutions a GPU hands to cuDNN are counted as on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, ".")
from kernelspace_jax.configs.common import reference_recipe
from kernelspace_jax.devices import data_mesh
from kernelspace_jax.kernel_space.model import init_params
from kernelspace_jax.training import step as training


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", action="store_true", help="the wVAE configuration")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the machine's peak, for the fraction")
    args = parser.parse_args(argv)

    config = reference_recipe("released_wvae" if args.vae else "released_wovae")
    config.data.batch_size = args.batch
    config.compute_dtype = args.dtype
    model_config = training.model_config(config)
    tx = training.make_optimizer(config)
    mesh = data_mesh()
    state = training.create_state(init_params(jax.random.key(0), model_config), tx)
    step = training.compile_train_step(config, tx, mesh)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, 3)
    batch = {"sharp": rng.random(shape, np.float32), "blurry": rng.random(shape, np.float32)}

    start = time.perf_counter()
    lowered = step.lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # Counted before optimisation: on GPUs the compiled program's count leaves out cuDNN's convolutions.
    analysis = lowered.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    flops = float(analysis.get("flops", float("nan"))) if analysis else float("nan")
    times = []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        if i:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}")
    print(
        f"{'VAE' if args.vae else 'no VAE'}, batch {args.batch} at {args.size}x{args.size}, {args.dtype}; "
        f"median of {args.repeats} steps after a warm-up"
    )
    print("| compile s | step s | steps/s | images/s | GFLOP/step | TFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|")
    tflops = flops / median / 1e12
    fraction = f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "-"
    print(
        f"| {compile_s:.1f} | {median:.3f} | {1 / median:.3f} | {args.batch / median:.2f} | {flops / 1e9:.1f} | "
        f"{tflops:.3f} | {fraction} |"
    )


if __name__ == "__main__":
    main()
