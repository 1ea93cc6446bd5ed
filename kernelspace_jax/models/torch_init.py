"""PyTorch's initialisation for Flax parameter trees, drawn in one go.

Networks trained from scratch should start where the reference starts (e.g. F is then nearly the
identity). Drawing the whole tree with one uniform and one normal call also keeps compile time
small: one random call per leaf makes XLA compile dozens of RNG kernels (tens of seconds on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# A rule maps (path, shape) to ("uniform", bound), ("normal", std) or ("constant", value).
Rule = Callable[[tuple[str, ...], tuple[int, ...]], tuple[str, float]]


def fan_in(kernel_shape: tuple[int, ...]) -> int:
    """PyTorch's fan_in of a conv weight, from our (kh, kw, a, b) kernel.

    Conv2d (out, in, kh, kw) -> HWIO: fan_in = kh*kw*in. ConvTranspose2d (in, out, kh, kw) -> our
    (kh, kw, out, in): torch reads dim 1 (out) as fan_in, kh*kw*out. Both are the product of all but the last.
    """
    return math.prod(kernel_shape[:-1])


def kernel_shapes(abstract: Mapping) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{path of a conv module: shape of its kernel} for every `kernel` leaf of a parameter tree."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
    return {tuple(k.key for k in path[:-1]): tuple(leaf.shape) for path, leaf in leaves if path[-1].key == "kernel"}


def conv_default(path: tuple[str, ...], shape: tuple[int, ...], kernel_shapes: Mapping) -> tuple[str, float]:
    """`nn.Conv2d`/`nn.ConvTranspose2d` defaults: weight and bias ~ U(+-1/sqrt(fan_in))."""
    return "uniform", 1.0 / math.sqrt(fan_in(kernel_shapes[path[:-1]]))


def draw(abstract: Mapping, key: jax.Array, rule: Rule) -> dict:
    """Parameters shaped like `abstract` (arrays or ShapeDtypeStructs), each leaf drawn by `rule`."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    paths = [tuple(k.key for k in path) for path, _ in leaves]
    shapes = [tuple(leaf.shape) for _, leaf in leaves]
    specs = [rule(path, shape) for path, shape in zip(paths, shapes, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, _draw_leaves(key, tuple(shapes), tuple(specs)))


def _draw_leaves(key, shapes, specs):
    """One uniform and one normal draw, sliced into the leaves, all in one compiled function."""
    sizes = {
        kind: [math.prod(s) if spec[0] == kind else 0 for s, spec in zip(shapes, specs, strict=True)]
        for kind in ("uniform", "normal")
    }
    starts = {kind: np.cumsum([0, *sizes[kind][:-1]]) for kind in sizes}

    @jax.jit
    def sample(key):
        k_uniform, k_normal = jax.random.split(key)
        pools = {
            "uniform": jax.random.uniform(k_uniform, (sum(sizes["uniform"]),), jnp.float32, -1.0, 1.0),
            "normal": jax.random.normal(k_normal, (sum(sizes["normal"]),), jnp.float32),
        }
        out = []
        for i, (shape, (kind, scale)) in enumerate(zip(shapes, specs, strict=True)):
            if kind == "constant":
                out.append(jnp.full(shape, scale, jnp.float32))
            else:
                start = int(starts[kind][i])
                out.append(pools[kind][start : start + math.prod(shape)].reshape(shape) * scale)
        return out

    return sample(key)
