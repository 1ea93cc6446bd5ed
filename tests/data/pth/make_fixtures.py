"""Writes the small torch.save fixtures of test_pth.py. Needs PyTorch (the tests do not).

python tests/data/pth/make_fixtures.py   # with torch installed; writes beside this file
"""

import collections
import pathlib

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent


def tensors():
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    return collections.OrderedDict(
        f32=base,
        f16=base.to(torch.float16),
        bf16=base.to(torch.bfloat16),
        f64=base.to(torch.float64),
        i64=torch.arange(5),
        transposed=base.transpose(0, 2),  # non-contiguous: strides matter
        view=base[1, 1:, ::2],  # offset into a shared storage
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
    )


if __name__ == "__main__":
    state = tensors()
    torch.save(state, HERE / "zip_format.pth")
    torch.save(state, HERE / "legacy_format.pth", _use_new_zipfile_serialization=False)
    expected = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()}
    np.savez(HERE / "expected.npz", **expected)
