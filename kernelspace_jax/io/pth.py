"""Reads PyTorch `.pth` files into numpy arrays without PyTorch and without running their code.

`torch.save` writes a pickle whose tensors point at raw storages. A pickle can name any Python
callable, so `pickle.load` on an untrusted file executes code. `read_pth` unpickles with an
allow-list: the few globals a checkpoint needs are replaced by stand-ins that build numpy arrays,
and any other global (e.g. `os.system`) raises `UnsafeCheckpointError` before anything runs.

Both on-disk formats are read: the zip archive of torch >= 1.6 (`<prefix>/data.pkl` plus
`<prefix>/data/<key>` storages) and the older stream of consecutive pickles.

Nothing in a file may make the reader allocate more than the file's size justifies: every pickle is
first scanned with `pickletools.genops` (which executes nothing) and refused if an opcode's argument is
cut short or a memo index exceeds the stream's opcode count (the C unpickler sizes its memo by the
largest index: 10 bytes could otherwise ask for gigabytes), and every storage's size is checked
against the bytes actually there before it is read.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
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
    if (
        len(size) != len(stride)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in fields)
        or not all(-(2**63) <= v < 2**63 for v in fields)
    ):
        raise CheckpointFormatError(f"tensor with malformed size {_brief(size)} / stride {_brief(stride)}")
    if any(n < 0 for n in size) or any(s < 1 for n, s in zip(size, stride, strict=True) if n > 1):
        raise CheckpointFormatError(
            f"tensor of size {_brief(size)} with strides {_brief(stride)} is not a dense view of its storage"
        )
    elements = 0 if 0 in size else 1
    for n in size if elements else ():
        elements *= n
        if elements > storage.size - offset:
            raise CheckpointFormatError(
                f"tensor of size {_brief(size)} at offset {offset} has more elements than its storage of {storage.size}"
            )
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset - 1
    if offset < 0 or last >= storage.size:
        raise CheckpointFormatError(
            f"tensor of size {_brief(size)} at offset {offset} reads past its storage of {storage.size} elements"
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
    **{("torch", name): _StorageType for name in _STORAGE_DTYPES},
}
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
# Opcodes that torch.save (any protocol) never writes: extension registry, old-style instances, out-of-band buffers.
_REFUSED_OPCODES = frozenset({"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER", "READONLY_BUFFER"})


def _brief(value, depth: int = 2) -> str:
    """A short repr for error messages; never the whole of a (possibly huge or deeply shared) object."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, (str, bytes)):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, (tuple, list)) and depth > 0:
        items = [_brief(v, depth - 1) for v in value[:6]] + (["..."] if len(value) > 6 else [])
        return ("({})" if isinstance(value, tuple) else "[{}]").format(", ".join(items))
    return f"<{type(value).__name__}>"


def _check_pickle(handle, where: str) -> None:
    """Scans the pickle at the handle's position without executing it; leaves the position as it was.

    Refuses, as CheckpointFormatError, a stream that is not a complete pickle (genops reads every
    length-prefixed argument, so the unpickler never pre-allocates for bytes that are not there), an
    opcode torch.save never writes, and a memo index larger than the stream's opcode count."""
    start = handle.tell()
    count, largest = 0, -1
    try:
        for opcode, arg, _ in pickletools.genops(handle):
            count += 1
            if opcode.name in _MEMO_OPCODES:
                largest = max(largest, arg)
            elif opcode.name in _REFUSED_OPCODES:
                raise CheckpointFormatError(f"{where}: pickle opcode {opcode.name} never appears in a torch file")
    except CheckpointFormatError:
        raise
    except Exception as err:  # genops only parses; anything it raises means a malformed stream
        raise CheckpointFormatError(f"{where}: malformed pickle ({type(err).__name__}: {str(err)[:120]})") from err
    if largest >= count:
        raise CheckpointFormatError(f"{where}: pickle memo index {_brief(largest)} exceeds its {count} opcodes")
    handle.seek(start)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load: the checkpoint's pickle asks for the global '{str(module)[:80]}.{str(name)[:80]}', "
                "which a tensor checkpoint never needs (it may be malicious); nothing was executed"
            ) from None
        # A fresh object per reference: a BUILD opcode applied to it must not change later reads.
        if found is _StorageType:
            return _StorageType(name)
        if found is collections.OrderedDict:  # a built-in type: BUILD cannot change it
            return found
        return lambda *args: found(*args)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unexpected persistent id in checkpoint: {_brief(pid)}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(storage_type.dtype, np.dtype):
            raise CheckpointFormatError(f"unexpected storage type in checkpoint: {_brief(storage_type)}")
        if not isinstance(key, (str, int)) or isinstance(key, bool) or (isinstance(key, int) and abs(key) >= 2**64):
            raise CheckpointFormatError(f"unexpected storage key in checkpoint: {_brief(key)}")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointFormatError(f"unexpected storage size in checkpoint: {_brief(numel)}")
        key = str(key)
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


def _unpickle(handle, load_storage, where: str) -> Any:
    """One pickle from the handle's position, scanned first (see `_check_pickle`)."""
    _check_pickle(handle, where)
    return _RestrictedUnpickler(handle, load_storage).load()


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> bytes:
    # torch.save stores every member uncompressed; a compressed one could expand far beyond the file.
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointFormatError(f"{path}: zip member '{info.filename}' is compressed; torch.save never does that")
    return archive.read(info)


def _read_zip(file, path: str) -> Any:
    with zipfile.ZipFile(file) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: zip file has no single '<name>/data.pkl'; not a torch file")
        prefix = pickles[0][: -len("data.pkl")]
        # Files without a byteorder entry predate it and are little-endian.
        byteorder = infos.get(prefix + "byteorder")
        big_endian = byteorder is not None and _read_member(archive, byteorder, path).strip() == b"big"

        def load_storage(key, dtype, numel):
            entry = f"{prefix}data/{key}"
            if entry not in infos:
                raise CheckpointFormatError(f"{path}: missing storage entry '{entry}'")
            if numel * dtype.itemsize > infos[entry].file_size:
                raise CheckpointFormatError(
                    f"{path}: storage '{entry}' of {numel} elements needs {numel * dtype.itemsize} bytes; "
                    f"the member holds {infos[entry].file_size} (truncated file?)"
                )
            return _from_bytes(_read_member(archive, infos[entry], path), dtype, numel, big_endian, entry)

        data = io.BytesIO(_read_member(archive, infos[pickles[0]], path))
        return _unpickle(data, load_storage, f"{path}: {pickles[0]}")


def _read_legacy(file, path: str) -> Any:
    """The pre-1.6 format: magic, protocol, sys_info, the object, storage keys, then raw storages."""
    handle = io.BytesIO(file.read())
    size = len(handle.getbuffer())
    if _unpickle(handle, None, path) != _LEGACY_MAGIC:
        raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (neither zip nor legacy magic number)")
    _unpickle(handle, None, path)  # protocol version
    sys_info = _unpickle(handle, None, path)
    big_endian = isinstance(sys_info, dict) and not sys_info.get("little_endian", True)
    dtypes: dict[str, np.dtype] = {}

    def pending_storage(key, dtype, numel, view=None):
        dtypes[key] = dtype
        return _PendingStorage(key, view)

    obj = _unpickle(handle, pending_storage, path)
    storages = {}
    for key in _unpickle(handle, None, path):
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{path}: storage key {_brief(key)} is not a string")
        (numel,) = struct.unpack("<q", handle.read(8))
        dtype = dtypes[key]
        left = size - handle.tell()
        if numel < 0 or numel * dtype.itemsize > left:
            raise CheckpointFormatError(
                f"{path}: storage '{_brief(key)}' of {numel} elements needs more than the {left} bytes left "
                "in the file (truncated file?)"
            )
        storages[key] = _from_bytes(handle.read(numel * dtype.itemsize), dtype, numel, big_endian, key)

    # Containers may be shared (the pickle memo) or even cyclic: each is visited once, so that a
    # small file cannot make the walk (or the copies) grow exponentially.
    seen: dict[int, tuple[Any, Any]] = {}  # id -> (node, its result); the node is kept so its id stays unique

    def materialise(node):
        if id(node) in seen:
            return seen[id(node)][1]
        if isinstance(node, _PendingTensor):
            storage = storages[node.storage.key]
            if node.storage.view is not None:  # (view_key, offset, size) of a storage view
                _, start, length = node.storage.view
                storage = storage[start : start + length]
            result = _strided_copy(storage, node.offset, node.size, node.stride)
        elif isinstance(node, (dict, list)):
            seen[id(node)] = (node, node)
            for k, v in list(node.items() if isinstance(node, dict) else enumerate(node)):
                node[k] = materialise(v)
            return node
        elif isinstance(node, tuple):
            seen[id(node)] = (node, node)  # a cycle back to this tuple keeps the original
            result = tuple(materialise(v) for v in node)
        else:
            return node
        seen[id(node)] = (node, result)
        return result

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
    with open(path, "rb") as file:  # outside the try: a vanished file stays FileNotFoundError
        try:
            if zipfile.is_zipfile(file):
                return _read_zip(file, path)
            file.seek(0)
            return _read_legacy(file, path)
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
            OverflowError,
            RuntimeError,  # zipfile: an encrypted member; NotImplementedError, RecursionError: its subclasses
            OSError,  # zipfile: a seek to an offset that the file does not have (EINVAL)
        ) as err:
            raise CheckpointFormatError(
                f"{path}: not a PyTorch checkpoint, or a corrupt or truncated one ({type(err).__name__}: "
                f"{str(err)[:200]})"
            ) from err
