"""The two deep image priors of generic blind deblurring [`models/dips.py` of the reference], NHWC.

- `ImageDIP`: noise z_x (B, H, W, 8) -> sharp image x (B, H, W, 3) in (0, 1); the reference's `skip()`
  encoder-decoder [`models/backbones/skip/skip.py`].
- `KernelDIP`: noise z_k (B, 64, 64, 64) -> latent blur kernel (B, 2, 2, kernel_dim) [`KernelDIP`].

Both always run as in the reference's deblurring loop, i.e. in train mode: every BatchNorm normalises
with the statistics of the current batch. The running averages of torch's BatchNorm are never read
there, so `BatchStatNorm` keeps only its affine `scale` and `bias`: the parameter tree has a single
`params` collection and `apply` needs no mutable `batch_stats`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernelspace_jax.models import torch_init
from kernelspace_jax.models.layers import ReflectResnetBlock, conv, leaky_relu, max_pool_2x2, reflect_pad

BN_EPS = 1e-5
NON_LOCAL_FROM = 2  # skip() puts a non-local block in every scale i > 1
KERNEL_DIP_IN_CHANNELS = 64  # hard-coded in the reference, whatever the config
KERNEL_DIP_DOWNSAMPLINGS = 5


def kernel_noise_shape(cells_h: int, cells_w: int) -> tuple[int, int, int]:
    """The shape of the KernelDIP's input z_k for a (cells_h, cells_w) kernel grid: 32 pixels per cell
    and side, KERNEL_DIP_IN_CHANNELS channels (the KernelDIP halves its input 5 times)."""
    side = 2**KERNEL_DIP_DOWNSAMPLINGS
    return (side * cells_h, side * cells_w, KERNEL_DIP_IN_CHANNELS)


@dataclasses.dataclass(frozen=True)
class ImageDIPConfig:
    """Arguments of the reference's `skip()` call in `ImageDIP` (defaults: the full-size network).

    Attributes:
      in_channels: channels of z_x (`input_nc`).
      out_channels: channels of x (`output_nc`).
      channels_down, channels_up, channels_skip: per-scale widths (`num_channels_down/up/skip`); a
        skip width of 0 drops that scale's skip branch.
      filter_size_down, filter_size_up: conv sizes of the encoder and decoder (`filter_size_down/up`).
      filter_skip_size: conv size of the skip branches (`filter_skip_size`).
      need1x1_up: a 1x1 conv + BN + LeakyReLU after each decoder conv (`need1x1_up`).
      need_sigmoid: squash x into (0, 1) (`need_sigmoid`).

    Fixed as in `ImageDIP`: stride-2 downsampling, bilinear upsampling, LeakyReLU(0.2), biases, and
    zero padding (the reference asks for pad 'reflect', which skip() does not recognise).
    """

    in_channels: int = 8
    out_channels: int = 3
    channels_down: tuple[int, ...] = (128, 128, 128, 128, 128)
    channels_up: tuple[int, ...] = (128, 128, 128, 128, 128)
    channels_skip: tuple[int, ...] = (16, 16, 16, 16, 16)
    filter_size_down: int = 3
    filter_size_up: int = 3
    filter_skip_size: int = 1
    need1x1_up: bool = True
    need_sigmoid: bool = True

    def __post_init__(self):
        n = len(self.channels_down)
        if n == 0 or len(self.channels_up) != n or len(self.channels_skip) != n:
            raise ValueError(
                "channels_down, channels_up and channels_skip must be non-empty and of equal length, got "
                f"{self.channels_down}, {self.channels_up}, {self.channels_skip}"
            )

    @property
    def scales(self) -> int:
        return len(self.channels_down)


@dataclasses.dataclass(frozen=True)
class KernelDIPConfig:
    """`KernelDIP` options (defaults: options/generic_deblur/default.yml).

    Attributes:
      nf: width of the first conv (`nf`); the i-th stride-2 conv outputs min(nf * 2^(i+1), kernel_dim).
      kernel_dim: channels of the latent kernel (`kernel_dim`).
      n_blocks: reflect-padded ResNet blocks at the end (`n_blocks`).
    """

    nf: int = 64
    kernel_dim: int = 512
    n_blocks: int = 6

    def __post_init__(self):
        if self.nf * 2**KERNEL_DIP_DOWNSAMPLINGS < self.kernel_dim:
            raise ValueError(
                f"nf * {2**KERNEL_DIP_DOWNSAMPLINGS} must be >= kernel_dim (the ResNet blocks take "
                f"kernel_dim channels), got nf={self.nf}, kernel_dim={self.kernel_dim}"
            )


IMAGE_DIP_FULL = ImageDIPConfig()
KERNEL_DIP_FULL = KernelDIPConfig()
# The micro configurations of the golden files (tests/data/golden/README.md).
IMAGE_DIP_MICRO = ImageDIPConfig(channels_down=(8,) * 5, channels_up=(8,) * 5, channels_skip=(4,) * 5)
KERNEL_DIP_MICRO = KernelDIPConfig(nf=8, kernel_dim=64, n_blocks=1)


def _channel_sums(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (C,): sums over all but the last axis, as a matrix-vector product (XLA:CPU
    splits a column reduction into windowed reductions that run several times slower). HIGHEST
    precision: GPUs would otherwise round x to TF32 in a float32 dot."""
    rows = x.reshape(-1, x.shape[-1])
    return jnp.dot(jnp.ones((rows.shape[0],), x.dtype), rows, precision=jax.lax.Precision.HIGHEST)


def _batch_norm_fwd(x, scale, bias):
    n = x.size // x.shape[-1]
    mean = _channel_sums(x) / n
    centred = x - mean
    rstd = jax.lax.rsqrt(_channel_sums(jnp.square(centred)) / n + BN_EPS)
    return centred * (rstd * scale) + bias, (x, mean, rstd, scale)


def _batch_norm_bwd(residuals, dy):
    x, mean, rstd, scale = residuals
    n = x.size // x.shape[-1]
    normalised = (x - mean) * rstd
    d_bias, d_scale = _channel_sums(dy), _channel_sums(dy * normalised)
    dx = (scale * rstd) * (dy - d_bias / n - normalised * (d_scale / n))
    return dx, d_scale, d_bias


@jax.custom_vjp
def batch_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """Train-mode batch norm of x (B, H, W, C) with per-channel scale, bias (C,): the batch's mean and
    biased variance (two-pass, like torch; E[x^2] - E[x]^2 loses the low-variance inputs of the
    non-local blocks to round-off). Its backward pass is written out: 3 passes over x instead of the
    ~10 that differentiating the forward gives. Reverse mode only, like the convolutions of
    `models.layers`."""
    return _batch_norm_fwd(x, scale, bias)[0]


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchStatNorm(nn.Module):
    """`nn.BatchNorm2d` in train mode (`batch_norm`): normalises (B, H, W, C) with the batch's
    per-channel statistics, then scales and shifts. Keeps no running statistics."""

    scale_init: nn.initializers.Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", self.scale_init, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        return batch_norm(x, scale, bias)


def upsample_bilinear2x(x: jax.Array) -> jax.Array:
    """`nn.Upsample(scale_factor=2, mode='bilinear')` (align_corners=False): (B, H, W, C) -> (B, 2H, 2W, C).

    Output pixel 2i samples input position i - 1/4 and 2i + 1 samples i + 1/4; positions beyond the
    border are clamped to it, as torch does.
    """

    def along(axis: int, x: jax.Array) -> jax.Array:
        n = x.shape[axis]
        prev = jnp.take(x, jnp.maximum(jnp.arange(n) - 1, 0), axis=axis)
        nxt = jnp.take(x, jnp.minimum(jnp.arange(n) + 1, n - 1), axis=axis)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        shape = list(x.shape)
        shape[axis] = 2 * n
        return jnp.stack([even, odd], axis=axis + 1).reshape(shape)

    return along(2, along(1, x))


def _crop_center(x: jax.Array, height: int, width: int) -> jax.Array:
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top : top + height, left : left + width]


def _concat_channels(parts: list[jax.Array]) -> jax.Array:
    """`Concat(1, ...)` of skip(): centre-crops every part to the smallest height and width first."""
    height, width = min(p.shape[1] for p in parts), min(p.shape[2] for p in parts)
    return jnp.concatenate([_crop_center(p, height, width) for p in parts], axis=-1)


def _same_conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
    # torch's Conv2d(padding=(k - 1) // 2), zero padding
    return conv(features, kernel, stride=stride, padding=(kernel - 1) // 2, name=name)


class NonLocalBlock(nn.Module):
    """`NONLocalBlock2D` (embedded dot product, sub_sample, bn_layer): (B, H, W, C) -> (B, H, W, C).

    z = x + BN(W(y)), y = (theta(x) phi(x)^T / N) g(x), where theta, phi, g are 1x1 convs to C // 2
    channels, phi and g are 2x2 max-pooled and N is the number of pooled positions. The final BN
    starts with scale 0, so a fresh block is the identity.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        inter = max(channels // 2, 1)
        flat = lambda t: t.reshape(batch, -1, inter)
        theta = flat(conv(inter, 1, padding=0, name="theta")(x))
        phi = flat(max_pool_2x2(conv(inter, 1, padding=0, name="phi")(x)))
        g = flat(max_pool_2x2(conv(inter, 1, padding=0, name="g")(x)))
        affinity = jnp.einsum("bqc,bkc->bqk", theta, phi) / phi.shape[1]
        y = jnp.einsum("bqk,bkc->bqc", affinity, g).reshape(batch, height, width, inter)
        y = conv(channels, 1, padding=0, name="w_conv")(y)
        return x + BatchStatNorm(scale_init=nn.initializers.zeros, name="w_norm")(y)


class SkipScale(nn.Module):
    """Scale `index` of skip() and, nested in it as `scale_{index+1}`, all deeper ones.

    (B, H, W, C) -> (B, H, W, channels_up[index]). An odd side comes back from the stride-2 conv and
    the 2x upsampling one pixel longer and is centre-cropped to the skip branch's; without a skip
    branch (width 0) it stays longer, as in the reference.
    """

    config: ImageDIPConfig
    index: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, i = self.config, self.index
        act = leaky_relu(0.2)
        down, size_down = cfg.channels_down[i], cfg.filter_size_down

        deeper = act(BatchStatNorm(name="down_norm")(_same_conv(down, size_down, 2, name="down_conv")(x)))
        if i >= NON_LOCAL_FROM:
            deeper = NonLocalBlock(name="non_local")(deeper)
        deeper = act(BatchStatNorm(name="norm")(_same_conv(down, size_down, name="conv")(deeper)))
        if i + 1 < cfg.scales:
            deeper = SkipScale(cfg, i + 1, name=f"scale_{i + 1}")(deeper)
        parts = [upsample_bilinear2x(deeper)]

        if cfg.channels_skip[i]:
            skip = _same_conv(cfg.channels_skip[i], cfg.filter_skip_size, name="skip_conv")(x)
            parts.insert(0, act(BatchStatNorm(name="skip_norm")(skip)))

        y = BatchStatNorm(name="concat_norm")(_concat_channels(parts))
        y = _same_conv(cfg.channels_up[i], cfg.filter_size_up, name="up_conv")(y)
        y = act(BatchStatNorm(name="up_norm")(y))
        if cfg.need1x1_up:
            y = _same_conv(cfg.channels_up[i], 1, name="up1x1_conv")(y)
            y = act(BatchStatNorm(name="up1x1_norm")(y))
        return y


class ImageDIP(nn.Module):
    """Image prior [`ImageDIP`, i.e. `skip()`]: z_x (B, H, W, in_channels) -> x (B, H, W, out_channels).

    x is in (0, 1) with `need_sigmoid`. The reference uses sides that are multiples of 2^scales (odd
    sides inside are cropped, see `SkipScale`); the deepest non-local block max-pools a
    H / 2^scales map, so sides must be at least 2^(scales + 1) (64 for 5 scales).
    """

    config: ImageDIPConfig = IMAGE_DIP_FULL

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        y = SkipScale(self.config, 0, name="scale_0")(z)
        y = conv(self.config.out_channels, 1, padding=0, name="conv_out")(y)
        return nn.sigmoid(y) if self.config.need_sigmoid else y


class KernelDIP(nn.Module):
    """Kernel prior [`KernelDIP`]: z_k (B, H, W, 64) -> latent kernel (B, H/32, W/32, kernel_dim).

    Reflect-pad 3, 7x7 conv to nf, ReLU; 5 x (3x3 stride-2 conv, ReLU); n_blocks ResNet blocks
    (reflect padding, biases). No normalisation; every conv has a bias. The reference's z_k is 64x64,
    giving a 2x2 kernel.
    """

    config: KernelDIPConfig = KERNEL_DIP_FULL

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        x = nn.relu(conv(cfg.nf, 7, padding=0, name="conv_in")(reflect_pad(z, 3)))
        for i in range(KERNEL_DIP_DOWNSAMPLINGS):
            x = nn.relu(conv(min(cfg.nf * 2 ** (i + 1), cfg.kernel_dim), stride=2, name=f"down_{i}")(x))
        for i in range(cfg.n_blocks):
            x = ReflectResnetBlock(cfg.kernel_dim, use_bias=True, name=f"block_{i}")(x)
        return x


def init_params(module: nn.Module, key: jax.Array, z: jax.Array) -> dict:
    """Parameters of `module` (an ImageDIP or KernelDIP taking inputs shaped like `z`), initialised as
    the reference's PyTorch DIPs are.

    The DIPs are trained from scratch, so their start matters: torch draws conv weights and biases
    from U(+-1/sqrt(fan_in)) (Flax: LeCun-normal weights, zero biases). BatchNorms start at scale 1 and
    bias 0, except the non-local blocks' final norm, whose scale 0 makes a fresh block the identity.
    """
    abstract = jax.eval_shape(module.init, key, z)["params"]
    kernels = torch_init.kernel_shapes(abstract)

    def rule(path, shape):
        if path[:-1] in kernels:
            return torch_init.conv_default(path, shape, kernels)
        if path[-1] == "scale":
            return "constant", 0.0 if path[-2] == "w_norm" else 1.0
        return "constant", 0.0

    return torch_init.draw(abstract, key, rule)
