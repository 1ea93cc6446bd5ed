"""Objectives of the deblurring search: the reference's two-phase loss and the fallback without VGG.

The search minimises, for the sharp image x, its latent kernel k and the blurry input y,

    w_perceptual * Perceptual(F(x, k), y) + w_ssim * (1 - SSIM(F(x, k), y))
      + w_pixel * Charbonnier(F(x, k), y) + w_kernel_norm * ||k||_2 + w_laplacian * HyperLaplacian(x)

with one set of weights for the first half of the main phase and another for the second half
(`Objective.phase1`, `Objective.phase2`). `reference` is the reference's (SPEC.md, "Generic blind
deblurring"); it needs VGG19 weights. `fallback` runs without them: see configs/deblur_generic.py for
its weights and the measurement that kept them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from kernelspace_jax.deblurring.losses import (
    hyper_laplacian_penalty,
    kernel_norm,
    perceptual_loss_to_features,
    ssim,
    vgg_features,
)

TERMS = ("perceptual", "ssim", "pixel", "kernel_norm", "laplacian")
CHARBONNIER_EPS = 1e-3  # sqrt(d^2 + eps^2): L1 away from 0, smooth at 0


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weight of each term of the objective (0 drops the term)."""

    perceptual: float = 0.0
    ssim: float = 0.0
    pixel: float = 0.0
    kernel_norm: float = 0.0
    laplacian: float = 0.0

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, name)) for name in TERMS)


@dataclasses.dataclass(frozen=True)
class Objective:
    """A named objective: weights for the first and the second half of the main phase."""

    name: str
    phase1: LossWeights
    phase2: LossWeights

    @property
    def needs_vgg(self) -> bool:
        return bool(self.phase1.perceptual or self.phase2.perceptual)

    def used_terms(self) -> tuple[str, ...]:
        """Terms with a non-zero weight in either phase (the others are not computed)."""
        w1, w2 = self.phase1.as_tuple(), self.phase2.as_tuple()
        return tuple(name for name, a, b in zip(TERMS, w1, w2, strict=True) if a or b)

    @classmethod
    def from_config(cls, name: str, weights: Mapping[str, Any]) -> Objective:
        """From `{"phase1": {term: weight}, "phase2": {...}}` (a ConfigDict of configs/deblur_generic.py)."""
        phases = {}
        for phase in ("phase1", "phase2"):
            values = dict(weights[phase])
            unknown = set(values) - set(TERMS)
            if unknown:
                raise ValueError(f"objective {name!r}, {phase}: unknown terms {sorted(unknown)}; known: {TERMS}")
            phases[phase] = LossWeights(**{k: float(v) for k, v in values.items()})
        return cls(name, phases["phase1"], phases["phase2"])


def charbonnier_mean(prediction: jax.Array, target: jax.Array, eps: float = CHARBONNIER_EPS) -> jax.Array:
    """Mean over all elements of sqrt((prediction - target)^2 + eps^2); scalar."""
    diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(jnp.sqrt(diff * diff + eps * eps))


def blurry_features(terms: tuple[str, ...], vgg_params: Mapping | None, blurry: jax.Array) -> dict | None:
    """What `terms` need of the blurry images alone, computed once before a search: blurry (B, H, W, 3)
    -> VGG19 features {name: (B, h, w, c)} for the perceptual term, None without one."""
    if "perceptual" not in terms:
        return None
    if vgg_params is None:
        raise ValueError("the perceptual term needs VGG19 weights (vgg_params)")
    # One image at a time: a batch's VGG activations at full resolution need not be live at once.
    return jax.lax.map(lambda y: jax.tree.map(lambda f: f[0], vgg_features(vgg_params, y[None])), blurry)


def loss_terms(
    terms: tuple[str, ...],
    reblurred: jax.Array,
    blurry: jax.Array,
    sharp: jax.Array,
    kernel: jax.Array,
    vgg_params: Mapping | None,
    features: Mapping[str, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """The requested `terms` (names in TERMS) as scalars.

    reblurred = F(x, k), blurry = y, sharp = x: (B, H, W, 3); kernel: (B, h, w, kernel_dim); features:
    `blurry_features(terms, vgg_params, blurry)` if already computed (else computed here).
    """
    out = {}
    if "perceptual" in terms:
        if features is None:
            features = blurry_features(terms, vgg_params, blurry)
        out["perceptual"] = perceptual_loss_to_features(vgg_params, reblurred, features)
    if "ssim" in terms:
        out["ssim"] = 1.0 - ssim(reblurred, blurry)
    if "pixel" in terms:
        out["pixel"] = charbonnier_mean(reblurred, blurry)
    if "kernel_norm" in terms:
        out["kernel_norm"] = kernel_norm(kernel)
    if "laplacian" in terms:
        out["laplacian"] = hyper_laplacian_penalty(sharp)
    return out


def weighted_sum(terms: Mapping[str, jax.Array], weights: jax.Array) -> jax.Array:
    """sum_i weights[i] * terms[TERMS[i]] over the terms present; weights: (len(TERMS),)."""
    return sum(weights[TERMS.index(name)] * value for name, value in terms.items())
