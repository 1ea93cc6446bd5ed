"""Blur synthesis from the command line: a kernel bank, blur transfer, prior samples, interpolation.

    kernelspace-synthesize bank --checkpoint ckpt --source synthetic --out bank.npz
    kernelspace-synthesize transfer --checkpoint ckpt --bank bank.npz --target photos/ --out o
    kernelspace-synthesize sample --checkpoint wvae.pth --target 'photos/*.jpg' --out o
    kernelspace-synthesize interpolate --checkpoint ckpt --bank bank.npz --a 0 --b 5 \\
        --target photos/ --steps 8 --out o

Without --checkpoint the shipped model is used (kernelspace_jax.assets; its VAE for sample).

Pairs (--source): synthetic[:<split>] (built-in pairs, split test by default) | tfds:<name>:<split> |
folders:<blurry root>:<sharp root> | a folder holding blur/ and sharp/ (e.g. an output of this tool).
Sharp images (--target): a folder (every .png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp below it), a glob
('photos/**/*.jpg'), or any pair spec above (its sharp images).

Outputs go to --out in the paired-folder layout the training pipeline reads back
(`kernelspace-build-data paired_folders`, or `folders:<out>/blur:<out>/sharp`):
out/blur/<seq>/<name>.png, each beside the sharp image it was made from, out/sharp/<seq>/<name>.png.
With them: log.csv (one row per output), summary.json, and contact_sheet.png (sharp | its blurs) or
interpolation_strip.png. Output i depends only on (--seed, i) and the inputs; outputs already written are
skipped, so an interrupted run picks up where it stopped when run again (every file is written atomically).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import json
import os
import sys
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm

from kernelspace_jax import synthesis, xla_options
from kernelspace_jax.assets import shipped_checkpoint_path
from kernelspace_jax.cli import common
from kernelspace_jax.data import pairs
from kernelspace_jax.data.paired_folders import load_rgb8
from kernelspace_jax.io.files import atomic_write
from kernelspace_jax.io.images import IMAGE_SUFFIXES, image_grid, to_uint8, write_png
from kernelspace_jax.io.pth import CheckpointFormatError
from kernelspace_jax.kernel_space.checkpoints import load
from kernelspace_jax.kernel_space.model import MIN_SIDE, KernelSpaceModel

PROG = "kernelspace-synthesize"

SHEET_ROWS, SHEET_COLUMNS, THUMBNAIL = 8, 6, 160
FRAMES_PER_SEQ = 100  # output i -> <i // 100>/<i % 100>, the layout of the reference's augmented sets
# The model, loaded on first use: inputs are checked before a large checkpoint is read.
ModelLoader = Callable[[], KernelSpaceModel]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileImages:
    """Sharp images from files: `id(i)`, and `read(i)` -> (H, W, 3) float32 in [0, 1]."""

    paths: tuple[Path, ...]
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def id(self, index: int) -> str:
        return self.ids[index]

    def read(self, index: int) -> np.ndarray:
        try:
            image = load_rgb8(self.paths[index])
        except Exception as error:  # whatever Pillow raises, the user needs the file's name
            raise ValueError(f"{self.paths[index]}: unreadable image ({type(error).__name__}: {error})") from None
        return image.astype(np.float32) / np.float32(255)


@dataclasses.dataclass(frozen=True)
class PairSharps:
    """The sharp images of a pair source: `id(i)`, and `read(i)` -> (H, W, 3) float32 in [0, 1]."""

    pairs: Any

    def __len__(self) -> int:
        return len(self.pairs)

    def id(self, index: int) -> str:
        # Folder pairs know their ids without decoding; other sources are named by position.
        records = getattr(self.pairs, "records", None)
        return records[index].id if records is not None else str(index)

    def read(self, index: int) -> np.ndarray:
        return pairs.read_pair(self.pairs, index, None)["sharp"]


def _check_headers(paths: Sequence[Path]) -> None:
    """Raises ValueError naming the files Pillow cannot open or that are too small."""

    def problem(path: Path) -> str | None:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception as error:  # any decoder failure makes the file unusable
            return f"{path}: unreadable image ({type(error).__name__}: {error})"
        if min(width, height) < MIN_SIDE:
            return f"{path}: {height}x{width}, sides must be at least {MIN_SIDE}"
        return None

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(problem, paths) if p]
    if problems:
        listed = "\n  ".join(problems[:5])
        raise ValueError(f"{len(problems)} bad target image(s), e.g.:\n  {listed}")


def open_targets(spec: str, *, crop: int | None, num: int, seed: int, data_dir: str):
    """Sharp images for a --target spec: a folder, a glob, or a pair spec (its sharp images)."""
    if spec.partition(":")[0] in pairs.PAIR_SPECS:
        return PairSharps(pairs.open_pairs(spec, data_dir=data_dir, num=num, seed=seed, crop=crop, flag="--target"))
    root = Path(spec)
    if root.is_dir():
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        ids = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    else:
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        ids = [p.with_suffix("").as_posix() for p in paths]
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images at {spec} (a folder, a glob or a pair spec)")
    _check_headers(paths)
    return FileImages(tuple(paths), tuple(ids))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One output: id '<seq>/<name>', position (its key is fold_in(seed, position)), target index, log row."""

    id: str
    position: int
    target: int
    log: dict[str, Any]


def output_id(position: int) -> str:
    """'<seq>/<name>' of output `position`: 100 images a folder, as the reference's augmented sets."""
    return f"{position // FRAMES_PER_SEQ:03d}/{position % FRAMES_PER_SEQ:08d}"


def _done(out: Path, job: Job) -> bool:
    return (out / "blur" / f"{job.id}.png").is_file() and (out / "sharp" / f"{job.id}.png").is_file()


def render(
    jobs: Sequence[Job],
    targets,
    out: Path,
    blur_fn: Callable[[Sequence[Job], np.ndarray], jax.Array],
    *,
    batch_size: int,
    crop: int | None,
    on_written: Callable[[Job], None] = lambda job: None,
) -> int:
    """Writes the blurry and sharp PNGs of every job not on disk yet; returns how many it wrote.

    blur_fn(jobs, sharp (B, H, W, 3)) -> blurry (B, H, W, 3) in [0, 1]: jobs come in groups of one
    image size, padded to batch_size with repeats of the last job, so each size compiles once.
    """
    pending = [job for job in jobs if not _done(out, job)]
    with (
        tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="synthesize", unit="image") as bar,
        ThreadPoolExecutor(4) as pool,
    ):
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            wanted = sorted({job.target for job in chunk})
            images = {
                t: pairs.center_crop(image, crop, f"target {targets.id(t)}")
                for t, image in zip(wanted, pool.map(targets.read, wanted), strict=True)
            }
            groups: dict[tuple[int, ...], list[Job]] = {}
            for job in chunk:
                groups.setdefault(images[job.target].shape, []).append(job)
            for group in groups.values():
                padded = group + [group[-1]] * (batch_size - len(group))
                sharp = np.stack([images[job.target] for job in padded])
                blurry = np.asarray(blur_fn(padded, sharp))
                for job, result in zip(group, blurry, strict=False):
                    write_png(out / "sharp" / f"{job.id}.png", to_uint8(images[job.target]))
                    write_png(out / "blur" / f"{job.id}.png", to_uint8(result))
                    on_written(job)
                bar.update(len(group))
    return len(pending)


@xla_options.jit(static_argnums=(2, 3, 4))
def _draw_kernels(augment: synthesis.Augmentation, keys: jax.Array, batch: int, height: int, width: int):
    return augment.kernels(keys, batch, height, width)[0]


def _augment_fn(augment: synthesis.Augmentation, keys: jax.Array):
    """render's blur_fn: each job blurred with the augmentation's kernel for its own key."""

    def blur(jobs: Sequence[Job], sharp: np.ndarray) -> jax.Array:
        kernels = _draw_kernels(augment, keys[np.asarray([job.position for job in jobs])], *sharp.shape[:3])
        # F through synthesis.apply_kernel, jitted once per image size for all commands; host kernels so
        # that every command calls it alike (device arrays can differ in placement, which recompiles).
        return synthesis.apply_kernel(augment.model, sharp, np.asarray(kernels), fit=augment.fit)

    return blur


def _per_image_jobs(targets, per_image: int, log: Callable[[int], dict[str, Any]]) -> list[Job]:
    """Outputs 0 .. len(targets) * per_image - 1, output i from target i // per_image."""
    count = len(targets) * per_image
    return [
        Job(output_id(i), i, i // per_image, {"target": targets.id(i // per_image), **log(i)}) for i in range(count)
    ]


def job_keys(seed: int, count: int) -> jax.Array:
    """(count,) keys; output i's is fold_in(key(seed), i), whatever batch it lands in."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(count, dtype=jnp.int32))


def _thumbnail(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.convert("RGB").crop((left, top, left + side, top + side))
        return np.asarray(square.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS), np.float32) / 255


def write_sheet(path: Path, out: Path, jobs: Sequence[Job], rows: int, columns: int) -> None:
    """A picture of the first `rows` targets, each row sharp | up to `columns` outputs (centre squares)."""
    per_target: dict[int, list[Job]] = {}
    for job in jobs:
        if job.target in per_target or len(per_target) < rows:
            per_target.setdefault(job.target, []).append(job)
    width = 1 + min(columns, max(len(group) for group in per_target.values()))
    grid = []
    for group in per_target.values():
        row = [_thumbnail(out / "sharp" / f"{group[0].id}.png")]
        row += [_thumbnail(out / "blur" / f"{job.id}.png") for job in group[: width - 1]]
        grid.append(tuple(row + [np.ones_like(row[0])] * (width - len(row))))
    write_png(path, image_grid(grid))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_write(path, "w") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def finish(
    out: Path,
    jobs: Sequence[Job],
    args: types.SimpleNamespace,
    results: dict[str, Any],
    picture: str,
    rows: int,
    columns: int,
) -> None:
    """Writes the picture, log.csv (one row per output) and summary.json (settings and results)."""
    write_sheet(out / picture, out, jobs, rows, columns)
    _write_csv(out / "log.csv", [{"id": job.id, **job.log} for job in jobs])
    with atomic_write(out / "summary.json", "w") as file:
        file.write(json.dumps({**vars(args), **results}, indent=1) + "\n")
    print(
        f"{results['written']} images written, {len(jobs) - results['written']} were there already: "
        f"{out}/blur and {out}/sharp; {out}/log.csv, summary.json, {picture}"
    )


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _bank_meta(args: types.SimpleNamespace) -> dict[str, Any]:
    return {"source": args.source, "num": args.num, "crop": args.crop, "seed": args.seed}


def obtain_bank(args: types.SimpleNamespace, get_model: ModelLoader, path: Path) -> synthesis.KernelBank:
    """The bank of --bank, or of --source: built into `path`, or reused from there if built the same way."""
    bank_file = getattr(args, "bank", None)  # the bank command has no --bank
    if bank_file and args.source:
        raise ValueError("give either --source (pairs to extract kernels from) or --bank, not both")
    if bank_file:
        return synthesis.load_bank(bank_file, model=get_model())
    if not args.source:
        raise ValueError("kernels come from pairs: give --source or --bank")
    meta = _bank_meta(args)
    if path.exists():
        bank = synthesis.load_bank(path, model=get_model())
        built = {key: bank.meta.get(key) for key in meta}
        if built != meta:
            raise ValueError(f"{path} holds a bank built with {built}, not {meta}: delete it or use another --out")
        print(f"reusing the kernel bank {path} ({len(bank)} kernels)")
        return bank
    source = pairs.open_pairs(
        args.source, data_dir=args.data_dir, num=args.num, seed=args.seed, crop=args.crop, flag="--source"
    )
    bank = synthesis.build_bank(
        get_model(),
        source,
        batch_size=args.batch_size,
        crop=args.crop,
        seed=args.seed,
        progress=True,
        meta=meta,
    )
    synthesis.save_bank(bank, path)
    _write_csv(
        path.with_suffix(".csv"),
        [
            {
                "index": i,
                "id": bank.ids[i],
                "psnr": round(float(bank.psnr[i]), 3),
                "identity_psnr": round(float(bank.identity_psnr[i]), 3),
            }
            for i in range(len(bank))
        ],
    )
    print(
        f"kernel bank of {len(bank)} pairs written to {path}; reconstruction PSNR per pair in "
        f"{path.with_suffix('.csv')}"
    )
    return bank


def cmd_bank(args: types.SimpleNamespace, get_model: ModelLoader) -> None:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out of a bank is a .npz file, got {out}")
    bank = obtain_bank(args, get_model, out)
    for i in range(len(bank)):
        print(f"Reconstruction PSNR of pair #{i:03d}/{len(bank):03d} ({bank.ids[i]}): {bank.psnr[i]:.2f} dB")
    print(
        f"Average reconstruction PSNR of F(source sharp, k) vs source blurry: {np.mean(bank.psnr):.2f} dB "
        f"(identity, source sharp vs blurry: {np.mean(bank.identity_psnr):.2f} dB) over {len(bank)} pairs"
    )


def _targets(args: types.SimpleNamespace):
    return open_targets(args.target, crop=args.crop, num=args.num, seed=args.seed, data_dir=args.data_dir)


def cmd_transfer(args: types.SimpleNamespace, get_model: ModelLoader) -> None:
    out = Path(args.out)
    targets = _targets(args)
    bank = obtain_bank(args, get_model, out / "bank.npz")
    count = len(targets) * args.per_image
    keys = job_keys(args.seed, count)
    entries = np.asarray(synthesis.bank_indices(keys, len(bank)))
    jobs = _per_image_jobs(
        targets,
        args.per_image,
        lambda i: {
            "source": str(bank.ids[entries[i]]),
            "source_psnr": round(float(bank.psnr[entries[i]]), 3),
            "source_identity_psnr": round(float(bank.identity_psnr[entries[i]]), 3),
        },
    )
    augment = synthesis.make_augmentation(get_model(), bank=bank, fit=args.fit)

    def report(job: Job) -> None:
        tqdm.write(
            f"Reconstruction PSNR of image #{job.position:03d}/{count:03d} (source {job.log['source']}): "
            f"{job.log['source_psnr']:.2f} dB"
        )

    written = render(
        jobs,
        targets,
        out,
        _augment_fn(augment, keys),
        batch_size=args.batch_size,
        crop=args.crop,
        on_written=report,
    )
    mean_psnr = float(np.mean([job.log["source_psnr"] for job in jobs]))
    mean_identity = float(np.mean([job.log["source_identity_psnr"] for job in jobs]))
    print(f"Average reconstruction PSNR: {mean_psnr:.2f} dB (identity {mean_identity:.2f} dB), {count} images")
    results = {
        "outputs": count,
        "written": written,
        "mean_source_psnr": mean_psnr,
        "mean_source_identity_psnr": mean_identity,
        "bank_kernels": len(bank),
    }
    finish(out, jobs, args, results, "contact_sheet.png", SHEET_ROWS, SHEET_COLUMNS)


def cmd_sample(args: types.SimpleNamespace, get_model: ModelLoader) -> None:
    out = Path(args.out)
    targets = _targets(args)
    augment = synthesis.make_augmentation(get_model(), scale=args.scale)  # raises without a VAE
    count = len(targets) * args.per_image
    keys = job_keys(args.seed, count)
    jobs = _per_image_jobs(targets, args.per_image, lambda i: {"sample": i % args.per_image})
    written = render(
        jobs,
        targets,
        out,
        _augment_fn(augment, keys),
        batch_size=args.batch_size,
        crop=args.crop,
    )
    finish(
        out,
        jobs,
        args,
        {"outputs": count, "written": written},
        "contact_sheet.png",
        SHEET_ROWS,
        SHEET_COLUMNS,
    )


def cmd_interpolate(args: types.SimpleNamespace, get_model: ModelLoader) -> None:
    out = Path(args.out)
    targets = _targets(args)
    if args.bank or args.source:
        bank = obtain_bank(args, get_model, out / "bank.npz")
        a, b = bank.index(args.a), bank.index(args.b)
        ends = jnp.asarray(bank.mean[[a, b]])
        names = (str(bank.ids[a]), str(bank.ids[b]))
    else:
        # Prior samples on the grid of the first target; fitted to the others like bank kernels.
        height, width = pairs.center_crop(targets.read(0), args.crop, f"target {targets.id(0)}").shape[:2]
        ends = synthesis.prior_kernels(get_model(), jax.random.key(args.seed), 2, height, width, scale=args.scale)
        names = ("prior sample 0", "prior sample 1")
    path = np.asarray(synthesis.interpolate(ends[:1], ends[1:], args.steps, method=args.method))  # (steps, 1, h, w, C)
    jobs = [
        Job(
            f"{t:03d}/{s:08d}",
            t * args.steps + s,
            t,
            {
                "target": targets.id(t),
                "step": s,
                "t": round(s / (args.steps - 1), 4),
                "a": names[0],
                "b": names[1],
            },
        )
        for t in range(len(targets))
        for s in range(args.steps)
    ]
    written = render(
        jobs,
        targets,
        out,
        lambda group, sharp: synthesis.apply_kernel(
            get_model(), sharp, path[np.asarray([job.log["step"] for job in group]), 0], fit=args.fit
        ),
        batch_size=args.batch_size,
        crop=args.crop,
    )
    results = {"outputs": len(jobs), "written": written, "a": names[0], "b": names[1]}
    finish(out, jobs, args, results, "interpolation_strip.png", rows=4, columns=args.steps)


COMMANDS = {"bank": cmd_bank, "transfer": cmd_transfer, "sample": cmd_sample, "interpolate": cmd_interpolate}


# The flags of each command: the common ones, then (name, kind, default, help, options) of its own.
PAIRS_HELP = "synthetic[:split] | tfds:<name>:<split> | folders:<blur>:<sharp> | folder with blur/ and sharp/"
SOURCE = [
    ("source", "string", None, "Pairs: " + PAIRS_HELP + ".", {}),
    ("bank", "string", None, "A kernel bank .npz (instead of --source).", {}),
    ("fit", "enum", "resize", "How a kernel meets another image size.", {"enum_values": list(synthesis.FIT_METHODS)}),
]
TARGET = [("target", "string", None, "Sharp images: folder | glob | pair spec.", {})]
PER_IMAGE = [("per_image", "integer", 1, "Outputs per target image.", {"lower_bound": 1})]
SCALE = [("scale", "float", synthesis.DEFAULT_SCALE, "Std of prior kernels.", {})]
COMMAND_FLAGS = {
    "bank": [("source", "string", None, "Pairs: " + PAIRS_HELP + ".", {})],
    "transfer": SOURCE + TARGET + PER_IMAGE,
    "sample": TARGET + PER_IMAGE + SCALE,
    "interpolate": [
        *SOURCE,
        *TARGET,
        *SCALE,
        ("a", "string", "0", "First end: a bank id or index.", {}),
        ("b", "string", "1", "Second end: a bank id or index.", {}),
        ("steps", "integer", 8, "Kernels on the path, ends included.", {"lower_bound": 2}),
        ("method", "enum", "linear", "Interpolation.", {"enum_values": list(synthesis.INTERPOLATIONS)}),
    ],
}
REQUIRED = {"bank": ("out", "source"), "transfer": ("out", "target"), "sample": ("out", "target")}
REQUIRED["interpolate"] = REQUIRED["transfer"]


def _flags(command: str) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string(
        "checkpoint",
        None,
        ".pth, Orbax checkpoint, or training workdir (default: the shipped model; for sample its VAE).",
        flag_values=fv,
    )
    flags.DEFINE_integer("step", None, "Step of a training workdir (default: latest).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder (bank: the .npz file).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of all randomness (and of synthetic pairs).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 4, "Images per compiled call.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "crop",
        None,
        "Centre-crop every image to this square side (synthetic pairs: generated at it, default 256); "
        "default: full images.",
        lower_bound=MIN_SIDE,
        flag_values=fv,
    )
    flags.DEFINE_integer("num", 16, "Number of synthetic pairs.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS folder.", flag_values=fv)
    for name, kind, default, help_text, options in COMMAND_FLAGS[command]:
        getattr(flags, f"DEFINE_{kind}")(name=name, default=default, help=help_text, flag_values=fv, **options)
    return fv


def _usage() -> str:
    return __doc__ + "\ncommands: " + ", ".join(COMMANDS) + " (kernelspace-synthesize COMMAND --help: its flags)"


def main(argv: list[str] | None = None) -> int:
    """Runs one command (bank, transfer, sample, interpolate); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        if command not in COMMANDS:
            if "--help" in argv or "-h" in argv:
                print(f"usage: {PROG} COMMAND [flags]\n\n{_usage()}")
                return 0
            raise common.UsageError(f"the first argument must be a command: {', '.join(COMMANDS)}; got {command!r}")
        fv = _flags(command)
        argv.remove(command)
        common.parse(fv, argv, prog=f"{PROG} {command}", doc=__doc__)
        missing = [f"--{name}" for name in REQUIRED[command] if fv[name].value is None]
        if missing:
            raise common.UsageError(f"{command} needs {' and '.join(missing)}")
    except common.HelpShown:
        return 0
    except common.UsageError as error:
        return common.usage_error(PROG, error)
    common.enable_compilation_cache()
    args = types.SimpleNamespace(command=command, **{name: fv[name].value for name in fv})
    try:
        # Orbax refuses relative paths (kernelspace_jax.load passes them on as they are).
        args.checkpoint = os.fspath(args.checkpoint or shipped_checkpoint_path(vae=command == "sample"))
        COMMANDS[command](args, functools.cache(lambda: load(os.path.abspath(args.checkpoint), step=args.step)))
    except (CheckpointFormatError, OSError, ValueError, KeyError, TypeError) as error:
        return common.input_error(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
