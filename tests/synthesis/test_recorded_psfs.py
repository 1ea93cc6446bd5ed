"""The recorded camera-shake PSFs shipped in kernelspace_jax/assets (pyblur's psf.npz)."""

import shutil

import numpy as np
import pytest

from kernelspace_jax import assets


def test_the_hundred_recorded_psfs():
    psfs = assets.recorded_psfs()
    assert len(psfs) == 100
    sides = sorted({p.shape for p in psfs})
    assert sides[0] == (5, 5) and sides[-1] == (29, 29) and all(h == w and h % 2 for h, w in sides)
    for psf in psfs:
        assert psf.dtype == np.float32 and psf.min() >= 0
        np.testing.assert_allclose(psf.sum(), 1.0, atol=1e-5)
    # pyblur's psfid 1 is the only 5x5 one and its peak is 0.77.
    assert psfs[1].shape == (5, 5) and abs(float(psfs[1].max()) - 0.7704) < 1e-3


def test_a_damaged_psf_file_is_refused(tmp_path, monkeypatch):
    damaged = tmp_path / "recorded_psfs.npz"
    shutil.copy(assets.RECORDED_PSFS, damaged)
    data = bytearray(damaged.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(assets, "RECORDED_PSFS", damaged)
    with pytest.raises(OSError, match="does not match its checksum"):
        assets.recorded_psfs()
