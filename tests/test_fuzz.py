"""Seeded mutation fuzzing of the files users hand the package: images, PyTorch .pth files (both
layouts) and Orbax checkpoint folders.

Each case mutates a valid file at the byte level (flipped bytes, truncation, inserted bytes or tokens,
duplicated chunks, extreme 32-bit values), some of them aware of the format (a PNG chunk or a zip member
changed and its CRC rewritten, so that the decoder gets past the CRC check), and reads it as the
package does. Only the documented errors may escape: ImageInputError for images,
CheckpointFormatError (UnsafeCheckpointError included) for .pth files and checkpoints, FileNotFoundError
where a file vanished. Inserted tokens include pickles that would create a file if anything ran them.

The cases of a kind run in a subprocess with a per-case time limit (a watchdog ends it) and, for images
and .pth files, an address-space limit, so that a case asking for gigabytes is a finding rather than
an out-of-memory kill of the test run. A failing case is written beside the result for reproduction;
`python -c "from tests.test_fuzz import child; child(KIND, N, FOLDER)"` from the repository root runs
one kind alone.
"""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import threading
import time
import traceback
import zipfile
import zlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]  # no conftest import: the subprocesses import this module
PTH = ROOT / "tests" / "data" / "pth"
SEED = 20240611
CASE_LIMIT_S = 20.0  # per case; the slowest cases take well under a second
MEMORY_LIMIT = 2 << 30  # bytes of address space a case may add (images and .pth files)
CASES = {"png": 1500, "pth_zip": 1500, "pth_legacy": 1500, "checkpoint": 160}  # about 30 s in all
KIND_IDS = {kind: i for i, kind in enumerate(CASES)}
MARKER = "PAYLOAD_RAN"  # the file a pickle payload would create

TOKENS = [
    b"\x00" * 4,
    b"\xff" * 4,
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"\x80\x02",
    b"(((((((((((((((((",
]


def payloads(marker: str) -> list[bytes]:
    """Pickles (protocols 0 and 2) that create `marker` if unpickled without restriction."""
    m = marker.encode()
    return [
        b"cos\nsystem\n(S'touch " + m + b"'\ntR.",
        b"cbuiltins\nopen\n(S'" + m + b"'\nS'w'\ntR.",
        b"c__builtin__\neval\n(S'open(\"" + m + b'", "w")\'\ntR.',
        b"\x80\x02cposix\nsystem\nq\x00X" + struct.pack("<I", len(m) + 6) + b"touch " + m + b"\x85q\x01Rq\x02.",
    ]


# ---------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------


def mutate(data: bytes, rng: np.random.Generator, tokens=()) -> tuple[bytes, list[str]]:
    """1-3 byte-level mutations of `data`; returns the bytes and what was done."""
    data, ops = bytearray(data), []
    for _ in range(int(rng.integers(1, 4))):
        op, n = int(rng.integers(0, 6)), len(data)
        if op == 0 and n:
            k = int(rng.integers(1, 9))
            for i in rng.integers(0, n, k):
                data[int(i)] ^= int(rng.integers(1, 256))
            ops.append(f"flip {k} bytes")
        elif op == 1 and n:
            i = int(rng.integers(0, n))
            del data[i:]
            ops.append(f"truncate at {i}")
        elif op == 2:
            i, k = int(rng.integers(0, n + 1)), int(rng.integers(1, 64))
            data[i:i] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
            ops.append(f"insert {k} random bytes at {i}")
        elif op == 3 and n:
            a = int(rng.integers(0, n))
            b, c = min(n, a + int(rng.integers(1, 512))), int(rng.integers(0, n + 1))
            data[c:c] = data[a:b]
            ops.append(f"duplicate [{a}:{b}] at {c}")
        elif op == 4:
            choices = TOKENS + list(tokens)
            token, i = choices[int(rng.integers(0, len(choices)))], int(rng.integers(0, n + 1))
            data[i:i] = token
            ops.append(f"insert {token[:16]!r} at {i}")
        elif op == 5 and n >= 4:
            i, value = int(rng.integers(0, n - 3)), [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF][int(rng.integers(0, 5))]
            data[i : i + 4] = struct.pack(">I", value)
            ops.append(f"write {value:#x} at {i}")
    return bytes(data), ops


def mutate_png_chunk(data: bytes, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """Mutates one chunk's data and rewrites its CRC."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((pos, length, data[pos + 4 : pos + 8]))
        pos += 12 + length
    pos, length, kind = chunks[int(rng.integers(0, len(chunks)))]
    body, ops = mutate(data[pos + 8 : pos + 8 + length], rng)
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return data[:pos] + chunk + data[pos + 12 + length :], [f"PNG chunk {kind.decode('latin-1')}", *ops]


def mutate_zip_member(data: bytes, rng: np.random.Generator, tokens=()) -> tuple[bytes, list[str]]:
    """Mutates one member of a zip (mostly the pickle) and writes a valid archive around it."""
    source = zipfile.ZipFile(io.BytesIO(data))
    names = source.namelist()
    pickles = [n for n in names if n.endswith("data.pkl")]
    target = pickles[0] if rng.random() < 0.6 else names[int(rng.integers(0, len(names)))]
    out, ops = io.BytesIO(), []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name in names:
            body = source.read(name)
            if name == target:
                body, ops = mutate(body, rng, tokens)
            archive.writestr(name, body)
    return out.getvalue(), [f"zip member {target}", *ops]


# ---------------------------------------------------------------------------------------------
# The cases of one kind (run in a subprocess by `child`)
# ---------------------------------------------------------------------------------------------


def _valid_png(path: pathlib.Path) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "fuzz")
    pixels = np.random.default_rng(SEED).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, pnginfo=info)


def _png_cases(folder: pathlib.Path):
    from kernelspace_jax.io.images import ImageInputError, inspect_image, read_image

    original = folder / "valid.png"
    _valid_png(original)
    data = original.read_bytes()
    case_file = folder / "case.png"

    def make(i, rng):
        if i % 100 == 99:
            case_file.unlink(missing_ok=True)
            return b"", ["the file vanished"]
        mutated, ops = mutate_png_chunk(data, rng) if i % 2 else mutate(data, rng)
        case_file.write_bytes(mutated)
        return mutated, ops

    def run():
        image = inspect_image("case", case_file, min_side=32, max_pixels=4_000_000)
        pixels = read_image(case_file)  # as deblurring does: read only what inspect_image accepted
        if pixels.shape != (image.height, image.width, 3) or pixels.dtype != np.float32:
            return f"read_image gave {pixels.shape} {pixels.dtype}; inspect_image said {image.height}x{image.width}"
        if not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
            return "read_image gave values outside [0, 1]"
        return None

    return make, run, (ImageInputError, FileNotFoundError), ".png"


def _pth_cases(folder: pathlib.Path, layout: str):
    from kernelspace_jax.io.pth import CheckpointFormatError, read_pth

    data = (PTH / f"{layout}_format.pth").read_bytes()
    case_file = folder / "case.pth"
    tokens = payloads(str(folder / MARKER))

    def make(i, rng):
        if i % 100 == 99:
            case_file.unlink(missing_ok=True)
            return b"", ["the file vanished"]
        if layout == "zip" and i % 2:
            mutated, ops = mutate_zip_member(data, rng, tokens)
        elif layout == "legacy" and i % 10 == 0:  # a payload where the reader starts
            token = tokens[int(rng.integers(0, len(tokens)))]
            mutated, ops = token + data, [f"prepend {token[:16]!r}"]
        else:
            mutated, ops = mutate(data, rng, tokens)
        case_file.write_bytes(mutated)
        return mutated, ops

    def run():
        read_pth(case_file)
        return None

    return make, run, (CheckpointFormatError, FileNotFoundError), ".pth"


def _checkpoint_cases(folder: pathlib.Path):
    import jax

    import kernelspace_jax as ksj
    from kernelspace_jax.io.pth import CheckpointFormatError
    from kernelspace_jax.kernel_space import checkpoints, config

    path = folder / "ckpt"
    ksj.save(ksj.init(jax.random.key(0), config.micro(use_vae=False)), path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    originals = {rel: (path / rel).read_bytes() for rel in files}
    state = {}

    def make(i, rng):
        for rel, body in originals.items():  # undo the previous case
            (path / rel).write_bytes(body)
        verified = i % 2 == 0  # odd cases: no checksums.json, as written by older versions
        if not verified:
            (path / checkpoints.CHECKSUMS_FILE).unlink()
        candidates = files if verified else [f for f in files if f != checkpoints.CHECKSUMS_FILE]
        rel = candidates[int(rng.integers(0, len(candidates)))]
        if rng.random() < 0.1:
            (path / rel).unlink()
            mutated, ops = b"", ["delete"]
        else:
            mutated, ops = mutate(originals[rel], rng)
            (path / rel).write_bytes(mutated)
        state.update(verified=verified, changed=rel != checkpoints.CHECKSUMS_FILE and mutated != originals[rel])
        return mutated, [f"{'' if verified else 'no checksums.json; '}{rel}", *ops]

    def run():
        ksj.load(path)
        if state["verified"] and state["changed"]:
            return "a checkpoint with a changed file loaded although its checksums were there"
        return None

    return make, run, (CheckpointFormatError, FileNotFoundError), ".bin"


def _caused_by_memory(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, MemoryError):
            return True
        error = error.__cause__ or error.__context__
    return False


def child(kind: str, n: str | int, folder: str) -> None:
    """Runs `n` cases of `kind` in `folder`; writes folder/result.json: findings and the slowest case."""
    n, folder = int(n), pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        make, run, allowed, suffix = _png_cases(folder)
    elif kind.startswith("pth_"):
        make, run, allowed, suffix = _pth_cases(folder, kind.removeprefix("pth_"))
    else:
        make, run, allowed, suffix = _checkpoint_cases(folder)
    if kind != "checkpoint" and sys.platform.startswith("linux"):  # not Orbax: its threads reserve much
        import resource

        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + MEMORY_LIMIT, resource.RLIM_INFINITY))

    current = {"case": None, "start": None}
    result = {"kind": kind, "cases": n, "findings": [], "slowest": [0.0, None]}
    done = threading.Event()

    def watchdog():
        while not done.wait(0.2):
            start = current["start"]
            if start is not None and time.monotonic() - start > CASE_LIMIT_S:
                result["findings"].append({**current["case"], "error": f"still running after {CASE_LIMIT_S} s"})
                (folder / "result.json").write_text(json.dumps(result))
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    first_of = set()
    for i in range(n):
        rng = np.random.default_rng([SEED, KIND_IDS[kind], i])
        mutated, ops = make(i, rng)
        case = {"case": i, "mutation": "; ".join(ops)}
        current.update(case=case, start=time.monotonic())
        problem = None
        try:
            problem = run()
        except allowed as error:
            if _caused_by_memory(error):
                problem = f"asked for more than {MEMORY_LIMIT >> 30} GiB of memory ({type(error).__name__}: {error})"
        except BaseException as error:  # what escapes is the finding
            where = traceback.extract_tb(error.__traceback__)[-1]
            problem = f"{type(error).__name__}: {str(error)[:160]} (at {where.filename}:{where.lineno} in {where.name})"
        elapsed = time.monotonic() - current["start"]
        current["start"] = None
        if elapsed > result["slowest"][0]:
            result["slowest"] = [elapsed, case]
        if problem:
            key = problem.split(":")[0]
            if key not in first_of:  # keep one input per kind of finding
                first_of.add(key)
                saved = folder / f"finding-{i}{suffix}"
                saved.write_bytes(mutated)
                case = {**case, "input": str(saved)}
            result["findings"].append({**case, "error": problem})
    done.set()
    result["payload_ran"] = (folder / MARKER).exists()
    (folder / "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def _fuzz(kind: str, folder: pathlib.Path) -> dict:
    code = "import sys; from tests.test_fuzz import child; child(*sys.argv[1:])"
    process = subprocess.run(
        [sys.executable, "-c", code, kind, str(CASES[kind]), str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result_file = folder / "result.json"
    assert result_file.exists(), f"the {kind} fuzzer died (status {process.returncode}): {process.stderr[-3000:]}"
    return json.loads(result_file.read_text())


def _report(result: dict) -> str:
    lines = [f"{len(result['findings'])} of {result['cases']} {result['kind']} cases went wrong:"]
    lines += [
        f"  case {f['case']} ({f['mutation']}): {f['error']} {f.get('input', '')}" for f in result["findings"][:20]
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("kind", ["png", "pth_zip", "pth_legacy", "checkpoint"])
def test_mutated_inputs_raise_only_documented_errors(kind, tmp_path):
    result = _fuzz(kind, tmp_path)
    assert not result["findings"], _report(result)
    assert not result["payload_ran"] and not (tmp_path / MARKER).exists(), "a pickle payload ran"
    assert result["slowest"][0] < CASE_LIMIT_S
