"""CycleGAN's ResNet generator (Johnson et al. 2016, as used by Zhu et al. 2017).

The layout is `ResnetGenerator` of junyanz/pytorch-CycleGAN-and-pix2pix
(`models/networks.py`), in the order of its `nn.Sequential`:

  ReflectionPad(3), conv 7×7 → ngf, IN, ReLU
  2 × [conv 3×3 stride 2 (pad 1), channels doubling, IN, ReLU]
  num_blocks × residual block at 4·ngf:
      x + [ReflectionPad(1), conv 3×3, IN, ReLU, ReflectionPad(1), conv 3×3, IN](x)
  2 × [ConvTranspose 3×3 stride 2, padding 1, output_padding 1, channels halving, IN, ReLU]
  ReflectionPad(3), conv 7×7 → out_channels, tanh

IN is instance norm without affine parameters (`InstanceNorm2d` with
`affine=False`), so every conv keeps its bias, as the reference does whenever
the norm is instance norm. Weights are drawn from N(0, 0.02) and biases start
at zero, as its `init_weights('normal', 0.02)`. No dropout (CycleGAN's
default). `resnet_9blocks()` at ngf 64 has 11,378,179 parameters, the count
the reference prints.

The transposed convs are `nn.ConvTranspose` with an unflipped kernel over the
stride-dilated input padded (1, 2) per side: torch's ConvTranspose2d with
padding 1 and output_padding 1 is that convolution with its kernel flipped
and its in/out axes swapped, which the converter (`convert/cyclegan.py`)
does, so outputs match exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.normalization import InstanceNorm

NUM_DOWNSAMPLINGS = 2  # fixed in the reference
INSTANCE_NORM_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class ResnetGeneratorConfig:
  """Architecture of a `ResnetGenerator`.

  in_channels / out_channels: image channels (the reference's input_nc / output_nc).
  channels: width of the first conv (ngf, 64 in the reference).
  num_blocks: residual blocks at 4·channels (9 for `resnet_9blocks`, 6 for `resnet_6blocks`).
  """

  in_channels: int = 3
  out_channels: int = 3
  channels: int = 64
  num_blocks: int = 9

  def __post_init__(self):
    for name in ("in_channels", "out_channels", "channels", "num_blocks"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")

  @property
  def size_multiple(self) -> int:
    """Input sides must be multiples of this, so the upsampling restores them."""
    return 2**NUM_DOWNSAMPLINGS

  @property
  def min_input_size(self) -> int:
    """Smallest side: reflection padding by 1 needs >= 2 pixels at the residual resolution."""
    return 2 * self.size_multiple


def resnet_9blocks(**overrides: Any) -> ResnetGeneratorConfig:
  """The reference `netG resnet_9blocks` (CycleGAN's default generator)."""
  return ResnetGeneratorConfig(**{"channels": 64, "num_blocks": 9, **overrides})


def resnet_6blocks(**overrides: Any) -> ResnetGeneratorConfig:
  """The reference `netG resnet_6blocks` (the paper's choice at 128×128)."""
  return ResnetGeneratorConfig(**{"channels": 64, "num_blocks": 6, **overrides})


def _kernel_init():
  return pt.annotated(nn.initializers.normal(0.02), (None, None, "conv_in", "conv_out"))


def _bias_init():
  return pt.annotated(nn.initializers.zeros_init(), ("conv_out",))


def _conv(features: int, kernel: int, strides: int, padding: int, dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(strides, strides),
    padding=((padding, padding), (padding, padding)),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=_kernel_init(),
    bias_init=_bias_init(),
    name=name,
  )


def _upsample_conv(features: int, dtype: Any, name: str) -> nn.ConvTranspose:
  """torch ConvTranspose2d(k 3, stride 2, padding 1, output_padding 1): 2× larger output."""
  return nn.ConvTranspose(
    features,
    (3, 3),
    strides=(2, 2),
    # k - 1 - padding before, plus output_padding after, around the dilated input.
    padding=((1, 2), (1, 2)),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=_kernel_init(),
    bias_init=_bias_init(),
    name=name,
  )


def reflect_pad(x: jax.Array, width: int) -> jax.Array:
  """torch ReflectionPad2d(width) on NHWC."""
  return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0)), mode="reflect")


def _instance_norm(dtype: Any) -> InstanceNorm:
  return InstanceNorm(affine=False, epsilon=INSTANCE_NORM_EPSILON, dtype=dtype)


class ResnetBlock(nn.Module):
  """x + (reflect-pad, conv3, IN, ReLU, reflect-pad, conv3, IN)(x)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    h = _conv(width, 3, 1, 0, self.dtype, "conv_0")(reflect_pad(x, 1))
    h = nn.relu(_instance_norm(self.dtype)(h))
    h = _conv(width, 3, 1, 0, self.dtype, "conv_1")(reflect_pad(h, 1))
    return x + _instance_norm(self.dtype)(h)


class ResnetGenerator(nn.Module):
  """Images (B, H, W, in_channels) in [-1, 1] -> (B, H, W, out_channels) in [-1, 1]."""

  config: ResnetGeneratorConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = self.config
    check_generator_input(cfg, images)
    x = images.astype(self.dtype)
    x = _conv(cfg.channels, 7, 1, 0, self.dtype, "conv_in")(reflect_pad(x, 3))
    x = nn.relu(_instance_norm(self.dtype)(x))
    for i in range(NUM_DOWNSAMPLINGS):
      x = _conv(cfg.channels * 2 ** (i + 1), 3, 2, 1, self.dtype, f"down_{i}")(x)
      x = nn.relu(_instance_norm(self.dtype)(x))
    for i in range(cfg.num_blocks):
      x = ResnetBlock(self.dtype, name=f"blocks_{i}")(x)
    for i in range(NUM_DOWNSAMPLINGS):
      x = _upsample_conv(cfg.channels * 2 ** (NUM_DOWNSAMPLINGS - 1 - i), self.dtype, f"up_{i}")(x)
      x = nn.relu(_instance_norm(self.dtype)(x))
    x = _conv(cfg.out_channels, 7, 1, 0, self.dtype, "conv_out")(reflect_pad(x, 3))
    return jnp.tanh(x.astype(jnp.float32))


def check_generator_input(config: ResnetGeneratorConfig, images: Any) -> None:
  """A ValueError naming `images` unless it is (B, H, W, in_channels) with sides the net can take."""
  shape = tuple(getattr(images, "shape", ()))
  if len(shape) != 4 or shape[-1] != config.in_channels:
    raise ValueError(
      f"images: expected NHWC with {config.in_channels} channels, found shape {shape}"
    )
  height, width = shape[1:3]
  if height % config.size_multiple or width % config.size_multiple:
    raise ValueError(
      f"images: the ResNet generator needs height and width divisible by "
      f"{config.size_multiple}, found {height}x{width}"
    )
  if min(height, width) < config.min_input_size:
    raise ValueError(
      f"images: the ResNet generator needs height and width >= {config.min_input_size}, "
      f"found {height}x{width}"
    )
