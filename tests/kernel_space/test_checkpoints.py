"""Conversion of reference state_dicts, Orbax round trips, and errors on checkpoints that do not fit."""

import json
import os
import pickle
import shutil
import zipfile

import jax
import numpy as np
import pytest
from conftest import GOLDEN

import kernelspace_jax as ksj
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
