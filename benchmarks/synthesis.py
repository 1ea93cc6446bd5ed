"""Blur synthesis: throughput of transfer and sampling, and whether the synthesised blur is right.

    python benchmarks/synthesis.py                 # images/s, released wVAE config, 256x256 and 720x1280
    python benchmarks/synthesis.py --quick         # fewer runs, smaller batches
    python benchmarks/synthesis.py --quality kernelspace_jax/assets/synthetic_tiny \\
        --vae kernelspace_jax/assets/synthetic_tiny_vae

Throughput: the released configuration (random init; speed does not depend on the weights), jitted
`synthesis.transfer` (G on a source pair, then F on the target, same size) and `synthesis.sample` (F
with a prior kernel), batched; the median of --repeats runs after a warm-up, as a markdown table.

Quality (--quality CHECKPOINT): held-out synthetic pairs whose blur is known. Each source pair's
kernel is transferred onto another held-out sharp image of another size (source 256x256, target
384x640: kernel grids 2x2 and 3x5), whose true blurry version is that sharp image blurred by the
source's own camera-shake kernels (non-uniform ones stretched over the frame). PSNR against it:
  identity                      the target sharp image itself (no blur)
  transfer, fit=resize|tile|mean  synthesis.transfer with the kernel mean (and a VAE draw)
  another pair's kernel         the kernel of a different pair, resized (is the blur specific?)
  G on the target itself        F(x_t, G(x_t, y_t)): what a kernel from the target's own pair gives
and the reference's log: F(source sharp, k) and the source sharp image against the source blurry.
Diversity: mean pairwise L1 (in 8-bit levels) and PSNR between blurs of the same image made with
different kernels: transferred from other pairs, sampled from the prior (with --vae, or a VAE
checkpoint), and, for scale, the true synthetic camera-shake blurs of those pairs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import machine_description  # benchmarks/models.py

import kernelspace_jax as ksj
from kernelspace_jax import synthesis
from kernelspace_jax.data import synthetic

SIZES = {"256x256": (256, 256), "720x1280": (720, 1280)}


# ---------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------


def _time(fn, args, repeats: int) -> tuple[float, float]:
    """(compile seconds, median seconds of `repeats` runs after one warm-up)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        if i:
            times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def throughput(quick: bool, repeats: int) -> None:
    model = ksj.init(jax.random.key(0), ksj.kernel_space.config.released(use_vae=True))
    batches = {"256x256": 2 if quick else 8, "720x1280": 1 if quick else 2}
    transfer = jax.jit(synthesis.transfer)
    sample = jax.jit(synthesis.sample)
    rows = []
    for name, (height, width) in SIZES.items():
        batch = batches[name]
        rng = np.random.default_rng(0)
        sharp = jnp.asarray(rng.random((batch, height, width, 3), np.float32))
        blurry = jnp.asarray(rng.random((batch, height, width, 3), np.float32))
        key = jax.random.key(1)
        for what, fn, args in (
            ("transfer (G + F)", transfer, (model, key, sharp, blurry, sharp)),
            ("sample (F)", sample, (model, key, sharp)),
        ):
            compile_s, median = _time(fn, args, repeats)
            rows.append((what, name, batch, batch / median, median, compile_s))
            print(f"  {what} {name} batch {batch}: {batch / median:.3f} images/s", file=sys.stderr)
    print(f"released wVAE config, float32, median of {repeats} runs after one warm-up\n")
    print("| what | size | batch | images/s | s / batch | compile s |")
    print("|---|---|---|---|---|---|")
    for what, name, batch, rate, median, compile_s in rows:
        print(f"| {what} | {name} | {batch} | {rate:.3g} | {median:.3g} | {compile_s:.1f} |")


# ---------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,) PSNR in dB of images in [0, 1]."""
    return -10 * np.log10(np.maximum(np.mean((a - b) ** 2, axis=(1, 2, 3)), 1e-20))


def held_out_cases(num: int, source_size, target_size, seed: int, nonuniform_prob: float):
    """Source pairs (test split), target sharp images (val split, another size), the targets' true blur."""
    common = dict(kernel_size_range=(9, 31), noise_sigma_range=(0.0, 0.0), nonuniform_prob=nonuniform_prob)
    sources = synthetic.SyntheticPairs(
        synthetic.SyntheticBlurConfig(crop_size=source_size, seed=seed, **common), "test", num
    )
    targets = synthetic.SyntheticPairs(
        synthetic.SyntheticBlurConfig(crop_size=target_size, seed=seed + 1, **common), "val", num
    )
    cases = []
    for i in range(num):
        source, target = sources[i], targets[i]
        cases.append(
            {
                "source_sharp": source["sharp"],
                "source_blurry": source["blurry"],
                "target_sharp": target["sharp"],
                # The source's kernels over the target frame (reflect boundary, as F pads).
                "target_blurry": synthetic.nonuniform_blur(target["sharp"], source["kernel"]),
                "kernel": source["kernel"],
                "uniform": bool(source["uniform"]),
            }
        )
    return cases


def _stack(cases, key):
    return jnp.asarray(np.stack([c[key] for c in cases]))


def quality(model, vae, num: int, batch: int, seed: int) -> None:
    blur = jax.jit(synthesis.apply_kernel, static_argnames="fit")
    extract = jax.jit(lambda m, x, y: m.extract(x, y))
    cases = held_out_cases(num, (256, 256), (384, 640), seed, nonuniform_prob=0.5)
    scores: dict[str, list[np.ndarray]] = {}

    def add(name, value):
        scores.setdefault(name, []).append(np.asarray(value))

    means = []
    for start in range(0, num, batch):
        part = cases[start : start + batch]
        xs, ys = _stack(part, "source_sharp"), _stack(part, "source_blurry")
        xt, yt = _stack(part, "target_sharp"), _stack(part, "target_blurry")
        mean, sigma = extract(model, xs, ys)
        means.append(mean)
        add("identity", _psnr(xt, yt))
        for fit in synthesis.FIT_METHODS:
            add(f"transfer, fit={fit}", _psnr(blur(model, xt, mean, fit=fit), yt))
        if model.config.use_vae:
            kernel = model.sample(jax.random.key(start), mean, sigma)
            add("transfer, VAE draw", _psnr(blur(model, xt, kernel), yt))
        add("G on the target itself", _psnr(blur(model, xt, extract(model, xt, yt)[0]), yt))
        add("source: F(x, k) vs y (reference's log)", _psnr(blur(model, xs, mean), ys))
        add("source: identity x vs y", _psnr(xs, ys))
    means = jnp.concatenate(means)
    # Another pair's kernel: pair i gets pair (i + 1)'s, same targets.
    for start in range(0, num, batch):
        part = cases[start : start + batch]
        other = jnp.roll(means, -1, axis=0)[start : start + len(part)]
        add(
            "another pair's kernel",
            _psnr(blur(model, _stack(part, "target_sharp"), other), _stack(part, "target_blurry")),
        )
    uniform = np.asarray([c["uniform"] for c in cases])
    print(
        f"{num} held-out synthetic pairs ({uniform.sum()} uniform, {(~uniform).sum()} non-uniform blur), "
        f"source 256x256 -> target 384x640, seed {seed}\n"
    )
    print("| PSNR (dB) vs the target's true blur | all | uniform | non-uniform |")
    print("|---|---|---|---|")
    for name, values in scores.items():
        v = np.concatenate(values)
        print(f"| {name} | {v.mean():.2f} | {v[uniform].mean():.2f} | {v[~uniform].mean():.2f} |")
    diversity(model, vae, cases, means, seed)


def _cell_psfs(kernels: np.ndarray, height: int, width: int, grid: tuple[int, int]) -> np.ndarray:
    """The true PSF at the centre of each 128-pixel cell of a (height, width) frame: (*grid, k, k)."""
    weights = synthetic.region_weights(height, width, kernels.shape[:2])
    rows = np.minimum(64 + 128 * np.arange(grid[0]), height - 1)
    cols = np.minimum(64 + 128 * np.arange(grid[1]), width - 1)
    return np.einsum("abij,abkl->ijkl", weights[:, :, rows][:, :, :, cols], kernels)


def fit_check(num: int, seed: int) -> None:
    """Model-free: true PSFs stand in for latent cells; which fit of a source grid blurs the target right?

    On `num` non-uniformly blurred held-out pairs (a uniform blur is the same whatever the fit):
    source cells are the true PSFs at the 2x2 cell centres of the 256x256 source, fitted to the
    384x640 target's 3x5 grid by each `fit_kernel` method and applied over the target with the
    data's own smooth interpolation between cell centres.
    """
    results: dict[str, list[float]] = {}
    for case in held_out_cases(num, (256, 256), (384, 640), seed, nonuniform_prob=1.0):
        kernels, sharp, truth = case["kernel"], case["target_sharp"], case["target_blurry"]
        size = kernels.shape[-1]
        source = _cell_psfs(kernels, 256, 256, (2, 2)).reshape(1, 2, 2, size * size)
        fitted = {
            f"fit={method}": np.asarray(synthesis.fit_kernel(jnp.asarray(source), (3, 5), method=method))[0]
            for method in synthesis.FIT_METHODS
        }
        fitted["the target's own 3x5 cells (best possible)"] = _cell_psfs(kernels, 384, 640, (3, 5))
        results.setdefault("identity", []).append(float(_psnr(sharp[None], truth[None])[0]))
        for name, grid in fitted.items():
            grid = grid.reshape(3, 5, size, size)
            blurred = synthetic.nonuniform_blur(sharp, grid, synthetic.region_weights(384, 640, (3, 5)))
            results.setdefault(name, []).append(float(_psnr(blurred[None], truth[None])[0]))
    print(f"\nFitting a 2x2 grid (256x256 source) to 3x5 (384x640 target), {num} non-uniform blurs, true PSFs\n")
    print("| cells of the target | PSNR (dB) vs its true blur |")
    print("|---|---|")
    for name, values in results.items():
        print(f"| {name} | {np.mean(values):.2f} |")


def _pairwise(images: np.ndarray) -> tuple[float, float]:
    """Mean pairwise L1 (8-bit levels) and PSNR over the (S, H, W, 3) blurs of one image."""
    l1, psnr = [], []
    for a, b in itertools.combinations(range(len(images)), 2):
        l1.append(255 * np.mean(np.abs(images[a] - images[b])))
        psnr.append(float(_psnr(images[a][None], images[b][None])[0]))
    return float(np.mean(l1)), float(np.mean(psnr))


def diversity(model, vae, cases, means, seed: int, images: int = 4, samples: int = 6) -> None:
    """Blurs of the same sharp image with `samples` kernels of each kind, pairwise differences."""
    blur = jax.jit(synthesis.apply_kernel, static_argnames="fit")
    rows = {}
    rng = np.random.default_rng(seed)
    for i in range(images):
        sharp = cases[i]["target_sharp"]
        x = jnp.asarray(np.repeat(sharp[None], samples, axis=0))
        kinds = {
            "true camera-shake blurs (synthetic kernels)": np.stack(
                [synthetic.uniform_blur(sharp, synthetic.random_kernel(rng, 21)) for _ in range(samples)]
            ),
            "transferred from other pairs": np.asarray(blur(model, x, means[:samples])),
        }
        prior = vae if vae is not None else (model if model.config.use_vae else None)
        if prior is not None:
            kinds["sampled from the VAE prior (scale 1.2)"] = np.asarray(
                synthesis.sample(prior, jax.random.key(seed + i), x)[0]
            )
        for name, blurs in kinds.items():
            l1, psnr = _pairwise(blurs)
            blur_psnr = float(np.mean(_psnr(blurs, np.asarray(x))))
            rows.setdefault(name, []).append((l1, psnr, blur_psnr))
    print(f"\nDiversity: {samples} blurs of each of {images} held-out 384x640 images\n")
    print("| kernels | pairwise L1 (8-bit levels) | pairwise PSNR (dB) | PSNR vs sharp (dB) |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        l1, psnr, blur_psnr = np.mean(values, axis=0)
        print(f"| {name} | {l1:.2f} | {psnr:.2f} | {blur_psnr:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 runs, batches 2 (256x256) and 1 (720x1280)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (default 7; --quick: 3)")
    parser.add_argument(
        "--quality",
        metavar="CHECKPOINT",
        default=None,
        help="measure the synthesised blur with this trained model instead of the speed",
    )
    parser.add_argument("--vae", metavar="CHECKPOINT", default=None, help="a VAE model for the prior samples")
    parser.add_argument("--num", type=int, default=24, help="held-out pairs of the quality check")
    parser.add_argument("--batch", type=int, default=4, help="batch of the quality check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fit-check",
        action="store_true",
        help="only the model-free comparison of fit_kernel methods (no checkpoint needed)",
    )
    args = parser.parse_args(argv)
    print(machine_description() + "\n")
    if args.fit_check:
        fit_check(args.num, args.seed)
    elif args.quality:
        model = ksj.load(os.path.abspath(args.quality))
        vae = ksj.load(os.path.abspath(args.vae)) if args.vae else None
        print(f"checkpoint {args.quality}: {model.config}" + (f"; VAE {args.vae}" if vae else "") + "\n")
        quality(model, vae, args.num, args.batch, args.seed)
    else:
        throughput(args.quick, 3 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
