"""Atomic writing: readers see the old file or the whole new one, and no temporary file is left behind."""

import stat

import pytest

from kernelspace_jax.io.files import atomic_write


def test_atomic_write_replaces_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "new_folder" / "out.txt"
    with atomic_write(path, "w") as file:
        file.write("new \u2713\n")
    assert path.read_text(encoding="utf-8") == "new \u2713\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_write(path) as file:
        file.write(b"part of it")
        raise RuntimeError("interrupted")
    assert path.read_text(encoding="utf-8") == "new \u2713\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]
