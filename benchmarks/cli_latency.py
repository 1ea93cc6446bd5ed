"""How soon `deblur.py` shows progress on one 256x256 image: a first run, then a run with the cache.

    python benchmarks/cli_latency.py                 # the command's default recipe for this backend
    python benchmarks/cli_latency.py --runs 3 -- --config.num_iters=100

Writes a blurry 256x256 photograph (scikit-image's camera, a 15 px motion blur) to a temporary folder
and runs `python deblur.py --input it --output a fresh folder` `--runs` times (default 2) with one
fresh compilation cache (KERNELSPACE_JAX_CACHE): the first run compiles, the later ones read the
cache. For each run it prints the seconds from the start of the process to the command's first line
(the recipe), to the first progress update (the bar's first count above zero, after the first
compiled chunk of steps) and to its exit. Flags after `--` go to deblur.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_utils import cpu_name
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(rb"\b([1-9]\d*)/(\d+) ")


def blurry_photo(path: Path, size: int = 256, length: int = 15) -> None:
    """A size x size crop of the camera photograph, blurred by a horizontal line of `length` px."""
    from kernelspace_jax.io.images import to_uint8, write_png

    sharp = data.camera()[96 : 96 + size, 128 : 128 + size].astype(np.float32) / 255.0
    padded = np.pad(sharp, ((0, 0), (length // 2, length // 2)), mode="reflect")
    blurred = sum(padded[:, i : i + size] for i in range(length)) / length
    write_png(path, to_uint8(np.repeat(blurred[..., None], 3, axis=-1)))


def timed_run(command: list[str], env: dict[str, str]) -> dict[str, float | None]:
    """Seconds to the first line, to the first progress update and to the exit of `command`."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    first_line = first_progress = None
    seen = b""
    while True:
        chunk = process.stdout.read1(4096)
        if not chunk:
            break
        now = time.perf_counter() - start
        seen += chunk
        if first_line is None and b"\n" in seen:
            first_line = now
        if first_progress is None and PROGRESS.search(seen):
            first_progress = now
    returncode = process.wait()
    if returncode:
        sys.stdout.write(seen.decode(errors="replace")[-3000:])
        raise SystemExit(f"deblur.py exited with status {returncode}")
    return {"first_line": first_line, "first_progress": first_progress, "exit": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs with one cache: the first compiles (default 2)")
    parser.add_argument("extra", nargs="*", help="flags for deblur.py (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        blurry_photo(tmp / "camera.png")
        env = {**os.environ, "KERNELSPACE_JAX_CACHE": str(tmp / "cache")}
        rows = []
        for run in range(args.runs):
            command = [sys.executable, "deblur.py", "--input", str(tmp / "camera.png")]
            command += ["--output", str(tmp / f"out{run}"), *args.extra]
            rows.append(timed_run(command, env))
            print(f"run {run + 1}: {rows[-1]}", flush=True)
    print(f"\ndeblur.py on one 256x256 image, {os.cpu_count()} cores of {cpu_name()}; seconds from the process start")
    print("| run | compilation cache | first line | first progress update | exit |\n|---|---|---|---|---|")
    for run, row in enumerate(rows):
        cache = "empty" if run == 0 else "filled by run 1"
        cells = [f"{row[k]:.1f}" if row[k] is not None else "-" for k in ("first_line", "first_progress", "exit")]
        print(f"| {run + 1} | {cache} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
