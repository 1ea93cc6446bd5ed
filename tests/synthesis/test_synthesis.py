"""Blur synthesis: transfer, prior samples, interpolation, the kernel bank, augmentation, the CLI.

Random-init micro models: the tests check shapes, determinism and plumbing, not blur quality
(benchmarks/synthesis.py `quality` measures that on a trained model). Images stay small and few
shapes are used, since every new shape compiles F or G again.
"""

import csv
import dataclasses
import functools
import json
import os
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import kernelspace_jax as ksj
from kernelspace_jax import synthesis
from kernelspace_jax.assets import shipped_checkpoint_path
from kernelspace_jax.cli import synthesize
from kernelspace_jax.data import synthetic
from kernelspace_jax.data.paired_folders import scan_paired_folders
from kernelspace_jax.kernel_space.model import abstract_params

# The micro configuration without its residual blocks: every test compiles F or G a few times.
NANO = dataclasses.replace(
    ksj.kernel_space.config.micro(use_vae=True), front_blocks=0, back_blocks=0, extractor_blocks=0, hr_width=8
)
# XLA's unoptimised CPU code compiles these networks ~2.5x faster and runs them as fast at this size.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-init VAE and plain models saved as the CLI reads them."""
    root = tmp_path_factory.mktemp("checkpoints")
    ksj.save(ksj.init(jax.random.key(0), NANO), root / "vae")
    # Without a VAE: only ever refused or told apart from the VAE, so zeros do (and skip an init).
    config = dataclasses.replace(NANO, use_vae=False)
    zeros = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), abstract_params(config))
    ksj.save(ksj.KernelSpaceModel(zeros, config), root / "plain")
    return root


# Loaded, not fresh from init: the library tests then share compiled functions with the CLI's (arrays
# read from a checkpoint sit on a device explicitly, and jit compiles anew for such placements).
@pytest.fixture(scope="module")
def vae(checkpoints):
    return ksj.load(checkpoints / "vae")


@pytest.fixture(scope="module")
def plain(checkpoints):
    return ksj.load(checkpoints / "plain")


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape).astype(np.float32))


def _pairs(num, size=64, seed=0):
    config = synthetic.SyntheticBlurConfig(crop_size=size, kernel_size_range=(5, 9), seed=seed)
    return synthetic.SyntheticPairs(config, "test", num)


# ---------------------------------------------------------------------------------------------
# Library
# ---------------------------------------------------------------------------------------------


def test_transfer_odd_sizes_fits_kernel_and_is_deterministic(vae):
    source_sharp, target = _images((2, 64, 64, 3)), _images((2, 41, 301, 3), seed=1)
    source_blurry = jnp.clip(source_sharp * 0.8 + 0.1, 0, 1)
    run = jit(synthesis.transfer, static_argnames="fit")
    blurry, kernel = run(vae, jax.random.key(3), source_sharp, source_blurry, target)
    assert blurry.shape == target.shape and kernel.shape == (2, *vae.kernel_shape(64, 64))
    assert vae.kernel_shape(41, 301)[:2] == (1, 3)  # so the kernel was fitted to another grid
    assert float(blurry.min()) >= 0 and float(blurry.max()) <= 1
    again, kernel_again = run(vae, jax.random.key(3), source_sharp, source_blurry, target)
    np.testing.assert_array_equal(blurry, again)
    np.testing.assert_array_equal(kernel, kernel_again)
    _, other = run(vae, jax.random.key(4), source_sharp, source_blurry, target)
    assert not np.allclose(kernel, other)  # a VAE reparameterises with its sigma
    with pytest.raises(ValueError, match="2 source pairs for 1 target"):
        synthesis.transfer(vae, jax.random.key(0), source_sharp, source_blurry, target[:1])
    with pytest.raises(ValueError, match="same shape"):
        synthesis.transfer(vae, jax.random.key(0), source_sharp, source_blurry[:, :48], target)
    with pytest.raises(ValueError, match="empty batch"):
        synthesis.transfer(vae, jax.random.key(0), source_sharp[:0], source_blurry[:0], target[:0])


def test_sample_vmap_equals_loop_and_needs_a_vae(vae, plain):
    sharp = _images((2, 37, 45, 3))
    keys = jax.random.split(jax.random.key(5), 2)

    def one(key, x):  # one image (H, W, 3) -> its sample
        return synthesis.sample(vae, key, x[None])[0][0]

    looped = jnp.stack([jit(one)(keys[i], sharp[i]) for i in range(2)])
    mapped = jit(jax.vmap(one))(keys, sharp)
    assert mapped.shape == sharp.shape
    np.testing.assert_allclose(mapped, looped, atol=1e-5)
    kernel = synthesis.prior_kernels(vae, jax.random.key(0), 64, 37, 45, scale=1.2)
    assert kernel.shape == (64, *vae.kernel_shape(37, 45))
    assert abs(float(kernel.std()) - 1.2) < 0.05
    with pytest.raises(ValueError, match="needs a VAE model"):
        synthesis.sample(plain, jax.random.key(0), sharp)
    with pytest.raises(ValueError, match="needs a VAE model"):
        synthesis.make_augmentation(plain)


def test_image_keys():
    key = jax.random.key(0)
    np.testing.assert_array_equal(
        jax.random.key_data(synthesis.image_keys(key, 3)), jax.random.key_data(jax.random.split(key, 3))
    )
    raw = jax.random.PRNGKey(0)  # raw uint32 keys too, returned as typed keys of the same data
    np.testing.assert_array_equal(jax.random.key_data(synthesis.image_keys(raw, 3)), jax.random.split(raw, 3))
    np.testing.assert_array_equal(
        jax.random.key_data(synthesis.image_keys(jax.random.split(raw, 3), 3)), jax.random.split(raw, 3)
    )
    with pytest.raises(ValueError, match="one per image"):
        synthesis.image_keys(jax.random.split(key, 2), 3)


def test_interpolate():
    a, b = _images((2, 2, 3, 8)), _images((2, 2, 3, 8), seed=1) * 3
    interpolate = jax.jit(synthesis.interpolate, static_argnums=2, static_argnames="method")
    for method in ("linear", "spherical"):
        path = interpolate(a, b, 5, method=method)
        assert path.shape == (5, 2, 2, 3, 8)
        np.testing.assert_allclose(path[0], a, atol=1e-5)
        np.testing.assert_allclose(path[-1], b, atol=1e-5)
    norms = jnp.sqrt(jnp.sum(interpolate(a, b, 5, method="spherical") ** 2, axis=(2, 3, 4)))
    ends = jnp.sqrt(jnp.sum(a**2, axis=(1, 2, 3))), jnp.sqrt(jnp.sum(b**2, axis=(1, 2, 3)))
    np.testing.assert_allclose(norms[2], (ends[0] + ends[1]) / 2, rtol=1e-5)  # norms interpolate linearly
    np.testing.assert_allclose(interpolate(a, a, 5, method="spherical")[1], a, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        synthesis.interpolate(a, b, 1)
    with pytest.raises(ValueError, match="one shape"):
        synthesis.interpolate(a, b[:, :1], 3)
    with pytest.raises(ValueError, match="method"):
        synthesis.interpolate(a, b, 3, method="cubic")


def test_fit_kernel():
    kernel = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(1, 2, 1, 6).repeat(2, axis=2)  # (1, 2, 2, 6)
    assert synthesis.fit_kernel(kernel, (2, 2)) is kernel
    fit = jax.jit(synthesis.fit_kernel, static_argnums=1, static_argnames="method")
    tiled = fit(kernel, (3, 5), method="tile")
    np.testing.assert_array_equal(tiled[0, 2], kernel[0, 0, 0].repeat(5).reshape(6, 5).T)
    mean = fit(kernel, (3, 5), method="mean")
    np.testing.assert_allclose(mean[0, 1, 4], kernel[0].mean(axis=(0, 1)))
    np.testing.assert_allclose(fit(jnp.ones((1, 2, 2, 6)), (3, 5), method="resize"), 1.0, rtol=1e-6)
    resized = fit(kernel, (3, 5), method="resize")
    assert resized.shape == (1, 3, 5, 6) and float(resized[0, 0, 0, 0]) < float(resized[0, -1, 0, 0])
    with pytest.raises(ValueError, match="fit method"):
        synthesis.fit_kernel(kernel, (3, 5), method="nearest")


def test_bank_build_save_load_and_checks(vae, plain, tmp_path):
    pairs = _pairs(3)
    bank = synthesis.build_bank(vae, pairs, batch_size=2, meta={"source": "test"})  # last batch padded
    assert len(bank) == 3 and list(bank.ids) == ["0", "1", "2"] and bank.image_size == (64, 64)
    assert bank.mean.shape == (3, *vae.kernel_shape(64, 64)) and bank.psnr.shape == (3,)
    assert np.any(bank.sigma != 0)
    first = synthesis.build_bank(vae, [pairs[0]], batch_size=2)  # same record, another batch
    np.testing.assert_allclose(first.mean[0], bank.mean[0], atol=1e-5)
    path = tmp_path / "bank.npz"
    synthesis.save_bank(bank, path)
    loaded = synthesis.load_bank(path, model=vae)
    np.testing.assert_array_equal(loaded.mean, bank.mean)
    assert loaded.meta == bank.meta and loaded.index("2") == 2 and loaded.index("-1") == 2
    with pytest.raises(KeyError):
        loaded.index("nope")
    with pytest.raises(ValueError, match="another model"):
        synthesis.load_bank(path, model=plain)
    with pytest.raises(ValueError, match="empty"):
        synthesis.build_bank(vae, [])
    bad = {"sharp": np.zeros((64, 64, 3), np.float32), "blurry": np.zeros((64, 48, 3), np.float32), "id": "x"}
    with pytest.raises(ValueError, match=r"pair 0 \(x\).*one \(H, W, 3\) shape"):
        synthesis.build_bank(vae, [bad])
    (tmp_path / "junk.npz").write_bytes(b"not a bank")
    with pytest.raises(ValueError, match="not a kernel bank"):
        synthesis.load_bank(tmp_path / "junk.npz")


def test_augmentation_in_a_jitted_training_step(vae):
    bank = synthesis.build_bank(vae, _pairs(2), batch_size=2)
    sharp = _images((2, 64, 64, 3))

    def deblur(params, blurry):  # a toy per-pixel colour mix to train
        return blurry @ params["w"] + params["b"]

    optimizer = optax.sgd(0.1)

    @jit
    @chex.assert_max_traces(n=1)
    def step(params, opt_state, augment, key, sharp):
        def loss_fn(params):
            blurry = augment(key, sharp)
            return jnp.mean((deblur(params, blurry) - sharp) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    # Placed on the device as the step's outputs will be, so that the second call hits the compiled step.
    params = jax.device_put({"w": jnp.eye(3) * 0.5, "b": jnp.zeros(3)}, jax.devices()[0])
    opt_state = optimizer.init(params)
    for augment in (synthesis.make_augmentation(vae, bank=bank), synthesis.make_augmentation(vae, bank=bank)):
        for i in range(2):  # a second augmentation with the same structure reuses the compiled step
            params, opt_state, loss = step(params, opt_state, augment, jax.random.key(i), sharp)
            assert np.isfinite(float(loss))
    assert not np.allclose(params["w"], jnp.eye(3) * 0.5)
    kernels, entries = synthesis.make_augmentation(vae, bank=bank).kernels(jax.random.key(0), 4, 64, 300)
    assert kernels.shape == (4, *vae.kernel_shape(64, 300)) and set(np.asarray(entries)) <= {0, 1}
    np.testing.assert_array_equal(entries, synthesis.bank_indices(synthesis.image_keys(jax.random.key(0), 4), 2))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, checkpoints):
    root = tmp_path_factory.mktemp("synthesize")
    for name in ("vae", "plain"):
        (root / name).symlink_to(checkpoints / name)
    synthetic.write_paired_folders(_pairs(3), root / "pairs")
    # Targets the size of the sources: the CLI then reuses the bank's compiled F (odd sizes: library tests).
    targets = synthetic.SyntheticPairs(
        synthetic.SyntheticBlurConfig(crop_size=(64, 64), kernel_size_range=(5, 9), seed=1), "train", 3
    )
    synthetic.write_paired_folders(targets, root / "targets")
    return root


def _run(capsys, *argv):
    code = synthesize.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_cli_transfer_resumes_deterministically(workspace, capsys):
    out = workspace / "transfer"
    args = [
        "transfer",
        "--checkpoint",
        workspace / "vae",
        "--source",
        workspace / "pairs",
        "--target",
        workspace / "targets" / "sharp",
        "--out",
        out,
        "--per_image",
        "2",
        "--batch_size",
        "2",
    ]
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    assert "Reconstruction PSNR of image #005/006" in stdout and "Average reconstruction PSNR" in stdout
    records, _ = scan_paired_folders(out / "blur", out / "sharp")  # what the training pipeline reads
    assert len(records) == 6 and (records[0].height, records[0].width) == (64, 64)
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["target"] for r in rows] == ["000/00000000"] * 2 + ["000/00000001"] * 2 + ["000/00000002"] * 2
    assert {r["source"] for r in rows} <= {"000/00000000", "000/00000001", "000/00000002"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 6
    np.testing.assert_allclose(summary["mean_source_psnr"], np.mean([float(r["source_psnr"]) for r in rows]))
    side = synthesize.THUMBNAIL
    assert Image.open(out / "contact_sheet.png").size == (3 * side + 8, 3 * side + 8)  # 3 x (sharp | 2 blurs)
    first = _files(out)

    os.remove(out / "blur" / "000" / "00000003.png")  # interrupted: one output missing
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    assert "reusing the kernel bank" in stdout
    assert json.loads((out / "summary.json").read_text())["written"] == 1
    assert _files(out) == first  # the same bytes, though batched differently

    code, _, err = _run(capsys, *args[:-2], "--batch_size", "2", "--seed", "1")
    assert code == 1 and "delete it or use another --out" in err  # the bank was built with seed 0


def test_cli_sample_bank_interpolate(workspace, capsys):
    glob = workspace / "targets" / "sharp" / "**" / "*.png"
    code, _, err = _run(
        capsys,
        "sample",
        "--checkpoint",
        workspace / "vae",
        "--target",
        glob,
        "--out",
        workspace / "sample",
        "--per_image",
        "2",
        "--batch_size",
        "2",
    )
    assert code == 0, err
    assert len(_files(workspace / "sample" / "blur")) == 6
    assert (workspace / "sample" / "contact_sheet.png").is_file()
    code, _, err = _run(
        capsys,
        "sample",
        "--checkpoint",
        workspace / "plain",
        "--target",
        glob,
        "--out",
        workspace / "sample_plain",
    )
    assert code == 1 and "needs a VAE model" in err

    bank = workspace / "synthetic_bank.npz"
    code, stdout, err = _run(
        capsys,
        "bank",
        "--checkpoint",
        workspace / "vae",
        "--source",
        "synthetic",
        "--crop",
        "64",
        "--num",
        "2",
        "--out",
        bank,
        "--batch_size",
        "2",
    )
    assert code == 0, err
    assert "Reconstruction PSNR of pair #001/002" in stdout and bank.with_suffix(".csv").is_file()

    out = workspace / "interpolate"
    code, _, err = _run(
        capsys,
        "interpolate",
        "--checkpoint",
        workspace / "vae",
        "--bank",
        bank,
        "--a",
        "1",
        "--b",
        "0",
        "--steps",
        "3",
        "--method",
        "spherical",
        "--target",
        workspace / "targets" / "sharp",
        "--out",
        out,
        "--batch_size",
        "2",
    )
    assert code == 0, err
    assert sorted(_files(out / "blur"))[:3] == ["000/00000000.png", "000/00000001.png", "000/00000002.png"]
    assert len(_files(out / "blur")) == 9 and (out / "interpolation_strip.png").is_file()


def test_cli_defaults_to_the_shipped_models(workspace, capsys, tmp_path):
    targets = workspace / "targets" / "sharp"
    code, _, err = _run(capsys, "sample", "--target", targets, "--out", tmp_path / "sample", "--batch_size", "3")
    assert code == 0, err
    assert len(_files(tmp_path / "sample" / "blur")) == 3
    summary = json.loads((tmp_path / "sample" / "summary.json").read_text())
    assert Path(summary["checkpoint"]) == shipped_checkpoint_path(vae=True)


def test_cli_bad_inputs(workspace, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for side in ("blur", "sharp"):
        (tmp_path / "no_pairs" / side).mkdir(parents=True)
    mismatched = tmp_path / "mismatched"
    for side, size in (("blur", (64, 64)), ("sharp", (64, 80))):
        (mismatched / side / "000").mkdir(parents=True)
        Image.new("RGB", size).save(mismatched / side / "000" / "a.png")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    base = ["--checkpoint", workspace / "vae", "--out", tmp_path / "out"]
    targets = workspace / "targets" / "sharp"
    cases = [
        (["transfer", *base, "--source", mismatched, "--target", targets], "sizes differ"),
        (["transfer", *base, "--source", tmp_path / "empty", "--target", targets], "no blur/ and sharp/"),
        (["transfer", *base, "--source", tmp_path / "no_pairs", "--target", targets], "No usable"),
        (["transfer", *base, "--source", workspace / "pairs", "--target", tmp_path / "empty"], "no .png"),
        (["sample", *base, "--target", tmp_path / "missing" / "*.png"], "no .png"),
        (["sample", *base, "--target", tmp_path / "broken"], "unreadable image"),
        (["transfer", *base, "--target", targets], "give --source or --bank"),
        (["transfer", *base, "--bank", tmp_path / "nothing.npz", "--target", targets], "no kernel bank"),
        (
            ["sample", "--checkpoint", tmp_path / "missing", "--out", tmp_path, "--target", targets],
            "checkpoint",
        ),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 1 and message in err, (argv, err)
