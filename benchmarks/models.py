"""Parameter counts and speed of the kernel-space network (F, G and one training step).

    python benchmarks/models.py            # full run: counts, then timings at 256x256, batch 2, woVAE
    python benchmarks/models.py --quick    # fewer repeats
    python benchmarks/models.py --peak-tflops 67   # also the fraction of that peak FLOP/s

Prints a table of parameter counts per submodule for the released woVAE and wVAE configurations
(asserted equal to the reference's), then the compile time and the median wall time (after warm-up)
of G (`extract`), F (`blur`) and one training step (forward, backward and an optax Adam update of
`kernel_space_loss`, params and optimizer state donated), with the FLOPs XLA's cost analysis counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_utils import cpu_name

from kernelspace_jax import xla_options
from kernelspace_jax.kernel_space import config as configs
from kernelspace_jax.kernel_space.model import abstract_params, blur, extract, init_params, kernel_shape
from kernelspace_jax.training.objective import kernel_space_loss

SUBMODULES = ("features", "extractor", "adapter", "reconstruction")
LABELS = {
    "features": "feature extractor",
    "extractor": "G head (KernelExtractor)",
    "adapter": "adapter (F's U-Net)",
    "reconstruction": "reconstruction trunk",
}
# Counted from the authors' KernelWizard (options/kernel_encoding/GOPRO/{woVAE,wVAE}.yml).
REFERENCE_COUNTS = {
    False: {
        "features": 814_208,
        "extractor": 25_542_656,
        "adapter": 21_037_120,
        "reconstruction": 1_811_203,
        "total": 49_205_187,
    },
    True: {
        "features": 814_208,
        "extractor": 91_602_944,
        "adapter": 21_037_120,
        "reconstruction": 1_811_203,
        "total": 115_265_475,
    },
}
# Dense peak TFLOP/s for float32 inputs as XLA runs them by default on these GPUs (TF32 tensor cores).
KNOWN_PEAK_TFLOPS = {"H100": 494.7, "H200": 494.7, "A100": 156.0}


def parameter_counts(use_vae: bool) -> dict[str, int]:
    shapes = abstract_params(configs.released(use_vae))
    size = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
    counts = {name: size(shapes[name]) for name in SUBMODULES}
    counts["total"] = size(shapes)
    return counts


def print_counts() -> None:
    counts = {use_vae: parameter_counts(use_vae) for use_vae in (False, True)}
    print(f"{'parameters':<28}{'woVAE':>14}{'wVAE':>14}")
    for name in (*SUBMODULES, "total"):
        print(f"{LABELS.get(name, name):<28}{counts[False][name]:>14,}{counts[True][name]:>14,}")
    for use_vae in (False, True):
        expected = REFERENCE_COUNTS[use_vae]
        assert counts[use_vae] == expected, f"use_vae={use_vae}: {counts[use_vae]} != reference {expected}"
    print("(equal to the reference's counts)\n")


def machine_description() -> str:
    lines = [f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}"]
    cpu = cpu_name() or platform.processor() or platform.machine()
    lines.append(f"CPU: {cpu}, {os.cpu_count()} logical cores")
    if jax.default_backend() != "cpu":
        lines.append(f"accelerator: {jax.devices()[0].device_kind}")
    lines.append(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    return "\n".join(lines)


def cost_flops(lowered) -> float | None:
    """XLA's FLOP count of the lowered program: before optimisation, so the convolutions a GPU hands
    to cuDNN are counted too (the compiled program's count leaves them out there)."""
    try:
        analysis = lowered.cost_analysis()
    except Exception:
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def block(tree):
    return jax.tree.map(lambda x: x.block_until_ready(), tree)


def reference_times(what: str, args, repeats: int) -> list[float]:
    """The reference's step times (PyTorch, in `--reference-python`), from benchmarks/reference_step.py."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_step.py")
    command = [args.reference_python, script, "--repo", args.reference_repo, "--what", what, "--json"]
    command += ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(repeats)]
    command += ["--threads", str(args.reference_threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the reference's {what} step failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["times"]


def bench(name, jitted, args, repeats, rounds=1, threaded=None, reference=None):
    """Compiles `jitted` for `args` (timed), runs it once to warm up, then `rounds` x `repeats` timed runs.

    `threaded(outputs, args) -> args` feeds donated outputs back in (the training step).
    `reference(repeats) -> times`, if given, runs after each round, so that both see the machine alike.
    """
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = cost_flops(lowered)
    times, cpu_times, ref_times = [], [], []
    for r in range(rounds):
        for i in range(repeats + (r == 0)):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = block(compiled(*args))
            if r or i:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            if threaded is not None:
                args = threaded(out, args)
        if reference is not None:
            ref_times += reference(repeats)
    return {
        "name": name,
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_s": statistics.median(cpu_times),
        "times": times,
        "flops": flops,
        "reference_s": statistics.median(ref_times) if ref_times else None,
        "reference_times": ref_times,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed runs instead of --repeats")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (default 7)")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--vae", action="store_true", help="time the wVAE configuration instead of woVAE")
    parser.add_argument("--only", default="G,F,train", help="comma-separated subset of G,F,train")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s of the device, for the achieved fraction (on known GPUs a dense-TF32 guess by default)",
    )
    parser.add_argument(
        "--stock-xla",
        action="store_true",
        help="compile with no compiler options, as a user's plain jax.jit (importing kernelspace_jax still sets its "
        "XLA_FLAGS; KERNELSPACE_JAX_XLA_FLAGS=0 in the environment gives XLA's stock CPU settings)",
    )
    parser.add_argument("--skip-counts", action="store_true", help="skip the parameter-count table")
    parser.add_argument(
        "--reference-repo",
        default=None,
        help="checkout of the authors' repository: time the reference's G, F and training step too, interleaved "
        "with ours, and print the ratio (needs PyTorch in --reference-python)",
    )
    parser.add_argument("--reference-python", default=sys.executable, help="Python with PyTorch for the reference")
    parser.add_argument("--reference-threads", type=int, default=os.cpu_count(), help="torch threads (default: all)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and the reference's (default 2)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    print(machine_description() + "\n")
    if not args.skip_counts:
        print_counts()

    cfg = configs.released(args.vae)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, cfg.image_channels)
    sharp = jnp.asarray(rng.random(shape, np.float32))
    blurry = jnp.asarray(rng.random(shape, np.float32))
    kshape = (args.batch, *kernel_shape(cfg, args.size, args.size))
    eps = jnp.asarray(rng.standard_normal(kshape, np.float32))
    params = init_params(jax.random.key(0), cfg)

    tx = optax.adam(1e-4, b1=0.9, b2=0.99)  # the reference's lr_G, beta1, beta2
    opt_state = jax.jit(tx.init)(params)

    def train_step(params, opt_state, sharp, blurry, eps):
        (loss, _), grads = jax.value_and_grad(kernel_space_loss, has_aux=True)(
            params, sharp, blurry, eps, config=cfg, pixel_weight=1.0, kl_weight=1e-5 if cfg.use_vae else 0.0
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opts = None if args.stock_xla else xla_options.compiler_options()
    print(f"compiler options: {opts}; XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}\n")
    g = jax.jit(lambda p, x, y: extract(p, x, y, config=cfg), compiler_options=opts)
    f = jax.jit(lambda p, x, k: blur(p, x, k, config=cfg), compiler_options=opts)
    step = jax.jit(train_step, donate_argnums=(0, 1), compiler_options=opts)
    kernel = eps * 0.01

    rounds = args.rounds if args.reference_repo else 1

    def reference(what):
        return (lambda n: reference_times(what, args, n)) if args.reference_repo else None

    results = []
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    if "G" in wanted:
        results.append(bench("G (extract)", g, (params, sharp, blurry), repeats, rounds, reference=reference("G")))
    if "F" in wanted:
        results.append(bench("F (blur)", f, (params, sharp, kernel), repeats, rounds, reference=reference("F")))
    if "train" in wanted:
        # The step donates params and optimizer state, so copies go in and its outputs are fed back.
        state = (jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, opt_state), sharp, blurry, eps)
        thread = lambda out, a: (out[0], out[1], *a[2:])
        results.append(
            bench("train step (fwd+bwd+Adam)", step, state, repeats, rounds, thread, reference=reference("train"))
        )

    peak = args.peak_tflops
    peak_source = "--peak-tflops"
    if peak is None and jax.default_backend() == "gpu":
        kind = jax.devices()[0].device_kind
        for name, value in KNOWN_PEAK_TFLOPS.items():
            if name in kind:
                peak, peak_source = value, f"guess for {name}, dense TF32"
    variant = "wVAE" if cfg.use_vae else "woVAE"
    print(
        f"{variant}, {args.batch}x{args.size}x{args.size}x{cfg.image_channels}, float32, "
        f"median of {rounds * repeats} runs after one warm-up (CPU s: median process CPU time, all threads; "
        f"TFLOP/s: XLA's FLOP count / median)"
        + (f"; reference: PyTorch, {rounds} rounds alternating with ours" if args.reference_repo else "")
    )
    header = f"{'what':<28}{'compile s':>10}{'median s':>10}{'min s':>9}{'CPU s':>9}{'GFLOP':>10}{'TFLOP/s':>9}"
    if peak:
        header += f"{'of peak':>9}"
    if args.reference_repo:
        header += f"{'reference s':>13}{'ratio':>7}"
    print(header)
    for r in results:
        gflop = r["flops"] / 1e9 if r["flops"] else float("nan")
        tflops = gflop / 1e3 / r["median_s"]
        line = (
            f"{r['name']:<28}{r['compile_s']:>10.2f}{r['median_s']:>10.3f}{r['min_s']:>9.3f}{r['cpu_s']:>9.3f}"
            f"{gflop:>10.1f}{tflops:>9.3f}"
        )
        if peak:
            line += f"{tflops / peak:>9.1%}"
        if r["reference_s"]:
            line += f"{r['reference_s']:>13.3f}{r['median_s'] / r['reference_s']:>7.2f}"
        print(line)
    if peak:
        print(f"peak {peak} TFLOP/s ({peak_source})")
    print("all times (s): " + "; ".join(f"{r['name']}: " + ", ".join(f"{t:.3f}" for t in r["times"]) for r in results))
    if args.reference_repo:
        print(
            "reference times (s): "
            + "; ".join(f"{r['name']}: " + ", ".join(f"{t:.3f}" for t in r["reference_times"]) for r in results)
        )


if __name__ == "__main__":
    main()
