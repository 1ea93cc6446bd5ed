"""Deblurring of image files (what deblur.py runs): batches by size, resumable outputs, evaluation, demo.

For every input image <name> the output folder gets
  <name>.png            the sharp image x (written last: its presence marks the image done)
  <name>_reblurred.png  F(x, k), clipped to [0, 1]
  <name>_compare.png    blurry | sharp | reblurred, with `compare`
and a line in deblur_log.jsonl. The PNGs carry text chunks saying how they were made (objective,
iterations, seed, checkpoint, status, which output). Images already done are skipped, so an interrupted
run resumes. A search that went non-finite writes its last finite x ("stopped at step S"); a result that
is itself not finite (NaN/inf in x or F(x, k)) is never written: the image is logged as "failed:
non-finite result", stays not done, and `run` exits 1 after the other images.

Everything is checked before the first search (`run`): the search settings (`check_search_config`), the
inputs (each decoded once, `inspect_inputs`), and with ground truth its files and sizes
(`check_ground_truth`).

Nothing of the user's is overwritten: an output folder that is, contains or lies inside an input is
refused before anything is read or written; PNGs that this program wrote are never taken as inputs; a
second run on an output folder that a run is writing to stops at once (a lock file, .deblur.lock).

Images are grouped by the size the networks run at (`model.padded_size`), reflect-padded to it,
deblurred `batch_size` at a time in one compiled call and cropped back. An image's key is
fold_in(key(seed), crc32(name)): its result does not depend on the batch it lands in. With a StyleGAN2
prior (`stylegan2/search.py`) every image must have the generator's size and is searched unpadded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import sys
import time
import types
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kernelspace_jax.deblurring import dip, warmup
from kernelspace_jax.deblurring.dip import deblur, resolve_objective
from kernelspace_jax.deblurring.stylegan2 import search as stylegan2_search
from kernelspace_jax.deblurring.stylegan2.prior import StyleGAN2Prior
from kernelspace_jax.deblurring.stylegan2.search import deblur_stylegan2, objective_name
from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.io.images import (
    IMAGE_SUFFIXES,
    ImageInputError,
    InputImage,
    image_grid,
    inspect_image,
    png_text,
    read_image,
    to_uint8,
    write_png,
)
from kernelspace_jax.kernel_space.inputs import pad_to
from kernelspace_jax.kernel_space.model import MIN_SIDE, KernelSpaceModel, padded_size

LOG_NAME = "deblur_log.jsonl"
METRICS_NAME = "metrics.json"
LOCK_NAME = ".deblur.lock"
SOFTWARE = "kernelspace-jax deblur.py"  # the PNG text that marks this program's outputs
PRIORS = ("generic", "stylegan2")
# config fields recorded in the outputs, those of either search's config
TEXT_FIELDS = ("update_mode", "num_iters", "num_warmup_iters", "num_epochs", "num_x_iters", "num_k_iters")
TEXT_FIELDS += ("warmup_kernel", "kernel_crop", "compute_dtype")
FAILED = "failed: non-finite result"  # the status of an image whose result is not written
# A search's steps in all (warm-up included) at most: its step counters are int32 and its loss history
# keeps 4 bytes per step and image; ten million steps are days of search on any device.
MAX_STEPS = 10_000_000
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def search_steps(config: ml_collections.ConfigDict, prior: str = "generic") -> int:
    """The number of steps a search with `config` runs (warm-up included)."""
    if prior == "stylegan2":
        return config.num_warmup_iters + config.num_epochs * (config.num_x_iters + config.num_k_iters)
    return config.num_warmup_iters + config.num_iters


def check_search_config(
    config: ml_collections.ConfigDict,
    prior: str = "generic",
    has_vgg: bool = False,
    model: KernelSpaceModel | None = None,
) -> None:
    """Raises ValueError (one line) for search settings the search would fail on or misuse later.

    The search's own rules (`settings_from_config` of dip.py or stylegan2/search.py; before the model is
    loaded with a stand-in for it, whose kernel_dim the KernelDIP check then skips), then those the
    searches meet only while running: compute_dtype one of COMPUTE_DTYPES, lr_decays (k_lr_decays with
    the StyleGAN2 prior) >= 1, at most MAX_STEPS steps, a warm-up kernel that is computed or an existing
    file. Cheap: nothing is loaded or compiled.
    """
    stand_in = model if model is not None else types.SimpleNamespace(config=types.SimpleNamespace(kernel_dim=1))
    try:
        if prior == "stylegan2":
            stylegan2_search.settings_from_config(config, stand_in)
        else:
            dip.settings_from_config(config, stand_in, has_vgg)
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ValueError(f"search config: {message}") from None
    try:
        dtype = jnp.dtype(config.compute_dtype).name
    except TypeError:
        dtype = None
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"search config: compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {config.compute_dtype!r}"
        )
    decays = "k_lr_decays" if prior == "stylegan2" else "lr_decays"
    if config[decays] < 1:
        raise ValueError(
            f"search config: {decays} must be >= 1 (the learning rate falls {decays} times over the search), "
            f"got {config[decays]}"
        )
    steps = search_steps(config, prior)
    if steps > MAX_STEPS:
        raise ValueError(f"search config: {steps} search steps in all, above the limit of {MAX_STEPS}")
    spec = config.get("warmup_kernel", "zero")
    if prior == "generic" and spec not in warmup.COMPUTED and not os.path.isfile(spec):
        raise ValueError(
            f"search config: warm-up kernel {spec!r} is neither one of {warmup.COMPUTED} nor an existing "
            ".npy/.npz/.pth file"
        )


def output_paths(output: Path, name: str) -> dict[str, Path]:
    return {
        kind: output / f"{name}{suffix}.png"
        for kind, suffix in (("sharp", ""), ("reblurred", "_reblurred"), ("compare", "_compare"))
    }


def is_done(output: Path, name: str) -> bool:
    """The sharp image (written last) and the re-blurred one exist."""
    paths = output_paths(output, name)
    return paths["sharp"].is_file() and paths["reblurred"].is_file()


class OutputLocationError(ValueError):
    """The output folder would overwrite, or later re-read, the inputs; or another run is writing to it."""


def _input_roots(specs: Sequence[str]) -> list[Path]:
    """The folders a re-run of `specs` searches: folder specs and the fixed part of recursive globs."""
    roots = []
    for spec in specs:
        if Path(spec).is_dir():
            roots.append(Path(spec).resolve())
        elif "**" in spec and not Path(spec).is_file():
            fixed = Path(spec[: min(spec.index(c) for c in "*?[" if c in spec)] or ".")
            roots.append((fixed if fixed.is_dir() else fixed.parent).resolve())
    return roots


def check_output_location(specs: Sequence[str], found: Sequence[tuple[str, Path]], output: str | os.PathLike) -> None:
    """Raises OutputLocationError if `output` is, contains or lies inside an input: a folder searched
    for inputs, or the folder of an input file. Outputs there would overwrite inputs (x.png -> x.png) or
    be read back as inputs by a re-run of the same command."""
    out = Path(output).resolve()
    for root in _input_roots(specs):
        if out == root or root in out.parents or out in root.parents:
            relation = "is" if out == root else ("lies inside" if root in out.parents else "contains")
            raise OutputLocationError(
                f"--output {output} {relation} the input folder {root}: its results would overwrite the "
                "inputs or be read as inputs by the next run; choose an output folder outside the inputs"
            )
    for name, path in found:
        folder = path.resolve().parent
        if out == folder or out in folder.parents:
            raise OutputLocationError(
                f"--output {output} contains the input {path} ({name}): results written there could replace "
                "or be mistaken for inputs; choose an output folder outside the inputs"
            )


def is_deblur_output(path: str | os.PathLike) -> bool:
    """Whether `path` is a PNG written by this program (its Software text chunk says so)."""
    if Path(path).suffix.lower() != ".png":
        return False
    try:
        return png_text(path).get("Software") == SOFTWARE
    except Exception:  # unreadable files are reported by inspect_inputs
        return False


@contextlib.contextmanager
def output_lock(output: Path):
    """Holds an exclusive lock on output/.deblur.lock; OutputLocationError at once if another run holds it."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: one run per folder is up to the user
        yield
        return
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOCK_NAME, "a+", encoding="utf-8") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            raise OutputLocationError(
                f"another deblur.py run (pid {holder}) is writing to {output}; wait for it to finish or "
                "choose another --output"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)
            fcntl.flock(file, fcntl.LOCK_UN)


def image_key(seed: int, name: str) -> jax.Array:
    """The key of image `name`: fold_in(key(seed), crc32(name)) (31 bits, a non-negative int32)."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def inspect_inputs(
    inputs: Sequence[tuple[str, Path]], max_pixels: int, skip_bad: bool, echo: Callable[[str], None]
) -> list[InputImage]:
    """Checks every input's size and decodes it once (`inspect_image`); raises ImageInputError listing all
    bad ones unless skip_bad, which skips them."""
    good, bad, ours = [], [], []
    for name, path in inputs:
        if is_deblur_output(path):
            ours.append(str(path))
            continue
        try:
            good.append(inspect_image(name, path, min_side=MIN_SIDE, max_pixels=max_pixels))
        except ImageInputError as error:
            bad.append(str(error))
    if bad and not skip_bad:
        raise ImageInputError(
            f"{len(bad)} of {len(inputs)} inputs cannot be used (--skip-bad skips them):\n  " + "\n  ".join(bad)
        )
    for message in bad:
        echo(f"skipped: {message}")
    if ours:
        echo(f"skipped {len(ours)} result(s) of an earlier deblur.py run, e.g. {ours[0]}")
    for image in good:
        if image.conversion:
            echo(f"{image.path}: {image.conversion}, converted to 8-bit RGB")
    return good


def batches(model: KernelSpaceModel, images: Sequence[InputImage], batch_size: int) -> list[list[InputImage]]:
    """Images grouped by padded size (sorted), each group cut into batches of at most batch_size."""
    size_of = lambda image: padded_size(model.config, image.height, image.width)
    out = []
    for _, group in itertools.groupby(sorted(images, key=lambda i: (size_of(i), i.name)), key=size_of):
        group = list(group)
        out += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return out


@dataclasses.dataclass
class RunInfo:
    """What goes into every output's PNG text and log line besides the per-image facts."""

    checkpoint: str
    seed: int
    config: ml_collections.ConfigDict
    objective: str
    stylegan2: str = ""  # the StyleGAN2 checkpoint, when that prior is used

    def text(self) -> dict[str, str]:
        prior = {"prior": "stylegan2", "stylegan2": self.stylegan2} if self.stylegan2 else {}
        return {
            "Software": SOFTWARE,
            **prior,
            "objective": self.objective,
            **{field: str(self.config[field]) for field in TEXT_FIELDS if field in self.config},
            "seed": str(self.seed),
            "checkpoint": self.checkpoint,
        }


def deblur_files(
    model: KernelSpaceModel,
    inputs: Sequence[tuple[str, Path]],
    output: str | os.PathLike,
    config: ml_collections.ConfigDict,
    *,
    seed: int = 0,
    batch_size: int = 1,
    vgg_params: Mapping | None = None,
    checkpoint: str = "",
    compare: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    stylegan2: StyleGAN2Prior | None = None,
    stylegan2_checkpoint: str = "",
    inspected: Sequence[InputImage] | None = None,
) -> list[dict]:
    """Deblurs (name, file) inputs into `output` (see the module docstring); returns one record per
    image searched now: name, status ("ok", "stopped at step S" or FAILED: nothing written), seconds,
    loss. With a `stylegan2` prior the search is `deblur_stylegan2` (config: configs/deblur_stylegan2.py),
    on images of its size. `inspected`: `inspect_inputs(inputs, ...)` already run (by `run`, before it
    loads the model), so that the inputs are not decoded twice."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output = Path(output)
    if stylegan2 is None:
        info = RunInfo(checkpoint, seed, config, resolve_objective(config, vgg_params is not None).name)
    else:
        info = RunInfo(checkpoint, seed, config, objective_name(config), stylegan2_checkpoint or "given")
    images = list(inspected) if inspected is not None else inspect_inputs(inputs, config.max_pixels, skip_bad, echo)
    if stylegan2 is not None:
        images = _generator_sized(images, stylegan2.size, skip_bad, echo)
    todo = [image for image in images if overwrite or not is_done(output, image.name)]
    if len(todo) < len(images):
        echo(f"{len(images) - len(todo)} of {len(images)} images already done in {output} (skipped)")
    records = []
    if todo:
        output.mkdir(parents=True, exist_ok=True)  # the log is written even when no image is
    groups = batches(model, todo, batch_size)
    for index, batch in enumerate(groups, start=1):
        size = (batch[0].height, batch[0].width)
        if stylegan2 is None:  # the StyleGAN2 search takes its images unpadded, at the generator's size
            size = padded_size(model.config, *size)
        loaded = []
        for image in batch:
            try:
                loaded.append((image, read_image(image.path)))
            except ImageInputError as error:
                if not skip_bad:
                    raise
                echo(f"skipped: {error}")
        if not loaded:
            continue
        echo(
            f"batch {index}/{len(groups)}: {len(loaded)} image(s) at {size[0]}x{size[1]} (padded), "
            f"objective {info.objective}"
        )
        start = time.perf_counter()
        blurry = jnp.concatenate([pad_to(jnp.asarray(pixels)[None], size) for _, pixels in loaded])
        keys = jnp.stack([image_key(seed, image.name) for image, _ in loaded])
        if stylegan2 is None:
            result = deblur(model, keys, blurry, config=config, vgg_params=vgg_params, progress=progress)
        else:
            result = deblur_stylegan2(model, stylegan2, keys, blurry, config=config, progress=progress)
        sharp, reblurred = np.asarray(result.sharp), np.asarray(result.reblurred)
        seconds = (time.perf_counter() - start) / len(loaded)
        for i, (image, pixels) in enumerate(loaded):
            failed_at = int(result.history["failed_at"][i])
            status = "ok" if failed_at < 0 else f"stopped at step {failed_at}"
            crop = (slice(0, image.height), slice(0, image.width))
            if not (np.isfinite(sharp[i][crop]).all() and np.isfinite(reblurred[i][crop]).all()):
                status = FAILED  # e.g. a NaN kernel: F(x, k) is NaN even where x is finite
                echo(f"{image.name}: the result is not finite (NaN/inf); nothing written, the image stays to do")
            elif failed_at >= 0:
                echo(f"{image.name}: the search went non-finite at step {failed_at}; writing its last finite result")
            if status != FAILED:
                text = {**info.text(), "status": status, "input": str(image.path)}
                _write_outputs(output, image.name, pixels, sharp[i][crop], reblurred[i][crop], text, compare)
            losses = result.history["loss"][i]
            finite = losses[np.isfinite(losses)]
            record = {
                "name": image.name,
                "input": str(image.path),
                "height": image.height,
                "width": image.width,
                "status": status,
                "seconds": round(seconds, 2),
                "final_loss": float(finite[-1]) if finite.size else None,
                **info.text(),
            }
            with open(output / LOG_NAME, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            records.append(record)
    return records


def _generator_sized(images: list[InputImage], size: int, skip_bad: bool, echo) -> list[InputImage]:
    """The images of the StyleGAN2 generator's size; ImageInputError listing the others unless skip_bad."""
    bad = [f"{i.path}: {i.width}x{i.height}" for i in images if (i.height, i.width) != (size, size)]
    if bad and not skip_bad:
        raise ImageInputError(
            f"{len(bad)} of {len(images)} inputs are not {size}x{size}, the size of the StyleGAN2 generator "
            "(--skip-bad skips them):\n  " + "\n  ".join(bad)
        )
    for message in bad:
        echo(f"skipped: {message}, not the generator's {size}x{size}")
    return [i for i in images if (i.height, i.width) == (size, size)]


def _write_outputs(output, name, blurry, sharp, reblurred, text, compare) -> None:
    paths = output_paths(output, name)
    # The sharp image goes last: it marks the image done, so a crash never leaves a half-done one "done".
    write_png(paths["reblurred"], to_uint8(reblurred), {**text, "output": "reblurred"})
    if compare:
        write_png(paths["compare"], image_grid([(blurry, sharp, reblurred)]), {**text, "output": "compare"})
    write_png(paths["sharp"], to_uint8(sharp), {**text, "output": "sharp"})


# ---------------------------------------------------------------------------------------------
# Evaluation against ground truth
# ---------------------------------------------------------------------------------------------


def ground_truth(names: Sequence[str], sharp_dir: str | os.PathLike) -> dict[str, Path]:
    """{name: sharp_dir/<name>.<any image suffix>}; FileNotFoundError listing the names without one."""
    sharp_dir = Path(sharp_dir)
    if not sharp_dir.is_dir():
        raise FileNotFoundError(f"--sharp folder {sharp_dir} does not exist")
    found, missing = {}, []
    for name in names:
        candidates = [sharp_dir / f"{name}{s}" for s in IMAGE_SUFFIXES] + [
            sharp_dir / f"{name}{s.upper()}" for s in IMAGE_SUFFIXES
        ]
        match = next((p for p in candidates if p.is_file()), None)
        if match is None:
            missing.append(name)
        else:
            found[name] = match
    if missing:
        raise FileNotFoundError(
            f"no ground truth in {sharp_dir} for {len(missing)} image(s), e.g. "
            f"{', '.join(missing[:5])} (looked for <name> with {', '.join(IMAGE_SUFFIXES)})"
        )
    return found


def check_ground_truth(images: Sequence[InputImage], truth: Mapping[str, Path], max_pixels: int) -> None:
    """Decodes every ground-truth image of `images` once and checks that it has its blurry input's size;
    raises ImageInputError listing every problem (before any search: evaluation would fail after it)."""
    problems = []
    for image in images:
        try:
            found = inspect_image(image.name, truth[image.name], min_side=MIN_SIDE, max_pixels=max_pixels)
        except ImageInputError as error:
            problems.append(str(error))
            continue
        if (found.height, found.width) != (image.height, image.width):
            problems.append(
                f"{found.path} is {found.width}x{found.height} but its blurry image {image.path} is "
                f"{image.width}x{image.height} (WxH)"
            )
    if problems:
        raise ImageInputError(
            f"{len(problems)} ground-truth image(s) cannot be used for evaluation:\n  " + "\n  ".join(problems)
        )


def evaluate(inputs: Sequence[tuple[str, Path]], output: str | os.PathLike, truth: Mapping[str, Path]) -> dict:
    """PSNR / SSIM (dm-pix; images in [0, 1]) of each written <name>.png and of its blurry input against
    the ground truth. Returns {"images": [row, ...], "mean": row}; rows have psnr, ssim, blurry_psnr,
    blurry_ssim. Writes output/metrics.json."""
    output, rows = Path(output), []
    for name, path in inputs:
        sharp_file = output_paths(output, name)["sharp"]
        if not sharp_file.is_file():
            continue
        truth_image, blurry, sharp = (read_image(p) for p in (truth[name], path, sharp_file))
        if truth_image.shape != blurry.shape:
            raise ImageInputError(
                f"{truth[name]} is {truth_image.shape[1]}x{truth_image.shape[0]} but its blurry "
                f"image {path} is {blurry.shape[1]}x{blurry.shape[0]} (WxH)"
            )
        stack = jnp.asarray(np.stack([sharp, blurry]))
        target = jnp.asarray(np.stack([truth_image, truth_image]))
        psnr, ssim = np.asarray(pix.psnr(stack, target)), np.asarray(pix.ssim(stack, target))
        rows.append(
            {
                "name": name,
                "psnr": float(psnr[0]),
                "ssim": float(ssim[0]),
                "blurry_psnr": float(psnr[1]),
                "blurry_ssim": float(ssim[1]),
            }
        )
    keys = ("psnr", "ssim", "blurry_psnr", "blurry_ssim")
    mean = {"name": f"mean ({len(rows)})", **{k: float(np.mean([r[k] for r in rows])) for k in keys}} if rows else {}
    report = {"images": rows, "mean": mean}
    with atomic_write(output / METRICS_NAME, "w") as file:
        json.dump(report, file, indent=1)
    return report


def format_table(report: Mapping) -> str:
    """A markdown table of `evaluate`'s report: per image, then the mean."""
    lines = ["| image | PSNR deblurred | PSNR blurry | SSIM deblurred | SSIM blurry |", "|---|---|---|---|---|"]
    for row in [*report["images"], report["mean"]] if report["images"] else []:
        lines.append(
            f"| {row['name']} | {row['psnr']:.2f} | {row['blurry_psnr']:.2f} | {row['ssim']:.4f} | "
            f"{row['blurry_ssim']:.4f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Demo: held-out synthetic blurry images
# ---------------------------------------------------------------------------------------------


def write_demo_inputs(folder: str | os.PathLike, num: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Writes `num` held-out synthetic pairs (data.synthetic 'test' split: images and kernels never used
    in training, of the sizes the shipped model was trained on) as folder/blurry/<i>.png and
    folder/sharp/<i>.png; returns the two folders."""
    from kernelspace_jax.assets import SHIPPED_KERNEL_SIZE_RANGE
    from kernelspace_jax.data import synthetic

    folder = Path(folder)
    config = synthetic.SyntheticBlurConfig(
        crop_size=(size, size), kernel_size_range=SHIPPED_KERNEL_SIZE_RANGE, seed=seed
    )
    pairs = synthetic.SyntheticPairs(config, split="test", num=num)
    for i in range(num):
        record = pairs[i]
        for kind in ("blurry", "sharp"):
            path = folder / kind / f"{i:02d}.png"
            if not path.is_file():
                write_png(path, to_uint8(record[kind]))
    return folder / "blurry", folder / "sharp"


def demo_picture(inputs: Sequence[tuple[str, Path]], output: Path, truth: Mapping[str, Path]) -> np.ndarray:
    """Rows of blurry | deblurred | ground truth, as uint8."""
    rows = [
        (read_image(path), read_image(output_paths(output, name)["sharp"]), read_image(truth[name]))
        for name, path in inputs
        if output_paths(output, name)["sharp"].is_file()
    ]
    return image_grid(rows)


# ---------------------------------------------------------------------------------------------
# The command line's job
# ---------------------------------------------------------------------------------------------


def default_checkpoint() -> str:
    """The checkpoint shipped with the package (`kernelspace_jax.assets.shipped_checkpoint_path()`)."""
    try:
        from kernelspace_jax.assets import shipped_checkpoint_path
    except ImportError as error:
        raise FileNotFoundError(
            "this installation has no shipped checkpoint (kernelspace_jax.assets); pass --checkpoint: an "
            "authors' .pth (e.g. GOPRO_wVAE.pth), a folder written by kernelspace_jax.save, or a train.py workdir"
        ) from error
    return os.fspath(shipped_checkpoint_path())


def run(
    *,
    inputs: Sequence[str],
    output: str | None,
    config: ml_collections.ConfigDict,
    checkpoint: str | None = None,
    batch_size: int = 1,
    iters: int | None = None,
    seed: int = 0,
    vgg_weights: str | None = None,
    sharp: str | None = None,
    compare: bool = False,
    demo: bool = False,
    demo_num: int = 8,
    demo_size: int = 128,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    prior: str = "generic",
    stylegan2: str | None = None,
) -> int:
    """deblur.py's job (its flags, as arguments): returns the exit status (0; 1 when an image's result
    was not finite and not written, after the others are done).

    Everything that can be checked is checked before anything heavy is loaded and before the first
    search, each failure a ValueError / OSError with one message: the arguments and search settings
    (`check_search_config`), the output folder's place, every input decoded once (`inspect_inputs`),
    every ground-truth file and its size (`check_ground_truth`); then the model, and the settings
    against it."""
    from kernelspace_jax.kernel_space.checkpoints import load
    from kernelspace_jax.models.vgg import load_vgg19_params

    if prior not in PRIORS:
        raise ValueError(f"--prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if (prior == "stylegan2") != (stylegan2 is not None):
        raise ValueError("--prior stylegan2 and --stylegan2 PATH (a rosinality StyleGAN2 .pt) go together")
    if stylegan2 and vgg_weights:
        raise ValueError("--vgg-weights is for the generic prior: the StyleGAN2 objective has no perceptual term")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if iters is not None:
        if iters < 1:
            raise ValueError(f"--iters must be >= 1, got {iters}")
        config[("num_iters", "num_epochs")[prior == "stylegan2"]] = iters
    check_search_config(config, prior, has_vgg=vgg_weights is not None)
    if demo:
        output = output or "deblur_demo"
        if inputs or sharp:
            raise ValueError("--demo makes its own inputs; drop --input / --sharp")
        blurry_dir, sharp = write_demo_inputs(Path(output) / "inputs", demo_num, demo_size)
        inputs = [os.fspath(blurry_dir)]
    if not output:
        raise ValueError("--output is required (a folder; created if missing)")
    if not inputs:
        raise ValueError("no --input given (files, folders or globs)")
    from kernelspace_jax.io.images import find_images

    found = find_images(inputs)
    if not demo:  # the demo's inputs are its own, written under output/inputs
        check_output_location(inputs, found, output)
    images = inspect_inputs(found, config.max_pixels, skip_bad, echo)
    truth = ground_truth([name for name, _ in found], sharp) if sharp else None
    if truth is not None:
        check_ground_truth(images, truth, config.max_pixels)
    checkpoint = checkpoint or default_checkpoint()
    model = load(checkpoint)
    check_search_config(config, prior, has_vgg=vgg_weights is not None, model=model)  # KernelDIP vs kernel_dim
    vgg_params = load_vgg19_params(vgg_weights) if vgg_weights else None
    if stylegan2:
        from kernelspace_jax.deblurring.stylegan2.prior import load_prior

        prior_model = load_prior(stylegan2, num_samples=config.gaussian_fit_samples, echo=echo)
    with output_lock(Path(output)):
        records = deblur_files(
            model,
            found,
            output,
            config,
            seed=seed,
            batch_size=batch_size,
            vgg_params=vgg_params,
            checkpoint=checkpoint,
            compare=compare,
            skip_bad=skip_bad,
            overwrite=overwrite,
            progress=progress,
            echo=echo,
            stylegan2=prior_model if stylegan2 else None,
            stylegan2_checkpoint=stylegan2 or "",
            inspected=images,
        )
        stopped = [r["name"] for r in records if r["status"] not in ("ok", FAILED)]
        failed = [r["name"] for r in records if r["status"] == FAILED]
        if stopped:
            echo(f"{len(stopped)} image(s) stopped early on a non-finite loss: {', '.join(stopped[:10])}")
        if truth is not None:
            report = evaluate(found, output, truth)
            echo(format_table(report))
            if demo:
                picture = Path(output) / "demo_comparison.png"
                write_png(picture, demo_picture(found, Path(output), truth))
                echo(f"wrote {picture} (rows: blurry | deblurred | ground truth)")
        if failed:
            print(
                f"error: {len(failed)} image(s) had a non-finite result and were not written (logged as "
                f"{FAILED!r} in {Path(output) / LOG_NAME}; a re-run searches them again): {', '.join(failed[:10])}",
                file=sys.stderr,
            )
            return 1
        return 0
