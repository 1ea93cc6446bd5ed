"""Start a VAE kernel space from a trained woVAE one (an extension; the reference trains wVAE from scratch).

Trained from scratch on small data, a VAE's G collapses: early on the sampled kernel only adds noise
to F's output, G's mean is pushed below zero and its final ReLU never lets it back
(docs/training.md#the-shipped-models). Widening a woVAE model whose F already uses its kernel avoids that start:

    vae = widen_to_vae(wovae_model, jax.random.key(0))
    mean, sigma = vae.extract(sharp, blurry)   # mean == wovae_model.extract(sharp, blurry)[0]
    vae = widen_to_vae(wovae_model, key, calibration=(sharp, blurry))   # the same F(x, G(x, y)), unit-RMS mean

`train.py --config.model.use_vae=True --config.init_from=WOVAE_CHECKPOINT` does this.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from kernelspace_jax.kernel_space.model import KernelSpaceModel, init_params
from kernelspace_jax.models.kernel_space import UNET_DEPTH


def rescale_kernel(model: KernelSpaceModel, scale: float) -> KernelSpaceModel:
    """The same F(x, G(x, y)) with G's kernel divided by `scale` > 0 and F's kernel input multiplied by it.

    Exact: G has no biases and only ReLUs after its convs, and F applies a ReLU to concat(bottleneck,
    kernel) before one up-conv, so both are positively homogeneous in the scaled weights.
    """
    if model.config.use_vae:
        raise ValueError("rescale a woVAE model (a VAE's mean and sigma would need the same scale)")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    params = jax.tree.map(np.asarray, model.params)
    extractor = dict(params["extractor"])
    last = f"down_{UNET_DEPTH - 1}"  # G's last strided conv; its ResNet blocks, if any, are homogeneous too
    extractor[last] = {"kernel": extractor[last]["kernel"] / scale}
    adapter = dict(params["adapter"])
    up = np.array(adapter[f"up_{UNET_DEPTH - 1}"]["kernel"])  # (kh, kw, out, bottleneck + kernel_dim)
    up[..., -model.config.kernel_dim :] *= scale
    adapter[f"up_{UNET_DEPTH - 1}"] = {**adapter[f"up_{UNET_DEPTH - 1}"], "kernel": up}
    return model.replace(params={**params, "extractor": extractor, "adapter": adapter})


def widen_to_vae(
    model: KernelSpaceModel,
    key: jax.Array,
    *,
    calibration=None,
    sigma_rms: float = 0.1,
    scheme: str = "reference",
) -> KernelSpaceModel:
    """The VAE of `model`'s architecture whose G outputs `model`'s kernel as its mean; F is unchanged.

    With `calibration` = (sharp, blurry), (B, H, W, C) each, the kernel is first rescaled
    (`rescale_kernel`) to unit RMS over that batch, the scale the VAE's N(0, 1) prior asks for, so
    the KL term does not start by shrinking it; F(x, G(x, y)) stays the same. The weights that make
    sigma are then scaled so that its RMS over the batch is `sigma_rms` (exactly for a G without ResNet
    blocks, about so with them): the samples start close to the mean.

    G's head is wider in a VAE (its last layers have up to 2 * kernel_dim channels). Every weight
    of `model` is copied into the top-left block of the wider one; the weights from the new input
    channels to the old output channels are zero, so the old channels, and with them the mean,
    compute exactly what they did. The new channels (those feeding sigma) get fresh `scheme` weights.
    """
    if model.config.use_vae:
        raise ValueError("the model is already a VAE")
    if calibration is not None:
        mean, _ = model.extract(*calibration)
        model = rescale_kernel(model, float(np.sqrt(np.mean(np.square(mean)))))
    config = dataclasses.replace(model.config, use_vae=True)
    fresh = init_params(key, config, scheme=scheme)

    def widen(old, new):
        old, new = np.asarray(old), np.array(new)
        if old.shape == new.shape:
            return old
        if old.ndim != new.ndim or any(o > n for o, n in zip(old.shape, new.shape, strict=True)):
            raise ValueError(f"cannot widen a parameter of shape {old.shape} to {new.shape}")
        if old.ndim == 4:  # conv kernel (kh, kw, in, out): new inputs must not reach old outputs
            new[:, :, old.shape[2] :, : old.shape[3]] = 0.0
        new[tuple(slice(0, s) for s in old.shape)] = old
        return new

    vae = KernelSpaceModel(jax.tree.map(widen, model.params, fresh), config, model.dtype)
    if calibration is None:
        return vae
    _, sigma = vae.extract(*calibration)
    return _scale_sigma(vae, sigma_rms / max(float(np.sqrt(np.mean(np.square(sigma)))), 1e-12))


def _scale_sigma(model: KernelSpaceModel, gain: float) -> KernelSpaceModel:
    """Multiplies the output channels that feed sigma, in G's last conv and its blocks' last convs."""
    extractor = {name: dict(layer) for name, layer in model.params["extractor"].items()}
    last = [f"down_{UNET_DEPTH - 1}"] + [name for name in extractor if name.startswith("block_")]
    for name in last:
        layer = extractor[name] if name.startswith("down_") else dict(extractor[name]["conv2"])
        kernel = np.array(layer["kernel"])
        kernel[..., model.config.kernel_dim :] *= gain
        layer["kernel"] = kernel
        if name.startswith("block_"):
            extractor[name]["conv2"] = layer
    return model.replace(params={**model.params, "extractor": extractor})
