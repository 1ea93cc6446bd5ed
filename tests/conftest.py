"""Shared fixtures: the golden files of the reference (NCHW) read as NHWC arrays; a two-CPU-device launcher;
one XLA compilation cache for the whole run."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

# The suite compiles ~100 XLA programs and runs most of them a few times on tiny inputs: without
# LLVM's optimisations they compile ~2x faster (the whole suite: 9.4 -> 6.5 min on 2 cores), same
# results to round-off. Set before jax starts its backend; subprocesses of the tests inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()


def with_two_cpu_devices(env: dict) -> dict:
    """`env` for a subprocess with two host-platform CPU devices (keeping the other XLA flags)."""
    flags = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    return {**env, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = []


def pytest_configure(config):
    """A persistent compilation cache, new for each run and shared by its xdist workers and the
    subprocesses the tests start (they inherit the environment): a program that several processes
    compile (a training step a killed subprocess and the test both run, say) compiles once."""
    if CACHE_ENV not in os.environ:
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="kernelspace-jax-xla-cache-"))
        os.environ[CACHE_ENV] = _OWN_CACHE[0]
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def pytest_unconfigure(config):
    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
ENERGIZED = DATA / "golden_energized"
ROOT = pathlib.Path(__file__).resolve().parents[1]


def start_on_two_cpu_devices(code: str, *args: str) -> subprocess.Popen:
    """Starts `python -c code *args` from the repository root with two host-platform CPU devices.

    tests/ is on its path, so `code` can import test modules (`from tests.test_x import ...`), which import conftest.
    """
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**with_two_cpu_devices(dict(os.environ)), "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def nhwc(array):
    return np.asarray(array).transpose(0, 2, 3, 1)


def nchw(array):
    return np.asarray(array).transpose(0, 3, 1, 2)


def golden_inputs(size: str):
    """Sharp, blurry, O(1) kernel and eps of kw_inputs_<size>.npz, NHWC float32."""
    z = np.load(GOLDEN / f"kw_inputs_{size}.npz")
    return {
        "sharp": nhwc(z["sharp_u8"].astype(np.float32) / 256),
        "blurry": nhwc(z["blur_u8"].astype(np.float32) / 256),
        "kernel_rand": nhwc(z["kernel_rand"]),
        "eps": nhwc(z["eps"]),
    }


def assert_fingerprint(actual_nhwc, golden, name, tol, scale=None):
    """Compares an NHWC output with a fingerprinted NCHW golden (sub-sample and row/column sums)."""
    y = nchw(actual_nhwc).astype(np.float64)
    scale = scale if scale is not None else max(1.0, float(np.abs(golden[name + "__sub"]).max()))
    assert tuple(y.shape) == tuple(golden[name + "__shape"])
    sub = y[:, :, golden[name + "__sub_rows"]][:, :, :, golden[name + "__sub_cols"]]
    np.testing.assert_allclose(sub, golden[name + "__sub"], rtol=0, atol=tol * scale)
    np.testing.assert_allclose(y.sum(3), golden[name + "__sum_w"], rtol=0, atol=tol * scale * y.shape[3])
    np.testing.assert_allclose(y.sum(2), golden[name + "__sum_h"], rtol=0, atol=tol * scale * y.shape[2])


def golden_meta(npz):
    return json.loads(str(npz["meta"]))


@pytest.fixture(scope="session")
def micro_models():
    """The four golden micro models, {(folder, variant): KernelSpaceModel}, loaded from .pth once."""
    import kernelspace_jax as ksj

    return {
        (folder.name, variant): ksj.load(folder / f"kw_micro_{variant}_init.pth")
        for folder in (GOLDEN, ENERGIZED)
        for variant in ("wovae", "wvae")
    }
