"""VGG19 feature extractor of the perceptual loss [`VGG19` in models/losses/perceptual_loss.py], NHWC.

The reference takes torchvision's ImageNet `vgg19(pretrained=True).features`. Nothing is downloaded
here: the weights come from a torchvision vgg19 state_dict (`vgg19-dcbb9e9d.pth`, keys
`features.N.weight` / `features.N.bias`, read without torch) or an .npz with the same keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kernelspace_jax.io.pth import read_pth
from kernelspace_jax.kernel_space.checkpoints import CheckpointMismatchError
from kernelspace_jax.models.layers import conv, max_pool_2x2

# torchvision's vgg19 ("E"): conv widths per block; a 2x2 max pool ends every block.
VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
# The features of the reference's perceptual loss.
PERCEPTUAL_OUTPUTS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class VGGConv(NamedTuple):
    """Conv `n` of block `block` (both from 1), at `index` in torchvision's `features` Sequential."""

    block: int
    n: int
    index: int
    in_channels: int
    out_channels: int

    @property
    def name(self) -> str:
        return f"conv{self.block}_{self.n}"

    @property
    def relu(self) -> str:
        return f"relu{self.block}_{self.n}"


def vgg19_convs() -> list[VGGConv]:
    """The 16 convs of vgg19().features, in order; each is followed by a ReLU."""
    convs, index, channels = [], 0, 3
    for block, widths in enumerate(VGG19_BLOCKS, start=1):
        for n, width in enumerate(widths, start=1):
            convs.append(VGGConv(block, n, index, channels, width))
            index, channels = index + 2, width  # conv, ReLU
        index += 1  # max pool
    return convs


def _needed_convs(outputs: Sequence[str]) -> list[VGGConv]:
    convs = vgg19_convs()
    names = [c.relu for c in convs]
    unknown = [o for o in outputs if o not in names]
    if unknown or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {names}, got {list(outputs)}")
    return convs[: max(names.index(o) for o in outputs) + 1]


class VGG19Features(nn.Module):
    """Activations of torchvision's `vgg19().features`: image (B, H, W, 3) -> {name: (B, h, w, c)}.

    `outputs` names ReLU outputs `reluB_N` (block B = 1..5, conv N); reluB_N is at H / 2^(B-1) (the
    max pools floor odd sides). Only the convs up to the deepest requested output exist, named
    `convB_N`. No input normalisation is applied (see `deblur_losses.perceptual_loss`).
    """

    outputs: tuple[str, ...] = PERCEPTUAL_OUTPUTS

    @nn.compact
    def __call__(self, image: jax.Array) -> dict[str, jax.Array]:
        x, features = image, {}
        for layer in _needed_convs(self.outputs):
            if layer.block > 1 and layer.n == 1:
                x = max_pool_2x2(x)
            x = nn.relu(conv(layer.out_channels, name=layer.name)(x))
            if layer.relu in self.outputs:
                features[layer.relu] = x
        return features


def vgg19_params(state_dict: Mapping[str, np.ndarray], outputs: Sequence[str] = PERCEPTUAL_OUTPUTS) -> dict:
    """Parameters of `VGG19Features(outputs)` from a torchvision vgg19 state_dict (other keys ignored).

    Raises CheckpointMismatchError naming the first missing key or wrong shape.
    """
    params = {}
    for layer in _needed_convs(outputs):
        index, cout = layer.index, layer.out_channels
        expected = {"weight": (cout, layer.in_channels, 3, 3), "bias": (cout,)}
        for part, shape in expected.items():
            key = f"features.{index}.{part}"
            if key not in state_dict:
                raise CheckpointMismatchError(f"missing key '{key}' in the vgg19 state_dict")
            if tuple(np.shape(state_dict[key])) != shape:
                raise CheckpointMismatchError(
                    f"'{key}' has shape {tuple(np.shape(state_dict[key]))}, expected {shape} (vgg19)"
                )
        weight = np.asarray(state_dict[f"features.{index}.weight"]).transpose(2, 3, 1, 0)  # OIHW -> HWIO
        bias = np.asarray(state_dict[f"features.{index}.bias"])
        params[layer.name] = {"kernel": jnp.asarray(weight, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return params


def load_vgg19_params(path: str | os.PathLike, outputs: Sequence[str] = PERCEPTUAL_OUTPUTS) -> dict:
    """`vgg19_params` of a torchvision vgg19 `.pth` file or an `.npz` with the same keys."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path) as npz:
            return vgg19_params({k: npz[k] for k in npz.files}, outputs)
    return vgg19_params(read_pth(path), outputs)
