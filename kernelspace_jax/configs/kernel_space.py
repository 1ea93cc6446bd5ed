"""Architectures of the kernel-space network (F and G) as ml_collections configs.

    import kernelspace_jax as ksj
    from kernelspace_jax.configs import kernel_space
    model = ksj.init(jax.random.key(0), kernel_space.get_config("released_wvae"))

Variants: released_wovae / released_wvae (the authors' GoPro, REDS and mix checkpoints, nf 64) and
micro_wovae / micro_wvae (nf 8, one block of each kind: the reference's golden test configs).
"""

import ml_collections

from kernelspace_jax.kernel_space import config

VARIANTS = {"released": config.released, "micro": config.micro}


def get_config(variant: str = "released_wovae") -> ml_collections.ConfigDict:
    size, _, vae = variant.partition("_")
    if size not in VARIANTS or vae not in ("wovae", "wvae"):
        raise ValueError(
            f"unknown variant {variant!r}; expected one of {[f'{s}_{v}' for s in VARIANTS for v in ('wovae', 'wvae')]}"
        )
    return ml_collections.ConfigDict(VARIANTS[size](use_vae=vae == "wvae").to_dict())
