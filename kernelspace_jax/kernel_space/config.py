"""Architecture of the kernel-space network (the `KernelWizard` section of the reference's yml files)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class KernelSpaceConfig:
    """Hyper-parameters that fix the parameter shapes of F and G.

    Attributes:
      nf: feature width (`nf`); the U-Net bottleneck has 8 * nf channels.
      kernel_dim: channels of a latent kernel (`kernel_dim`); must equal 8 * nf.
      front_blocks: residual blocks of the shared feature extractor (`front_RBs`).
      back_blocks: residual blocks of F's reconstruction trunk (`back_RBs`).
      extractor_blocks: ResNet blocks at the end of G (`KernelExtractor.n_blocks`).
      use_vae: G also predicts a per-element "sigma" (`use_vae`).
      image_channels: channels of the images (`input_nc`).
      hr_width: width of F's last, full-resolution layers; the reference hard-codes 64 (an
        extension: smaller values make small models much cheaper, since these layers dominate).
      sharp_skip: F's full-resolution tail also sees the sharp image (an extension, off in the
        reference): the residual's fine detail then need not pass F's 1/4-resolution U-Net.
    """

    nf: int = 64
    kernel_dim: int = 512
    front_blocks: int = 10
    back_blocks: int = 20
    extractor_blocks: int = 4
    use_vae: bool = False
    image_channels: int = 3
    hr_width: int = 64
    sharp_skip: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = bool if field.type == "bool" else int
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise TypeError(f"KernelSpaceConfig.{field.name} must be {expected.__name__}, got {value!r}")
        if min(self.nf, self.image_channels, self.hr_width) < 1:
            raise ValueError(
                f"nf, image_channels and hr_width must be positive, got {self.nf}, {self.image_channels}, "
                f"{self.hr_width}"
            )
        if min(self.front_blocks, self.back_blocks, self.extractor_blocks) < 0:
            raise ValueError("block counts must be >= 0")
        if self.kernel_dim != 8 * self.nf:
            raise ValueError(
                f"kernel_dim must equal 8 * nf = {8 * self.nf} (the kernel is concatenated at the U-Net "
                f"bottleneck), got {self.kernel_dim}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> KernelSpaceConfig:
        """Builds a config from a dict or ml_collections.ConfigDict with (a subset of) our field names."""
        values = dict(values)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown KernelSpaceConfig fields: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def latent_channels(self) -> int:
        """Channels G outputs: the mean, plus sigma for a VAE."""
        return 2 * self.kernel_dim if self.use_vae else self.kernel_dim


def released(use_vae: bool = False) -> KernelSpaceConfig:
    """The configuration of the authors' released GoPro/REDS/mix checkpoints."""
    return KernelSpaceConfig(use_vae=use_vae)


def micro(use_vae: bool = False) -> KernelSpaceConfig:
    """The reduced configuration of the golden parity files (nf 8, one block of each kind)."""
    return KernelSpaceConfig(nf=8, kernel_dim=64, front_blocks=1, back_blocks=1, extractor_blocks=1, use_vae=use_vae)
