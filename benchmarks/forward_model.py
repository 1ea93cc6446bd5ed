"""How good a forward model the learned F is for a search: F(x', k) against y for candidate images x'.

    python benchmarks/forward_model.py                  # the shipped model, the val cases of deblur_quality
    python benchmarks/forward_model.py --split test --num 16

A blind search minimises a data term ||F(x, k) - y||. It can only find the sharp image if the true pair
(x, G(x, y)) reproduces y better than the trivial answers do: the blurry image itself with the
"no blur" kernel G(y, y), or y with any kernel. The table prints PSNR(F(x', k), y) for each candidate
(mean and range over the cases), with an exact convolution by the true PSF beside it for comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernelspace_jax as ksj
from benchmarks.deblur_quality import cases
from kernelspace_jax.data.synthetic import uniform_blur


def psnr(a, b) -> np.ndarray:
    """(B,) PSNR of a against b, a clipped to [0, 1]."""
    mse = np.mean((np.clip(np.asarray(a), 0, 1) - np.asarray(b)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1.0 / mse)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--vae", action="store_true", help="the shipped VAE model")
    args = parser.parse_args(argv)

    model = ksj.load_shipped(vae=args.vae)
    items = cases(args.split, args.num)
    x = jnp.stack([c["sharp"] for c in items])
    y = jnp.stack([c["blurry"] for c in items])
    noisy = x + 0.02 * jax.random.normal(jax.random.key(0), x.shape)
    true_k, _ = model.extract(x, y)
    no_blur, _ = model.extract(y, y)
    zero = jnp.zeros_like(true_k)
    reblurred_y = jnp.stack([uniform_blur(c["blurry"], c["psf"]) for c in items])
    exact_x = jnp.stack([uniform_blur(c["sharp"], c["psf"]) for c in items])
    rows = [
        ("blurry input y against the sharp x (for scale)", psnr(y, x)),
        ("F(x, G(x, y)): the true pair", psnr(model.blur(x, true_k), y)),
        ("F(y, G(y, y)): x = y, the 'no blur' kernel", psnr(model.blur(y, no_blur), y)),
        ("F(y, G(x, y)): x = y, the true pair's kernel", psnr(model.blur(y, true_k), y)),
        ("F(x, 0) / F(y, 0): the zero kernel", (psnr(model.blur(x, zero), y), psnr(model.blur(y, zero), y))),
        ("F(x + 0.02 noise, G(x, y))", psnr(model.blur(noisy, true_k), y)),
        ("F(x, G(y, y)): the sharp image, no blur", psnr(model.blur(x, no_blur), y)),
        ("F(x, G(x', y')) of another pair", psnr(model.blur(x, jnp.roll(true_k, 1, axis=0)), y)),
        ("exact: x * psf (noise only)", psnr(exact_x, y)),
        ("exact: y * psf (x = y)", psnr(reblurred_y, y)),
    ]
    print(f"{'vae' if args.vae else 'woVAE'} shipped model, {args.split} cases, {len(items)} images 256x256\n")
    print("| candidate | PSNR against y (dB): mean | min | max |\n|---|---|---|---|")
    for name, values in rows:
        if isinstance(values, tuple):
            print(f"| {name} | {values[0].mean():.2f} / {values[1].mean():.2f} | | |")
        else:
            print(f"| {name} | {values.mean():.2f} | {values.min():.2f} | {values.max():.2f} |")


if __name__ == "__main__":
    main()
