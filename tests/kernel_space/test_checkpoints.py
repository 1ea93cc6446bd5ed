"""Conversion of reference state_dicts, Orbax round trips, and errors on checkpoints that do not fit."""

import contextlib
import json
import logging
import os
import pathlib
import pickle
import shutil
import zipfile

import jax
import numpy as np
import pytest
from conftest import GOLDEN

import kernelspace_jax as ksj
from kernelspace_jax.assets import shipped_checkpoint_path
from kernelspace_jax.cli import convert
from kernelspace_jax.io.pth import CheckpointFormatError, UnsafeCheckpointError, read_pth
from kernelspace_jax.kernel_space import checkpoints, config

PTH = GOLDEN / "kw_micro_wvae_init.pth"


@pytest.fixture(scope="module")
def state():
    return read_pth(PTH)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_config_is_inferred_from_shapes(state):
    assert checkpoints.infer_config(state) == config.micro(use_vae=True)
    assert checkpoints.infer_config(read_pth(GOLDEN / "kw_micro_wovae_init.pth")) == config.micro(use_vae=False)


def test_state_dict_round_trip(state):
    params, cfg = checkpoints.params_from_state_dict(state)
    back = checkpoints.state_dict_from_params(params, cfg)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_data_parallel_prefix_and_wrapper_are_accepted(state):
    prefixed = {"module." + k: v for k, v in state.items()}
    params, _ = checkpoints.params_from_state_dict(prefixed)
    wrapped, _ = checkpoints.params_from_state_dict({"state_dict": state})
    reference, _ = checkpoints.params_from_state_dict(state)
    assert _leaves_equal(params, reference) and _leaves_equal(wrapped, reference)


def test_wrong_shape_names_the_key(state):
    bad = dict(state)
    bad["recon_trunk.7.weight"] = np.zeros((64, 64, 5, 5), np.float32)
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"recon_trunk\.7\.weight.*\(64, 64, 3, 3\)"):
        checkpoints.params_from_state_dict(bad)


def test_missing_and_unexpected_keys_are_named(state):
    missing = {k: v for k, v in state.items() if k != "adapter.model.up.1.bias"}
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"missing key 'adapter\.model\.up\.1\.bias'"):
        checkpoints.params_from_state_dict(missing)
    extra = {**state, "adapter.model.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"unexpected key 'adapter\.model\.extra\.weight'"):
        checkpoints.params_from_state_dict(extra)


def test_block_count_mismatch_against_a_given_config(state):
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"missing key 'feature_extractor\.7\.conv1"):
        checkpoints.params_from_state_dict(
            state,
            config.KernelSpaceConfig(
                nf=8, kernel_dim=64, front_blocks=2, back_blocks=1, extractor_blocks=1, use_vae=True
            ),
        )


def test_not_a_kernel_wizard_state_dict():
    with pytest.raises(CheckpointFormatError, match="not a KernelWizard state_dict"):
        checkpoints.params_from_state_dict({"conv.weight": np.zeros((1, 1, 3, 3), np.float32)})
    with pytest.raises(CheckpointFormatError, match="state_dict"):
        checkpoints.params_from_state_dict([1, 2, 3])


def test_orbax_round_trip(tmp_path):
    model = ksj.load(PTH)
    ksj.save(model, tmp_path / "ckpt")
    again = ksj.load(tmp_path / "ckpt")
    assert again.config == model.config and _leaves_equal(again.params, model.params)
    with pytest.raises(ValueError, match="exists"):
        ksj.save(model, tmp_path / "ckpt")


def test_folder_of_numbered_checkpoints_loads_latest_or_step(tmp_path):
    model = ksj.load(PTH)
    shifted = model.replace(params=jax.tree.map(lambda p: p + 1, model.params))
    ksj.save(model, tmp_path / "run" / "checkpoints" / "10")
    ksj.save(shifted, tmp_path / "run" / "checkpoints" / "20")
    assert _leaves_equal(ksj.load(tmp_path / "run").params, shifted.params)
    assert _leaves_equal(ksj.load(tmp_path / "run", step=10).params, model.params)
    with pytest.raises(FileNotFoundError, match=r"available: \[10, 20\]"):
        ksj.load(tmp_path / "run", step=15)


def test_orbax_checkpoint_that_does_not_fit_its_config(tmp_path):
    model = ksj.load(PTH)
    ksj.save(model, tmp_path / "ckpt")
    meta_file = next((tmp_path / "ckpt" / "config").glob("*"))
    meta = json.loads(meta_file.read_text())
    meta["kernel_space"]["front_blocks"] = 2
    meta_file.write_text(json.dumps(meta))
    checkpoints.write_checksums(tmp_path / "ckpt")  # an edited config, not a damaged file
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"features/block_1/conv1.*missing"):
        ksj.load(tmp_path / "ckpt")


def test_load_rejects_other_folders_and_missing_paths(tmp_path):
    with pytest.raises(CheckpointFormatError, match="neither"):
        ksj.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        ksj.load(tmp_path / "missing.pth")


def test_convert_command_line(tmp_path, capsys):
    out = tmp_path / "converted"
    assert convert.main([str(PTH), str(out)]) == 0
    assert "938,683 parameters" in capsys.readouterr().out
    assert _leaves_equal(ksj.load(out).params, ksj.load(PTH).params)
    assert convert.main([str(PTH), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert convert.main([str(PTH), str(out), "--overwrite"]) == 0


def test_convert_overwrite_replaces_only_its_own_checkpoints(tmp_path, capsys):
    """--overwrite never deletes a folder that is not a checkpoint written by this package."""
    for name, make in (
        ("photos", lambda p: (p.mkdir(), (p / "holiday.jpg").write_bytes(b"precious"))),
        ("a_file", lambda p: p.write_bytes(b"precious")),
        ("foreign_orbax", lambda p: [(p / d).mkdir(parents=True) for d in ("params", "config")]),
    ):
        target = tmp_path / name
        make(target)
        before = sorted((q.relative_to(tmp_path), q.read_bytes() if q.is_file() else b"") for q in target.rglob("*"))
        assert convert.main([str(PTH), str(target), "--overwrite"]) == 1
        err = capsys.readouterr().err
        assert "not a kernelspace-jax checkpoint" in err and "Traceback" not in err
        assert target.exists()
        after = sorted((q.relative_to(tmp_path), q.read_bytes() if q.is_file() else b"") for q in target.rglob("*"))
        assert after == before
    assert (tmp_path / "a_file").read_bytes() == b"precious"
    assert checkpoints.is_own_checkpoint(ksj.save(ksj.load(PTH), tmp_path / "ours"))
    assert not checkpoints.is_own_checkpoint(tmp_path / "foreign_orbax")


def test_convert_refuses_a_malicious_file(tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path),))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"feature_extractor.0.weight": Exploit()}, protocol=2))
    assert convert.main([str(path), str(tmp_path / "out")]) == 1
    assert "refusing to load" in capsys.readouterr().err
    assert os.path.exists(path) and not (tmp_path / "out").exists()
    with pytest.raises(UnsafeCheckpointError):
        ksj.load(path)


@pytest.mark.parametrize("sharp_skip", [False, True])
def test_every_architecture_field_is_inferred_from_shapes(sharp_skip):
    cfg = config.KernelSpaceConfig(
        nf=8,
        kernel_dim=64,
        front_blocks=2,
        back_blocks=3,
        extractor_blocks=0,
        use_vae=True,
        hr_width=16,
        sharp_skip=sharp_skip,
    )
    model = ksj.init(jax.random.key(0), cfg)
    params, inferred = checkpoints.params_from_state_dict(checkpoints.state_dict_from_params(model.params, cfg))
    assert inferred == cfg and _leaves_equal(params, model.params)


# ---------------------------------------------------------------------------------------------
# Checkpoint integrity: checksums.json written by every save, verified by every load
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A micro checkpoint written by ksj.save; tests damage copies of it."""
    return pathlib.Path(ksj.save(ksj.load(PTH), tmp_path_factory.mktemp("saved") / "ckpt"))


def _copy(saved, tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(saved, tmp_path / "ckpt"))


def _largest_parameter_file(path) -> pathlib.Path:
    return max((p for p in (path / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_bytes(file, count=3):
    data = bytearray(file.read_bytes())
    for i in np.linspace(16, len(data) - 16, count).astype(int):
        data[i] ^= 0x5A
    file.write_bytes(bytes(data))


DAMAGE = {
    "deleted": (lambda f: f.unlink(), "is missing"),
    "truncated": (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "(truncated)"),
    "flipped": (_flip_bytes, "has changed since it was written"),
}


@contextlib.contextmanager
def _logged(name="kernelspace_jax"):
    """Records of logger `name` (the commands' logging setup stops them from reaching caplog's handler)."""
    records, logger = [], logging.getLogger(name)
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_save_records_the_checksum_of_every_file(saved):
    manifest = json.loads((saved / checkpoints.CHECKSUMS_FILE).read_text())
    files = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert manifest["algorithm"] == "sha256" and set(manifest["files"]) == files - {checkpoints.CHECKSUMS_FILE}
    assert checkpoints.verify_checksums(saved) is True


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_parameter_file_is_one_error_naming_the_item(saved, tmp_path, damage):
    path = _copy(saved, tmp_path)
    file = _largest_parameter_file(path)
    spoil, says = DAMAGE[damage]
    spoil(file)
    with pytest.raises(checkpoints.CheckpointCorruptError) as raised:
        ksj.load(path)
    message = str(raised.value)
    assert isinstance(raised.value, CheckpointFormatError) and "\n" not in message
    assert message.startswith(f"{path}: checkpoint damaged: item 'params': file {file.relative_to(path).as_posix()}")
    assert says in message and "write it again" in message


def test_a_deleted_orbax_manifest_with_and_without_checksums(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / "params" / "manifest.ocdbt").unlink()
    with pytest.raises(
        checkpoints.CheckpointCorruptError, match=r"item 'params': file params/manifest\.ocdbt is missing"
    ):
        ksj.load(path)
    (path / checkpoints.CHECKSUMS_FILE).unlink()  # as a checkpoint of an older version: Orbax's error, wrapped
    with pytest.raises(checkpoints.CheckpointCorruptError, match=r"item 'params' cannot be restored \(ValueError"):
        ksj.load(path)


def test_a_checkpoint_without_checksums_loads_after_one_note(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / checkpoints.CHECKSUMS_FILE).unlink()
    with _logged() as records:
        first, again = ksj.load(path), ksj.load(path)
    notes = [r.getMessage() for r in records if "unverified" in r.getMessage()]
    assert len(notes) == 1 and str(path) in notes[0]
    assert _leaves_equal(first.params, ksj.load(saved).params) and _leaves_equal(again.params, first.params)


def test_a_damaged_or_hostile_checksums_file(saved, tmp_path):
    path = _copy(saved, tmp_path)
    manifest_file = path / checkpoints.CHECKSUMS_FILE
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_bytes(b"\x00garbage")
    with pytest.raises(checkpoints.CheckpointCorruptError, match=r"checksums\.json is unreadable"):
        ksj.load(path)
    entry = next(iter(manifest["files"].values()))
    manifest_file.write_text(json.dumps({**manifest, "files": {"../../etc/passwd": entry}}))
    with pytest.raises(checkpoints.CheckpointCorruptError, match=r"malformed entry '\.\./\.\./etc/passwd'"):
        ksj.load(path)
    manifest_file.write_text(json.dumps(manifest))
    victim = _largest_parameter_file(path)
    victim.unlink()
    os.mkfifo(victim)  # reading it would block forever: refused unread
    with pytest.raises(checkpoints.CheckpointCorruptError, match="is not a regular file"):
        ksj.load(path)


def test_a_damaged_latest_step_names_the_steps_to_load_instead(tmp_path):
    model = ksj.load(PTH)
    for step in (10, 20):
        ksj.save(model, tmp_path / "run" / "checkpoints" / str(step))
    DAMAGE["truncated"][0](_largest_parameter_file(tmp_path / "run" / "checkpoints" / "20"))
    with pytest.raises(checkpoints.CheckpointCorruptError, match=r"checkpoints/20: .*load another step .*\[10\]"):
        ksj.load(tmp_path / "run")
    assert _leaves_equal(ksj.load(tmp_path / "run", step=10).params, model.params)


def test_commands_say_one_line_for_a_damaged_checkpoint(saved, tmp_path, capsys, monkeypatch):
    """evaluate and deblur stop with status 1 and one line, before any search or evaluation."""
    from PIL import Image

    from kernelspace_jax.cli import deblur, evaluate
    from kernelspace_jax.deblurring import files

    path = _copy(saved, tmp_path)
    file = _largest_parameter_file(path)
    _flip_bytes(file)
    monkeypatch.setattr(files, "deblur_files", lambda *a, **k: pytest.fail("the search ran"))
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "blurry.png")
    image, out = str(tmp_path / "blurry.png"), str(tmp_path / "out")
    for main, argv in (
        (evaluate.main, ["--checkpoint", str(path), "--num", "1"]),
        (deblur.main, ["--checkpoint", str(path), "--input", image, "--output", out, "--noprogress"]),
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"{path}: checkpoint damaged: item 'params': file {file.relative_to(path).as_posix()}" in err


def test_convert_writes_checksums_and_refuses_an_unwritable_output(tmp_path, capsys):
    out = tmp_path / "converted"
    assert convert.main([str(PTH), str(out)]) == 0
    assert checkpoints.verify_checksums(out) is True
    capsys.readouterr()
    (tmp_path / "a_file").write_bytes(b"")
    assert convert.main([str(PTH), str(tmp_path / "a_file" / "out")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("vae", [False, True])
def test_shipped_models_carry_checksums(vae):
    assert checkpoints.verify_checksums(shipped_checkpoint_path(vae)) is True
