"""Pix2Pix's U-Net generator (Isola et al. 2017), as in pytorch-CycleGAN-and-pix2pix.

The reference builds the U-Net recursively from `UnetSkipConnectionBlock`s,
level 0 outermost, level `num_downs - 1` innermost (the 1×1 bottleneck of
`unet_256`). Level d maps `outer` channels to `inner` ones and back:

  outermost:     down conv                       | sub | ReLU, up conv (+bias), tanh
  middle:        LeakyReLU 0.2, down conv, norm  | sub | ReLU, up conv, norm [, dropout]
  innermost:     LeakyReLU 0.2, down conv        |     | ReLU, up conv, norm

and every level but the outermost returns concat([its input, its output]).
Down convs are 4×4 stride 2 pad 1; up convs are `ConvTranspose2d(4, 2, 1)`.
Widths: ngf, 2ngf, 4ngf, 8ngf, then 8ngf for every deeper level. Dropout 0.5
follows the `num_downs - 5` middle levels of width 8ngf (the three above the
bottleneck in `unet_256`) when `use_dropout`, and stays on at test time: the
reference never calls `.eval()` in its test script, and pix2pix's noise is
this dropout. Convs followed by BatchNorm have no bias; with instance norm
(no affine) they have one, as the reference decides by `use_bias`.

Here the recursion is unrolled into a loop (down path collecting skips, up
path consuming them); the parameters are named by level (`down_3`,
`down_norm_3`, `up_3`, `up_norm_3`) and `jaxgen.convert.pix2pix` maps them to
the nested state-dict names. Norms hold params only (`BatchStatNorm`: the
statistics of the batch at hand, at training and at test time).
Initialisation follows the reference's `init_weights('normal', 0.02)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.normalization import BatchStatNorm, InstanceNorm

NORMS = ("batch", "instance")
KERNEL_SIZE = 4
LEAKY_SLOPE = 0.2
DROPOUT_RATE = 0.5
MAX_CHANNEL_MULTIPLIER = 8
# The reference always builds these levels: outermost, ngf->2ngf, 2ngf->4ngf,
# 4ngf->8ngf and the innermost; `num_downs - 5` middle 8ngf levels go between.
MIN_DOWNS = 5
# A torch ConvTranspose2d(k=4, s=2, p=1) is a stride-1 conv over the input
# dilated by 2 and padded by k - 1 - p on each side, with the flipped kernel.
TRANSPOSE_PADDING = KERNEL_SIZE - 1 - 1


@dataclasses.dataclass(frozen=True)
class UnetGeneratorConfig:
  """Architecture of a `UnetGenerator` (the reference's `--netG unet_<size>`).

  num_downs: stride-2 levels; the input side must be a multiple of
    2**num_downs (8 for unet_256, 7 for unet_128).
  ngf: width of the outermost level.
  norm: "batch" (pix2pix) or "instance" (no affine; convs then carry a bias).
  use_dropout: dropout 0.5 in the middle 8ngf levels (pix2pix's default).
  """

  in_channels: int = 3
  out_channels: int = 3
  num_downs: int = 8
  ngf: int = 64
  norm: str = "batch"
  use_dropout: bool = True

  def __post_init__(self):
    for name in ("in_channels", "out_channels", "ngf"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")
    if not isinstance(self.num_downs, int) or self.num_downs < MIN_DOWNS:
      raise ValueError(
        f"num_downs: expected an int >= {MIN_DOWNS} (the reference U-Net always has "
        f"{MIN_DOWNS} levels), found {self.num_downs!r}"
      )
    if self.norm not in NORMS:
      raise ValueError(f"norm: expected one of {NORMS}, found {self.norm!r}")
    if not isinstance(self.use_dropout, bool):
      raise TypeError(f"use_dropout: expected a bool, found {self.use_dropout!r}")

  @property
  def conv_bias(self) -> bool:
    """Whether convs followed by a norm carry a bias (only before instance norm)."""
    return self.norm == "instance"

  def inner_channels(self, level: int) -> int:
    """Channels after level `level`'s down conv."""
    return self.ngf * min(2**level, MAX_CHANNEL_MULTIPLIER)

  def outer_channels(self, level: int) -> int:
    """Channels level `level`'s up conv returns (the generator's output for level 0)."""
    return self.out_channels if level == 0 else self.inner_channels(level - 1)

  def has_dropout(self, level: int) -> bool:
    """Dropout after the middle 8ngf levels (not the innermost), as the reference."""
    return self.use_dropout and 4 <= level < self.num_downs - 1

  @property
  def size_multiple(self) -> int:
    return 2**self.num_downs


def _normal(key, shape, dtype=jnp.float32):
  return 0.02 * jax.random.normal(key, shape, dtype)


class UnetGenerator(nn.Module):
  """Source images (B, H, W, in_channels) -> images (B, H, W, out_channels) in [-1, 1].

  `deterministic=False` applies the dropout and needs a "dropout" rng, as the
  reference does at training and at test time.
  """

  config: UnetGeneratorConfig
  dtype: Any = jnp.float32

  def _down(self, level: int, use_bias: bool) -> nn.Conv:
    return nn.Conv(
      self.config.inner_channels(level),
      (KERNEL_SIZE, KERNEL_SIZE),
      strides=(2, 2),
      padding=((1, 1), (1, 1)),
      use_bias=use_bias,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=pt.annotated(_normal, (None, None, "conv_in", "conv_out")),
      bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
      name=f"down_{level}",
    )

  def _up(self, level: int, use_bias: bool) -> nn.ConvTranspose:
    # transpose_kernel: the kernel is stored as the forward conv it transposes,
    # (kh, kw, out, in), which is torch's (in, out, kh, kw) by the usual HWIO <-> OIHW swap.
    return nn.ConvTranspose(
      self.config.outer_channels(level),
      (KERNEL_SIZE, KERNEL_SIZE),
      strides=(2, 2),
      padding=((TRANSPOSE_PADDING,) * 2,) * 2,
      transpose_kernel=True,
      use_bias=use_bias,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=pt.annotated(_normal, (None, None, "conv_out", "conv_in")),
      bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
      name=f"up_{level}",
    )

  def _norm(self, name: str) -> nn.Module:
    if self.config.norm == "batch":
      return BatchStatNorm(dtype=self.dtype, name=name)
    return InstanceNorm(dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, source: jax.Array, *, deterministic: bool = True) -> jax.Array:
    cfg = self.config
    check_generator_input(cfg, source)
    innermost = cfg.num_downs - 1
    x = self._down(0, use_bias=cfg.conv_bias)(source.astype(self.dtype))
    skips = []
    for level in range(1, cfg.num_downs):
      skips.append(x)
      x = self._down(level, use_bias=cfg.conv_bias)(nn.leaky_relu(x, LEAKY_SLOPE))
      if level != innermost:
        x = self._norm(f"down_norm_{level}")(x)
    for level in range(innermost, 0, -1):
      x = self._up(level, use_bias=cfg.conv_bias)(nn.relu(x))
      x = self._norm(f"up_norm_{level}")(x)
      if cfg.has_dropout(level):
        x = nn.Dropout(DROPOUT_RATE, deterministic=deterministic)(x)
      x = jnp.concatenate([skips.pop(), x], axis=-1)
    x = self._up(0, use_bias=True)(nn.relu(x))
    return jnp.tanh(x).astype(jnp.float32)


def check_generator_input(config: UnetGeneratorConfig, source: Any) -> None:
  """ValueError naming `source` unless it is (B, H, W, in_channels) with H, W multiples of 2**num_downs."""
  shape = tuple(getattr(source, "shape", ()))
  if len(shape) != 4 or shape[-1] != config.in_channels:
    raise ValueError(
      f"source: expected NHWC with {config.in_channels} channels, found shape {shape}"
    )
  multiple = config.size_multiple
  if shape[1] % multiple or shape[2] % multiple or min(shape[1:3]) < multiple:
    raise ValueError(
      f"source: a U-Net with num_downs={config.num_downs} needs height and width that are "
      f"multiples of {multiple}, found {shape[1]}x{shape[2]}"
    )


def abstract_params(config: UnetGeneratorConfig, resolution: int | None = None) -> Any:
  """The generator's (unboxed) param shapes, by `jax.eval_shape` (no memory)."""
  side = resolution or config.size_multiple
  x = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda x: UnetGenerator(config).init(jax.random.PRNGKey(0), x), x)
  return nn.meta.unbox(variables["params"])
