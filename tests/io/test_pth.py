"""The .pth reader: torch's two formats without torch, and refusal of anything that is not data."""

import collections
import io
import os
import pickle
import struct
import time
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
    def __init__(self, numel=4):
        self.numel = numel


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...), as torch.save does."""

    def __init__(self, offset, size, stride, numel=4):
        self.args, self.numel = (offset, size, stride), numel

    def __reduce__(self):
        return (_rebuild_tensor_v2, (_PersistentStorage(self.numel), *self.args, False, collections.OrderedDict()))


class _TorchLikePickler(pickle._Pickler):
    """Writes globals by name without importing them (torch is not installed) and storages as
    persistent ids, as torch.save does."""

    def save_global(self, obj, name=None):
        self.write(pickle.GLOBAL + f"{obj.__module__}\n{name or obj.__qualname__}\n".encode())

    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, types.FunctionType: save_global, type: save_global}

    def persistent_id(self, obj):
        return ("storage", _FloatStorage, "0", "cpu", obj.numel) if isinstance(obj, _PersistentStorage) else None


def _torch_like_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _TorchLikePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _crafted_zip(path, offset, size, stride, numel=4):
    """A zip-format .pth: one tensor (offset, size, stride) over a 4-element float storage (that says it
    has `numel` elements)."""
    buffer = io.BytesIO(_torch_like_pickle({"weight": _Tensor(offset, size, stride, numel)}))
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


def _legacy_file(path, obj, storages=b""):
    """A legacy-format .pth: magic number, protocol, sys_info, `obj`, then storage "0" as `storages`."""
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
    path.write_bytes(header + _torch_like_pickle(obj) + pickle.dumps(["0"] if storages else [], protocol=2) + storages)
    return path


def test_memo_index_beyond_the_pickle_is_refused_before_allocating(tmp_path):
    # PROTO 2, BININT1 1, LONG_BINPUT 2**27, STOP: the C unpickler would size its memo for 2**27 entries
    # (2 GB); the index exceeds the 4 opcodes of the stream, so the file is refused before unpickling.
    memo_bomb = bytes.fromhex("80024b0172000000082e")
    (tmp_path / "legacy.pth").write_bytes(memo_bomb)
    _torch_like_zip(tmp_path / "zip.pth", memo_bomb)
    for name in ("legacy.pth", "zip.pth"):
        start = time.monotonic()
        with pytest.raises(CheckpointFormatError, match="memo index"):
            read_pth(tmp_path / name)
        assert time.monotonic() - start < 1.0


def test_storage_larger_than_the_file_is_refused_before_reading(tmp_path):
    huge = 2**62  # elements: more bytes than an index can hold
    zipped = _crafted_zip(tmp_path / "zip.pth", 0, (2, 2), (2, 1), numel=huge)
    with pytest.raises(CheckpointFormatError, match="the member holds 16"):
        read_pth(zipped)
    tensor = _Tensor(0, (2, 2), (2, 1))
    legacy = _legacy_file(tmp_path / "legacy.pth", {"weight": tensor}, struct.pack("<q", huge) + bytes(16))
    with pytest.raises(CheckpointFormatError, match="bytes left in the file"):
        read_pth(legacy)
    good = _legacy_file(tmp_path / "good.pth", {"weight": tensor}, struct.pack("<q", 4) + bytes(16))
    np.testing.assert_array_equal(read_pth(good)["weight"], np.zeros((2, 2), np.float32))


def test_shared_containers_are_read_once(tmp_path):
    # n nested pairs of one object are 2**n paths through a file of n * 7 bytes: a walk along every
    # path (and a copy of each tuple) would take exponential time and memory. Kept to 20 levels so that
    # such a regression fails on the identity check below rather than hanging the test run.
    shared = [_Tensor(0, (2, 2), (2, 1))]
    for _ in range(20):
        shared = (shared, shared)
    path = _legacy_file(tmp_path / "dag.pth", {"weight": shared}, struct.pack("<q", 4) + bytes(16))
    leaf = read_pth(path)["weight"]
    while isinstance(leaf, tuple):
        assert leaf[0] is leaf[1]
        leaf = leaf[0]
    np.testing.assert_array_equal(leaf[0], np.zeros((2, 2), np.float32))


def test_a_file_cannot_change_how_later_files_read(tmp_path):
    # BUILD on the allow-listed torch.FloatStorage: sets its dtype to a string.
    _torch_like_zip(
        tmp_path / "poison.pth", b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00xsb."
    )
    read_pth(tmp_path / "poison.pth")
    assert read_pth(FIXTURES / "zip_format.pth")["f32"].dtype == np.float32


def test_compressed_member_is_a_format_error(tmp_path):
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("crafted/data.pkl", pickle.dumps({}, protocol=2))
    with pytest.raises(CheckpointFormatError, match="compressed"):
        read_pth(path)


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
