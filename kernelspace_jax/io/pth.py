"""Reads PyTorch `.pth` files into numpy arrays without PyTorch and without running their code.

`torch.save` writes a pickle whose tensors point at raw storages. A pickle can name any Python
callable, so `pickle.load` on an untrusted file executes code. `read_pth` unpickles with an
allow-list: the few globals a checkpoint needs are replaced by stand-ins that build numpy arrays,
and any other global (e.g. `os.system`) raises `UnsafeCheckpointError` before anything runs.

Both on-disk formats are read: the zip archive of torch >= 1.6 (`<prefix>/data.pkl` plus
`<prefix>/data/<key>` storages) and the older stream of consecutive pickles.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "read_pth"]


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint (corrupt, truncated, or another format)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """The checkpoint's pickle asks for a Python global outside the allow-list."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stand-in for `torch.<X>Storage`: only carries the element dtype."""

    def __init__(self, name: str):
        dtype = _STORAGE_DTYPES[name]
        if dtype == "bfloat16":
            import ml_dtypes  # shipped with jax

            dtype = ml_dtypes.bfloat16
        self.dtype = np.dtype(dtype)


def _strided_copy(storage: np.ndarray, offset, size, stride) -> np.ndarray:
    """The tensor (size, stride, offset) of `storage`, copied; checked before anything is allocated:
    integer fields, no dimension of more than one element with a stride below 1 (the tensors of a
    checkpoint are dense views: a zero stride would let a few bytes claim gigabytes), and every element
    inside the storage."""
    size, stride = tuple(size), tuple(stride)
    fields = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        raise CheckpointFormatError(f"tensor with malformed size {size!r:.80} / stride {stride!r:.80}")
    if any(n < 0 for n in size) or any(s < 1 for n, s in zip(size, stride, strict=True) if n > 1):
        raise CheckpointFormatError(f"tensor of size {size} with strides {stride} is not a dense view of its storage")
    if int(np.prod(size, dtype=object)) > storage.size - offset:
        raise CheckpointFormatError(
            f"tensor of size {size} at offset {offset} has more elements than its storage of {storage.size}"
        )
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset - 1
    if offset < 0 or last >= storage.size:
        raise CheckpointFormatError(
            f"tensor of size {size} at offset {offset} reads past its storage of {storage.size} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    return np.array(view)


class _PendingStorage:
    """A storage whose bytes come later in the file (legacy format)."""

    def __init__(self, key: str, view: tuple | None):
        self.key, self.view = key, view


class _PendingTensor:
    def __init__(self, storage: _PendingStorage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    """Stand-in for `torch._utils._rebuild_tensor_v2`: a strided view copied into a numpy array."""
    if isinstance(storage, _PendingStorage):
        return _PendingTensor(storage, offset, size, stride)
    return _strided_copy(storage, offset, size, stride)


def _rebuild_parameter(data, *_unused):
    """Stand-in for `torch._utils._rebuild_parameter`: a Parameter is just its data."""
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load: the checkpoint's pickle asks for the global '{module}.{name}', "
                "which a tensor checkpoint never needs (it may be malicious); nothing was executed"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unexpected persistent id in checkpoint: {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unexpected storage type in checkpoint: {storage_type!r:.80}")
        if self._load_storage is None:
            raise CheckpointFormatError("tensor data where the checkpoint header was expected")
        if len(pid) > 5 and pid[5] is not None:  # legacy storage view
            return self._load_storage(key, storage_type.dtype, numel, pid[5])
        return self._load_storage(key, storage_type.dtype, numel)


def _from_bytes(raw: bytes, dtype: np.dtype, numel: int, big_endian: bool, where: str) -> np.ndarray:
    if len(raw) < numel * dtype.itemsize:
        raise CheckpointFormatError(
            f"storage {where} holds {len(raw)} bytes, expected {numel * dtype.itemsize} (truncated file?)"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder(">" if big_endian else "<"), count=numel)
    return array.astype(dtype)


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: zip file has no single '<name>/data.pkl'; not a torch file")
        prefix = pickles[0][: -len("data.pkl")]
        # Files without a byteorder entry predate it and are little-endian.
        byteorder = prefix + "byteorder"
        big_endian = byteorder in names and archive.read(byteorder).strip() == b"big"

        def load_storage(key, dtype, numel):
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointFormatError(f"{path}: missing storage entry '{entry}'")
            return _from_bytes(archive.read(entry), dtype, numel, big_endian, entry)

        return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()


def _read_legacy(path: str) -> Any:
    """The pre-1.6 format: magic, protocol, sys_info, the object, storage keys, then raw storages."""
    with open(path, "rb") as f:
        handle = io.BytesIO(f.read())
    if _RestrictedUnpickler(handle, None).load() != _LEGACY_MAGIC:
        raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy magic number)")
    _RestrictedUnpickler(handle, None).load()  # protocol version
    sys_info = _RestrictedUnpickler(handle, None).load()
    big_endian = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)
    dtypes: dict[str, np.dtype] = {}

    def pending_storage(key, dtype, numel, view=None):
        dtypes[key] = dtype
        return _PendingStorage(key, view)

    obj = _RestrictedUnpickler(handle, pending_storage).load()
    storages = {}
    for key in _RestrictedUnpickler(handle, None).load():
        key = str(key)
        (numel,) = struct.unpack("<q", handle.read(8))
        dtype = dtypes[key]
        storages[key] = _from_bytes(handle.read(numel * dtype.itemsize), dtype, numel, big_endian, key)

    def materialise(node):
        if isinstance(node, _PendingTensor):
            storage = storages[node.storage.key]
            if node.storage.view is not None:  # (view_key, offset, size) of a storage view
                _, start, length = node.storage.view
                storage = storage[start : start + length]
            return _strided_copy(storage, node.offset, node.size, node.stride)
        if isinstance(node, dict):
            for k, v in node.items():
                node[k] = materialise(v)
            return node
        if isinstance(node, (list, tuple)):
            return type(node)(materialise(v) for v in node)
        return node

    return materialise(obj)


def read_pth(path: str | os.PathLike) -> Any:
    """Reads a `torch.save` file; tensors come back as numpy arrays (containers as saved).

    Raises:
      FileNotFoundError: no such file.
      UnsafeCheckpointError: the pickle names a global outside the allow-list (nothing is executed).
      CheckpointFormatError: the file is corrupt, truncated or not a PyTorch checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except CheckpointFormatError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
        KeyError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
        UnicodeDecodeError,
        MemoryError,
    ) as err:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch checkpoint, or a corrupt or truncated one ({err!r:.200})"
        ) from err
