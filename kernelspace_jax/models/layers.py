"""Building blocks shared by the networks, written to match PyTorch's layers exactly (NHWC).

The convolutions are Flax modules with the parameters of `nn.Conv` / `nn.ConvTranspose` (same names,
shapes and initialisers), computed so that XLA:CPU never meets the convolutions it runs slowly: the
lhs-dilated ones of strided backward passes and of transposed convolutions (3/4 of their products
are with inserted zeros, and XLA:CPU falls back to a generic loop for them), and those whose kernel is
at least as large as their input (XLA swaps their operands, again into the generic loop). Same
numbers up to float32 round-off:

* stride 1: XLA's convolution forward; backward, the input and weight gradients written out as
  convolutions in XLA:CPU's canonical layout (`_input_grad`, `_weight_grad`): inside a loop body
  (lax.scan, lax.map) XLA does not canonicalise the forms `jax.vjp` gives and runs them in its far
  slower generic loop; the weight gradient also stacks row blocks of the images into the batch, which
  Eigen runs faster than a batch of 2 or 4 images;
* stride s > 1: XLA's strided convolution forward; backward, that of the same convolution written as
  a sum of s*s stride-1 convolutions, one per phase of the stride (`_conv_phases`);
* few output pixels (the 2x2 to 8x8 maps at the bottom of the U-Nets): one matmul of image patches,
  whose input gradient for at most FEW_ROWS_MAX rows is one matvec per row (XLA:CPU runs such
  few-row matmuls against a transposed weight several times slower);
* a transposed convolution: for small inputs one matmul and an overlap-add, otherwise the transpose of
  `_conv_phases` (the sub-pixel formulation);
* bias gradients are matrix-vector products, not column reductions (several times faster on XLA:CPU);
* 2x2 max pools (`max_pool_2x2`) have an elementwise gradient: XLA:CPU lowers select-and-scatter to a
  scatter with index buffers of the input's size.

Precision (`precision`): float32 operands ask for HIGHEST, so that F and G called in float32 compute in
float32 on GPUs and TPUs too (XLA's default there is TF32 or bfloat16 passes); bfloat16 operands, a
`jax_default_matmul_precision` the user set, and the package's own loops (`xla_default_precision`)
get the default.

On CPU, also compile with `compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}` (jaxlib
0.10): XLA:CPU otherwise hands convolutions to YNNPACK, whose kernels for these shapes are several times
slower than Eigen's (see benchmarks/README.md; the figures of this docstring are in docs/benchmarks.md).

The convolutions, bias additions and max pools define their backward pass (`jax.custom_vjp`), so
forward-mode differentiation (`jax.jvp`, `jax.jacfwd`) does not go through them; reverse mode (of any
order) does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange
from jax import lax

Dtype = Any
Padding = tuple[tuple[int, int], tuple[int, int]]
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Convolutions with at most this many output pixels per image run as one matmul of image patches.
PATCH_MATMUL_MAX_PIXELS = 64
# Patch matmuls with at most this many rows (batch x output pixels) take their input gradient as one
# matrix-vector product per row: XLA:CPU runs (4 x 512) @ (512 x 4608) several times slower than 4 matvecs.
FEW_ROWS_MAX = 4
# Transposed convolutions of inputs with at most this many pixels run as a matmul and an overlap-add.
TRANSPOSE_MATMUL_MAX_PIXELS = 1024
# Weight gradients: images with at least this many channels are cut into row blocks (of at least
# WEIGHT_GRAD_MIN_ROWS output rows) until the batch holds WEIGHT_GRAD_MIN_BATCH blocks.
WEIGHT_GRAD_MIN_CHANNELS = 16
WEIGHT_GRAD_MIN_BATCH = 8
WEIGHT_GRAD_MIN_ROWS = 8


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
    """`nn.ReflectionPad2d(pad)` on (B, H, W, C)."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """`nn.PixelShuffle(factor)` in NHWC: (B, H, W, C*r*r) -> (B, H*r, W*r, C).

    PyTorch maps input channel c*r*r + i*r + j to output channel c at (h*r + i, w*r + j).
    """
    return rearrange(x, "b h w (c i j) -> b (h i) (w j) c", i=factor, j=factor)


def _pool_windows(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H // 2, W // 2, 4, C): the 2x2 windows, entries in row-major order."""
    even = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    return rearrange(even, "b (h i) (w j) c -> b h w (i j) c", i=2, j=2)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """`nn.MaxPool2d(2)` on (B, H, W, C) -> (B, H // 2, W // 2, C) (odd sides floored).

    Its gradient goes to each window's first maximum, as XLA's select-and-scatter does, but as
    elementwise work: XLA:CPU lowers select-and-scatter to a scatter with 32-bit index buffers of the
    input's size, which set the top of the deblurring search's memory peak (VGG19's pools).
    """
    return jnp.max(_pool_windows(x), axis=3)


def _max_pool_fwd(x):
    return max_pool_2x2(x), x


def _max_pool_bwd(x, dy):
    first = jnp.argmax(_pool_windows(x), axis=3)  # (B, H // 2, W // 2, C)
    hit = jnp.arange(4)[:, None] == first[:, :, :, None, :]
    grad = rearrange(jnp.where(hit, dy[:, :, :, None, :], 0), "b h w (i j) c -> b (h i) (w j) c", i=2, j=2)
    return (jnp.pad(grad, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))).astype(x.dtype),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def leaky_relu(slope: float):
    return lambda x: nn.leaky_relu(x, negative_slope=slope)


# ----------------------------------------------------------------------------------------------------
# Convolution arithmetic (functional; x NHWC, w HWIO)


def _out_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _pad_spatial(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
    """Zero padding of axes 1 and 2 of an NHWC array; negative amounts crop (lax.pad)."""
    if all(p == (0, 0) for p in pads):
        return x
    zero = jnp.zeros((), x.dtype)
    return lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def _patches(x: jax.Array, kernel: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, out_h, out_w, kh * kw * C): the (already padded) input under each window."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, strides, out_hw
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1):
        return x[:, :oh, :ow]
    return jnp.concatenate(
        [x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] for i in range(kh) for j in range(kw)],
        axis=-1,
    )


def precision(*operands: jax.Array) -> lax.Precision | None:
    """The precision of this module's convolutions and matmuls: float32 operands get float32 products.

    XLA's default lets float32 convolutions and matmuls run in TF32 on NVIDIA GPUs (bfloat16 passes on
    TPUs), so a model asked to compute in float32 asks for HIGHEST; bfloat16 operands, or a
    `jax_default_matmul_precision` the user set (globally or with `jax.default_matmul_precision`), get
    the default. On CPUs both are float32 products.
    """
    if jax.config.jax_default_matmul_precision is not None:
        return None
    if all(operand.dtype == jnp.float32 for operand in operands):
        return lax.Precision.HIGHEST
    return None


def xla_default_precision():
    """A context for the package's own training and search loops: XLA's default precision for float32
    convolutions and matmuls (TF32 on NVIDIA GPUs, as the reference's PyTorch runs its cuDNN
    convolutions by default), unless the user set `jax_default_matmul_precision`, which then applies."""
    return jax.default_matmul_precision(jax.config.jax_default_matmul_precision or "default")


@jax.custom_vjp
def _patch_matmul(patches: jax.Array, w: jax.Array) -> jax.Array:
    """(..., K) @ (K, N) -> (..., N); for few rows, the input gradient is one matvec per row."""
    return lax.dot_general(patches, w, (((patches.ndim - 1,), (0,)), ((), ())), precision=precision(patches, w))


def _patch_matmul_fwd(patches, w):
    return _patch_matmul(patches, w), (patches, w)


def _patch_matmul_bwd(residuals, dy):
    patches, w = residuals
    rows, dy_rows = patches.reshape(-1, w.shape[0]), dy.reshape(-1, w.shape[1])
    kind = precision(rows, dy_rows, w)
    if rows.shape[0] <= FEW_ROWS_MAX:
        d_rows = jnp.stack([jnp.matmul(w, row, precision=kind) for row in dy_rows])
    else:
        d_rows = jnp.matmul(dy_rows, w.T, precision=kind)
    dw = lax.dot_general(rows, dy_rows, (((0,), (0,)), ((), ())), precision=kind)
    return d_rows.reshape(patches.shape), dw.astype(w.dtype)


_patch_matmul.defvjp(_patch_matmul_fwd, _patch_matmul_bwd)


def _conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMENSIONS, precision=precision(x, w))


def _row_blocks(batch: int, rows: int, channels: int) -> int:
    """How many row blocks `_weight_grad` cuts each image into (1: none)."""
    blocks = 1
    while (
        channels >= WEIGHT_GRAD_MIN_CHANNELS
        and batch * blocks < WEIGHT_GRAD_MIN_BATCH
        and rows % (2 * blocks) == 0
        and rows // (2 * blocks) >= WEIGHT_GRAD_MIN_ROWS
    ):
        blocks *= 2
    return blocks


def _weight_grad(x: jax.Array, dy: jax.Array, kernel_shape: tuple[int, ...], padding: Padding) -> jax.Array:
    """Weight gradient of the stride-1 convolution `_conv(x, w, (1, 1), padding)` at output gradient dy.

    A convolution whose batch is x's channels and whose input features are the images, written out in
    XLA:CPU's canonical form (NHWC, HWIO): XLA rewrites the form `jax.vjp` gives into this one at the
    top level of a program, but not inside a loop body (lax.scan, lax.map), where Eigen cannot run it
    and the generic loop takes far longer. Eigen is also slower with 2 or 4 images than with 8,
    so each image is first cut into row blocks (with the kh - 1 rows of overlap they read), the blocks
    stacked into the batch. Same sums, in another order.
    """
    kh = kernel_shape[0]
    x = _pad_spatial(x, padding)
    batch, rows = dy.shape[:2]
    blocks = _row_blocks(batch, rows, x.shape[-1])
    if blocks > 1:
        step = rows // blocks
        x = jnp.stack([x[:, b * step : b * step + step + kh - 1] for b in range(blocks)], axis=1)
        x = x.reshape(batch * blocks, step + kh - 1, *x.shape[3:])
        dy = dy.reshape(batch * blocks, step, *dy.shape[2:])
    # dw[i, j, c, o] = sum_{b, h, w} x[b, h + i, w + j, c] dy[b, h, w, o]: images of x's channels (c, H, W, b)
    # convolved with a kernel (h, w, b, o) of dy's size.
    dw = _conv_stride1(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), ((0, 0), (0, 0)))
    return dw.transpose(1, 2, 0, 3)


def _input_grad(dy: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    """Input gradient of the stride-1 convolution `_conv(x, w, (1, 1), padding)` at dy: the convolution
    of dy with the flipped, in/out-swapped kernel, in canonical form for the reason of `_weight_grad`
    (inside loop bodies XLA:CPU leaves the gradient's swapped kernel layout to a slower path). Both are
    `_conv_stride1`, so their own gradients (second order, or a transposed convolution's) are too."""
    (kh, kw), ((top, bottom), (left, right)) = w.shape[:2], padding
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    return _conv_stride1(dy, flipped, ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_stride1(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
    """XLA's stride-1 convolution, with `_input_grad` and `_weight_grad` for its gradients."""
    return _conv(x, w, (1, 1), padding)


def _conv_stride1_fwd(x, w, padding):
    return _conv_stride1(x, w, padding), (x, w)


def _conv_stride1_bwd(padding, residuals, dy):
    x, w = residuals
    return _input_grad(dy, w, padding), _weight_grad(x, dy, w.shape, padding).astype(w.dtype)


_conv_stride1.defvjp(_conv_stride1_fwd, _conv_stride1_bwd)


def _conv_phases(
    x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding, out_hw: tuple[int, int]
) -> jax.Array:
    """A strided convolution as a sum of stride-1 ones, one per phase (i, j) of the stride.

    out[m] = sum_k x_pad[s*m + k] w[k]; with k = s*a + i that is sum_i sum_a x_pad[i::s][m + a] w[i::s][a]:
    the phase-i samples of x_pad convolved (stride 1, VALID) with the phase-i taps of w. The gradients
    of these are stride-1 convolutions too, computing no products with the zeros a dilation would insert.
    """
    (kh, kw, _, _), (sh, sw) = w.shape, strides
    x = _pad_spatial(x, padding)
    out = None
    for i in range(min(sh, kh)):
        for j in range(min(sw, kw)):
            taps = w[i::sh, j::sw]
            rows, cols = out_hw[0] + taps.shape[0] - 1, out_hw[1] + taps.shape[1] - 1
            samples = x[:, i : i + sh * (rows - 1) + 1 : sh, j : j + sw * (cols - 1) + 1 : sw]
            y = _conv_stride1(samples, taps, ((0, 0), (0, 0)))
            out = y if out is None else out + y
    return out


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_strided(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """A strided convolution whose backward pass uses stride-1 convolutions only (see conv2d)."""
    return _conv(x, w, strides, padding)


def _conv_strided_fwd(x, w, strides, padding):
    return _conv_strided(x, w, strides, padding), (x, w)


def _conv_strided_bwd(strides, padding, residuals, dy):
    x, w = residuals
    return jax.vjp(lambda x, w: _conv_phases(x, w, strides, padding, dy.shape[1:3]), x, w)[1](dy)


_conv_strided.defvjp(_conv_strided_fwd, _conv_strided_bwd)


def conv2d(
    x: jax.Array, w: jax.Array, strides: tuple[int, int] = (1, 1), padding: Padding = ((0, 0), (0, 0))
) -> jax.Array:
    """`lax.conv_general_dilated(x, w, strides, padding)` (NHWC, HWIO, zero padding).

    * few output pixels: one matmul of the image patches (its gradients are matmuls too);
    * stride 1: XLA's convolution; its gradients are `_input_grad` and `_weight_grad`;
    * stride s > 1: XLA's strided convolution forward; backward, that of `_conv_phases`, the same
      convolution as a sum of stride-1 ones.
    """
    (kh, kw, cin, cout), strides = w.shape, tuple(strides)
    out_hw = (
        _out_size(x.shape[1], kh, strides[0], padding[0]),
        _out_size(x.shape[2], kw, strides[1], padding[1]),
    )
    if out_hw[0] * out_hw[1] <= PATCH_MATMUL_MAX_PIXELS and kh * kw > 1:
        patches = _patches(_pad_spatial(x, padding), (kh, kw), strides, out_hw)
        return _patch_matmul(patches, w.reshape(kh * kw * cin, cout))
    padding = tuple(tuple(p) for p in padding)
    if strides == (1, 1):
        return _conv_stride1(x, w, padding)
    return _conv_strided(x, w, strides, padding)


def _conv_transpose_matmul(
    y: jax.Array, w: jax.Array, input_hw: tuple[int, int], strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """`conv2d_transpose` as one matmul (every input pixel times every tap) and an overlap-add."""
    (kh, kw, cin, _), (sh, sw) = w.shape, strides
    ah, aw = math.ceil(kh / sh), math.ceil(kw / sw)
    batch, out_h, out_w = y.shape[:3]
    # (B, h, w, kh, kw, I): x_pad[s*h + k] gets taps[h, k]. Computed as w @ y^T: XLA:CPU would copy a
    # transposed w (up to 32 MB here) to compute y @ w^T, while y is small.
    taps = lax.dot_general(w, y, (((3,), (3,)), ((), ())), precision=precision(w, y)).transpose(3, 4, 5, 0, 1, 2)
    taps = jnp.pad(taps, ((0, 0),) * 3 + ((0, ah * sh - kh), (0, aw * sw - kw), (0, 0)))
    taps = taps.reshape(batch, out_h, out_w, ah, sh, aw, sw, cin)
    # With k = s*a + i, tap k of pixel h lands on phase i of cell h + a.
    cells = sum(
        jnp.pad(taps[:, :, :, a, :, b], ((0, 0), (a, ah - 1 - a), (b, aw - 1 - b), (0, 0), (0, 0), (0, 0)))
        for a in range(ah)
        for b in range(aw)
    )
    full = rearrange(cells, "b h w i j c -> b (h i) (w j) c")
    lo_h, lo_w = padding[0][0], padding[1][0]
    return _pad_spatial(
        full, ((-lo_h, lo_h + input_hw[0] - full.shape[1]), (-lo_w, lo_w + input_hw[1] - full.shape[2]))
    )


def conv2d_transpose(
    y: jax.Array, w: jax.Array, input_hw: tuple[int, int], strides: tuple[int, int], padding: Padding
) -> jax.Array:
    """The transpose (input gradient) of `conv2d(x, w, strides, padding)` at y, for x of size input_hw.

    Small y: one matmul and an overlap-add; otherwise the transpose of `_conv_phases` (stride-1
    convolutions of y with each phase's taps, interleaved), never a convolution of a dilated y.
    """
    if y.shape[1] * y.shape[2] <= TRANSPOSE_MATMUL_MAX_PIXELS:
        return _conv_transpose_matmul(y, w, input_hw, strides, padding)
    zeros = jnp.zeros((y.shape[0], *input_hw, w.shape[2]), y.dtype)
    return jax.vjp(lambda x: _conv_phases(x, w, strides, padding, y.shape[1:3]), zeros)[1](y)[0]


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y + bias over the last axis; its bias gradient is a matrix-vector product, which XLA:CPU runs
    several times faster than the equivalent column reduction."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, bias


def _add_bias_bwd(bias, dy):
    rows = dy.reshape(-1, dy.shape[-1])
    ones = jnp.ones((rows.shape[0],), dy.dtype)
    grad = jnp.dot(ones, rows, preferred_element_type=jnp.float32, precision=precision(rows))
    return dy, grad.astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


# ----------------------------------------------------------------------------------------------------
# Flax modules with the parameter trees of nn.Conv and nn.ConvTranspose


class Conv(nn.Module):
    """`nn.Conv` (NHWC, HWIO kernel `kernel`, bias `bias`, Flax's initialisers) computed by `conv2d`."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.strides, self.padding)
        return y if bias is None else add_bias(y, bias)


class ConvTranspose(nn.Module):
    """`nn.ConvTranspose(..., transpose_kernel=True)` (kernel (kh, kw, features, in)) via `conv2d_transpose`.

    `padding` is the PyTorch ConvTranspose2d padding p (Flax's is kernel - 1 - p): the output is the
    input gradient of a strided convolution from `features` to `in` channels with this kernel (HWIO).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: Padding
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, (*self.kernel_size, self.features, x.shape[-1]), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        size = tuple(
            (n - 1) * s - lo - hi + k
            for n, s, (lo, hi), k in zip(x.shape[1:3], self.strides, self.padding, self.kernel_size, strict=True)
        )
        y = conv2d_transpose(x, kernel, size, self.strides, self.padding)
        return y if bias is None else add_bias(y, bias)


def conv(
    features: int,
    kernel: int = 3,
    stride: int = 1,
    padding: int = 1,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> Conv:
    """`nn.Conv2d(in, features, kernel, stride, padding)` with zero padding; NHWC, HWIO kernel."""
    return Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        dtype=dtype,
        name=name,
    )


def up_conv(features: int, use_bias: bool = True, dtype: Dtype = jnp.float32, name: str | None = None) -> ConvTranspose:
    """`nn.ConvTranspose2d(in, features, 4, stride=2, padding=1)`: doubles H and W.

    The kernel is stored as (4, 4, features, in), so PyTorch's (in, out, kH, kW) weight maps to it by the
    same transpose as a Conv2d weight (the parameters of Flax's `nn.ConvTranspose(features, (4, 4),
    strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True)`, which computes the same).
    """
    return ConvTranspose(
        features,
        (4, 4),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        dtype=dtype,
        name=name,
    )


class ResidualBlock(nn.Module):
    """`ResidualBlock_noBN`: x + conv(ReLU(conv(x))), 3x3 convs with bias."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(self.features, dtype=self.dtype, name="conv1")(x)
        y = conv(self.features, dtype=self.dtype, name="conv2")(nn.relu(y))
        return x + y


class ReflectResnetBlock(nn.Module):
    """`ResnetBlock` with reflect padding and no norm: x + [pad conv ReLU pad conv]."""

    features: int
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv3 = lambda name: conv(self.features, padding=0, use_bias=self.use_bias, dtype=self.dtype, name=name)
        y = nn.relu(conv3("conv1")(reflect_pad(x, 1)))
        y = conv3("conv2")(reflect_pad(y, 1))
        return x + y
