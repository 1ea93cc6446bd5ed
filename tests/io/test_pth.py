"""The .pth reader: torch's two formats without torch, and refusal of anything that is not data."""

import collections
import io
import os
import pickle
import types
import zipfile
from typing import ClassVar

import numpy as np
import pytest
from conftest import DATA, GOLDEN

from kernelspace_jax.io.pth import CheckpointFormatError, UnsafeCheckpointError, read_pth

FIXTURES = DATA / "pth"


@pytest.mark.parametrize("name", ["zip_format.pth", "legacy_format.pth"])
def test_reads_dtypes_strides_and_views_like_torch(name):
    expected = np.load(FIXTURES / "expected.npz")
    state = read_pth(FIXTURES / name)
    assert list(state) == ["f32", "f16", "bf16", "f64", "i64", "transposed", "view", "scalar", "empty"]
    for key in expected.files:
        got = np.asarray(state[key])
        assert got.shape == expected[key].shape, key
        np.testing.assert_array_equal(got.astype(np.float64), expected[key].astype(np.float64), err_msg=key)
    assert state["f16"].dtype == np.float16 and state["i64"].dtype == np.int64
    assert state["bf16"].dtype.name == "bfloat16"


def test_reads_the_golden_state_dict():
    state = read_pth(GOLDEN / "kw_micro_wovae_init.pth")
    assert len(state) == 41
    assert state["feature_extractor.0.weight"].shape == (8, 3, 3, 3)
    assert state["adapter.model.up.1.weight"].shape == (16, 8, 4, 4)
    assert sum(v.size for v in state.values()) == 570043


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_like_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/version", "3\n")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_refuses_malicious_pickle_without_running_it(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Exploit(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        _torch_like_zip(path, payload)
    else:  # legacy stream: magic number, protocol, sys_info, then the object
        header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
        path.write_bytes(header + payload)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system"):
        read_pth(path)
    assert not marker.exists()


def test_refuses_other_globals(tmp_path):
    path = tmp_path / "builtins.pth"
    _torch_like_zip(path, pickle.dumps({"x": print}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtin_*\.print"):
        read_pth(path)


def test_truncated_file_is_a_format_error(tmp_path):
    data = (GOLDEN / "kw_micro_wovae_init.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError):
        read_pth(path)


def test_short_storage_is_a_format_error(tmp_path):
    source = zipfile.ZipFile(GOLDEN / "kw_micro_wovae_init.pth")
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(path, "w") as out:
        for item in source.namelist():
            data = source.read(item)
            out.writestr(item, data[:10] if item.endswith("data/0") else data)
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_pth(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", bytes(range(256)) * 4])
def test_garbage_is_a_format_error(tmp_path, content):
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError):
        read_pth(path)


def _rebuild_tensor_v2(*args):  # only its name is pickled: torch._utils._rebuild_tensor_v2
    raise AssertionError


class _FloatStorage:  # only its name is pickled: torch.FloatStorage
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
_FloatStorage.__module__, _FloatStorage.__qualname__ = "torch", "FloatStorage"


class _PersistentStorage:
    pass


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...), as torch.save does."""

    def __init__(self, offset, size, stride):
        self.args = (offset, size, stride)

    def __reduce__(self):
        return (_rebuild_tensor_v2, (_PersistentStorage(), *self.args, False, collections.OrderedDict()))


class _TorchLikePickler(pickle._Pickler):
    """Writes globals by name without importing them (torch is not installed) and storages as
    persistent ids, as torch.save does."""

    def save_global(self, obj, name=None):
        self.write(pickle.GLOBAL + f"{obj.__module__}\n{name or obj.__qualname__}\n".encode())

    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, types.FunctionType: save_global, type: save_global}

    def persistent_id(self, obj):
        return ("storage", _FloatStorage, "0", "cpu", 4) if isinstance(obj, _PersistentStorage) else None


def _crafted_zip(path, offset, size, stride):
    """A zip-format .pth: one tensor (offset, size, stride) over a 4-element float storage."""
    buffer = io.BytesIO()
    _TorchLikePickler(buffer, protocol=2).dump({"weight": _Tensor(offset, size, stride)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("crafted/data.pkl", buffer.getvalue())
        archive.writestr("crafted/data/0", np.arange(4, dtype="<f4").tobytes())
        archive.writestr("crafted/version", "3\n")
    return path


def test_crafted_tensor_views_are_checked_before_allocating(tmp_path):
    good = read_pth(_crafted_zip(tmp_path / "good.pth", 0, (2, 2), (2, 1)))["weight"]
    np.testing.assert_array_equal(good, [[0, 1], [2, 3]])
    # A zero stride under a huge shape: 4 bytes claiming 2**34 floats (64 GiB) are refused at once.
    with pytest.raises(CheckpointFormatError, match="not a dense view"):
        read_pth(_crafted_zip(tmp_path / "zero_stride.pth", 0, (2**17, 2**17), (0, 0)))
    with pytest.raises(CheckpointFormatError, match="more elements than its storage"):
        read_pth(_crafted_zip(tmp_path / "too_big.pth", 1, (2, 2), (2, 1)))
    with pytest.raises(CheckpointFormatError, match="malformed"):
        read_pth(_crafted_zip(tmp_path / "floats.pth", 0, (2.0, 2), (2, 1)))


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match=r"data\.pkl"):
        read_pth(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_pth("/nonexistent/model.pth")


def test_reader_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from kernelspace_jax.io.pth import read_pth\n"
        f"s = read_pth({str(GOLDEN / 'kw_micro_wvae_init.pth')!r}); print(len(s))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "41"
