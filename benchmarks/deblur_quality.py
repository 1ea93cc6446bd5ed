"""How much blind deblurring gains on blur nobody tuned on: PSNR/SSIM gains over the blurry input.

    python benchmarks/deblur_quality.py --split test --num 16 --methods blurry,wiener,fast   # README's table
    python benchmarks/deblur_quality.py --split val --num 8 --methods fast --set num_iters=200 --label short
    python benchmarks/deblur_quality.py --split val --num 8 --methods exact_conv      # exact forward model
    python benchmarks/deblur_quality.py --clock docs/deblur_clock.png    # scikit-image's clock, no ground truth

Cases (`cases`): 256x256 crops of photographs that no shipped model trained on, blurred by a uniform
camera shake whose support spans 6-30 px, plus Gaussian noise with sigma in [0.005, 0.01]. Even cases
take a trajectory kernel (Boracchi & Foi, `data.synthetic.random_kernel`, 7-31 px grids), odd cases
one of the 100 PSFs recorded from real camera shake (`assets.recorded_psfs`, those spanning 6 px or
more; trajectories spanning less are drawn again). The splits share nothing: `val` (where recipes are
chosen) crops chelsea, camera and gravel and takes the even-numbered recorded PSFs; `test` (reported
once) crops the two views of scikit-image's stereo motorcycle photograph and takes the odd-numbered PSFs.

Methods:
  blurry            the input itself (gain 0 by definition: the baseline);
  wiener            the oracle ceiling: non-blind Wiener deconvolution with the *true* PSF and noise
                    (scikit-image), per channel;
  <recipe>          a deblur_generic variant (fast, reference, local) with the shipped model, one
                    image at a time (the first image's time includes compilation);
  exact_conv        the control: the same search and recipe, F replaced by a true convolution with a
                    31x31 PSF (softmax of the kernel prior's output: classical DIP blind deconvolution);
  true_kernel       the recipe's search of x alone, k fixed to G(x, y) of the true pair (an oracle
                    kernel in F's latent space).
Every method's per-image rows go to --out (JSON lines, appended); the table prints the means.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernelspace_jax as ksj
from kernelspace_jax import configs
from kernelspace_jax.assets import recorded_psfs
from kernelspace_jax.data.synthetic import load_source, random_kernel, uniform_blur

SOURCES = {
    "val": ("skimage:chelsea", "skimage:camera", "skimage:gravel"),
    "test": ("motorcycle_left", "motorcycle_right"),
}
NOISE_RANGE = (0.005, 0.01)
MIN_PSF_EXTENT = 6  # px: the recorded PSFs spanning less are left out
EXACT_KERNEL_SIZE = 31


@functools.cache
def _photo(source: str, size: int) -> np.ndarray:
    """(H, W, 3) uint8 of a source name; the motorcycle views come from skimage.data.stereo_motorcycle."""
    if source.startswith("motorcycle_"):
        import skimage.data

        left, right, _ = skimage.data.stereo_motorcycle()
        return left if source.endswith("left") else right
    return load_source(source, size, size)


def psf_extent(psf: np.ndarray) -> int:
    """Side of the bounding box of the PSF's entries above 1% of its maximum, in pixels."""
    rows, cols = np.nonzero(psf > 0.01 * psf.max())
    return int(max(np.ptp(rows), np.ptp(cols))) + 1


def recorded_for(split: str) -> list[np.ndarray]:
    """The recorded PSFs of a split: those spanning >= MIN_PSF_EXTENT px, even positions for val, odd for test."""
    eligible = [p for p in recorded_psfs() if psf_extent(p) >= MIN_PSF_EXTENT]
    return eligible[0::2] if split == "val" else eligible[1::2]


def cases(split: str, num: int, size: int = 256, seed: int = 0) -> list[dict]:
    """`num` deterministic cases of a split: dicts of sharp, blurry (size, size, 3) float32, psf, noise, name."""
    rng = np.random.default_rng([seed, ("val", "test").index(split)])
    psfs, sources, out = recorded_for(split), SOURCES[split], []
    for i in range(num):
        if i % 2:
            psf, kind = psfs[rng.integers(len(psfs))], "recorded"
        else:
            psf, kind = np.ones((1, 1)), "trajectory"
            while psf_extent(psf) < MIN_PSF_EXTENT:  # a path that curled up into a few pixels: draw again
                psf = random_kernel(rng, 2 * int(rng.integers(3, 16)) + 1)  # 7..31 px grids
        source = sources[i % len(sources)]
        photo = _photo(source, size + 64)
        pad = psf.shape[0] // 2
        top = rng.integers(photo.shape[0] - size - 2 * pad + 1)
        left = rng.integers(photo.shape[1] - size - 2 * pad + 1)
        window = photo[top : top + size + 2 * pad, left : left + size + 2 * pad].astype(np.float32) / 255.0
        blurred = uniform_blur(window, psf)[pad : pad + size, pad : pad + size]
        sigma = float(rng.uniform(*NOISE_RANGE))
        blurry = np.clip(blurred + sigma * rng.standard_normal(blurred.shape), 0, 1).astype(np.float32)
        out.append(
            {
                "name": f"{split}{i:02d}_{source.split(':')[-1]}_{kind}{psf_extent(psf)}px",
                "sharp": np.ascontiguousarray(window[pad : pad + size, pad : pad + size]),
                "blurry": blurry,
                "psf": psf,
                "noise": sigma,
            }
        )
    return out


def metrics(image: np.ndarray, sharp: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    image = np.clip(image, 0, 1)
    psnr = peak_signal_noise_ratio(sharp, image, data_range=1.0)
    return float(psnr), float(structural_similarity(sharp, image, channel_axis=-1, data_range=1.0))


def wiener(case: dict) -> np.ndarray:
    """Non-blind Wiener deconvolution with the true PSF; balance = noise variance / image variance."""
    from skimage.restoration import wiener as sk_wiener

    blurry, psf = case["blurry"], case["psf"]
    pad = psf.shape[0]
    padded = np.pad(blurry, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # 30: the factor best on the val split (1 to 300 tried)
    balance = case["noise"] ** 2 / max(float(np.var(blurry)), 1e-6) * 30.0
    channels = [sk_wiener(padded[..., c], psf, balance, clip=False) for c in range(3)]
    return np.stack(channels, -1)[pad:-pad, pad:-pad]


# ---------------------------------------------------------------------------------------------
# The exact-forward-model control: F(x, k) = x * softmax(k) (a true convolution)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExactConfig:
    """What the search reads of a model's config: the latent kernel's channels and the grid's minimum."""

    kernel_dim: int = EXACT_KERNEL_SIZE**2
    extractor_blocks: int = 1  # padded_size: at least 2 cells a side, like the shipped model


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ExactBlur:
    """A stand-in for the kernel space whose F is a true convolution: the latent kernel's cells are
    averaged and softmaxed into one KxK PSF (>= 0, sum 1); zeros are the uniform box blur."""

    config: ExactConfig = dataclasses.field(default_factory=ExactConfig, metadata={"static": True})
    dtype: type = dataclasses.field(default=jnp.float32, metadata={"static": True})

    def kernel_shape(self, height, width):
        return ksj.kernel_space.model.kernel_shape(self.config, height, width)

    def with_dtype(self, dtype):
        return self

    def psf(self, kernel):
        """(B, h, w, K*K) -> (B, K, K)."""
        logits = jnp.mean(kernel, axis=(1, 2))
        return jax.nn.softmax(logits, axis=-1).reshape(-1, EXACT_KERNEL_SIZE, EXACT_KERNEL_SIZE)

    def blur(self, sharp, kernel):
        """A true convolution of each image with its PSF, the border mirrored, by FFT (XLA:CPU runs a
        31x31 per-channel convolution and its gradients several times slower)."""
        pad = EXACT_KERNEL_SIZE // 2
        padded = jnp.pad(sharp, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        shape = padded.shape[1:3]
        spectrum = jnp.fft.rfft2(padded, axes=(1, 2)) * jnp.fft.rfft2(self.psf(kernel), shape, axes=(1, 2))[..., None]
        full = jnp.fft.irfft2(spectrum, shape, axes=(1, 2))  # circular: exact on the valid window below
        return full[:, 2 * pad :, 2 * pad :][:, : sharp.shape[1], : sharp.shape[2]]


def true_kernel_search(model, key, blurry, sharp, config):
    """x alone, k fixed to G(x, y) of the true pair: (B, H, W, 3)."""
    config.update_mode = "fixed_kernel"
    kernel, _ = model.extract(sharp, blurry)
    return ksj.deblur(model, key, blurry, config=config, warmup_kernel=kernel).sharp


def run_method(method: str, case: dict, config_name: str, overrides: list[str], model) -> np.ndarray:
    if method == "blurry":
        return case["blurry"]
    if method == "wiener":
        return wiener(case)
    config = configs.get(config_name)
    for item in overrides:
        field, value = item.split("=", 1)
        node = config
        *parents, leaf = field.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = type(node[leaf])(json.loads(value)) if not isinstance(node[leaf], str) else value
    key = jax.random.key(0)
    blurry = jnp.asarray(case["blurry"])[None]
    if method == "exact_conv":
        return np.asarray(ksj.deblur(ExactBlur(), key, blurry, config=config).sharp[0])
    if method == "true_kernel":
        return np.asarray(true_kernel_search(model, key, blurry, jnp.asarray(case["sharp"])[None], config)[0])
    return np.asarray(ksj.deblur(model, key, blurry, config=config).sharp[0])


def deblur_clock(model, recipe: str, overrides: list[str], path: str) -> None:
    """scikit-image's clock (a photograph with real motion blur, 300x400 gray): blurry | deblurred."""
    import skimage.data

    from kernelspace_jax.io.images import image_grid, write_png

    blurry = np.repeat(skimage.data.clock()[..., None], 3, axis=-1).astype(np.float32) / 255.0
    start = time.perf_counter()
    sharp = run_method("recipe", {"blurry": blurry}, recipe, overrides, model)
    print(f"clock: {recipe} in {time.perf_counter() - start:.0f} s")
    write_png(path, image_grid([(blurry, np.clip(sharp, 0, 1))]))
    print(f"wrote {path} (blurry | deblurred)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--first", type=int, default=0, help="skip the first cases (resume a run)")
    parser.add_argument("--methods", default="blurry,wiener,fast", help="comma-separated (see the docstring)")
    parser.add_argument("--recipe", default="deblur_generic:fast", help="the recipe of exact_conv and true_kernel")
    parser.add_argument("--set", action="append", default=[], help="recipe override field=value (repeatable)")
    parser.add_argument("--label", default="", help="a name for this row")
    parser.add_argument("--out", default="deblur_quality.jsonl")
    parser.add_argument("--save-images", default="", help="a folder for the deblurred PNGs")
    parser.add_argument("--clock", default="", help="a PNG: skimage's clock deblurred by --recipe")
    args = parser.parse_args(argv)

    model = ksj.load_shipped()
    if args.clock:
        deblur_clock(model, args.recipe, args.set, args.clock)
        return
    all_cases = cases(args.split, args.num, args.size)[args.first :]
    table = {}
    for method in args.methods.split(","):
        recipe = f"deblur_generic:{method}" if method not in ("exact_conv", "true_kernel") else args.recipe
        label = method + (f" [{args.label}]" if args.label else "")
        for case in all_cases:
            start = time.perf_counter()
            image = run_method(method, case, recipe, args.set, model)
            seconds = time.perf_counter() - start
            psnr, ssim = metrics(image, case["sharp"])
            psnr0, ssim0 = metrics(case["blurry"], case["sharp"])
            row = dict(
                split=args.split, method=label, recipe=recipe, overrides=args.set, image=case["name"],
                psnr=psnr, ssim=ssim, psnr_gain=psnr - psnr0, ssim_gain=ssim - ssim0, seconds=seconds,
            )  # fmt: skip
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{label:30s} {case['name']:40s} {psnr:6.2f} dB ({psnr - psnr0:+.2f}) SSIM {ssim:.3f} "
                  f"({ssim - ssim0:+.3f}) {seconds:6.1f} s", flush=True)  # fmt: skip
            table.setdefault(label, []).append(row)
            if args.save_images:
                from kernelspace_jax.io.images import to_uint8, write_png

                Path(args.save_images).mkdir(parents=True, exist_ok=True)
                write_png(Path(args.save_images) / f"{case['name']}_{method}.png", to_uint8(np.clip(image, 0, 1)))
    print("\n| method | images | PSNR gain (dB) | worst | SSIM gain | s / image |\n|---|---|---|---|---|---|")
    for label, rows in table.items():
        gains, ssim_gain = [r["psnr_gain"] for r in rows], np.mean([r["ssim_gain"] for r in rows])
        seconds = np.median([r["seconds"] for r in rows])
        mean, worst = np.mean(gains), min(gains)
        print(f"| {label} | {len(rows)} | {mean:+.2f} | {worst:+.2f} | {ssim_gain:+.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
