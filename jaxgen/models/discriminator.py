"""PatchGAN discriminator (Isola et al. 2017) and the hinge GAN losses.

The layout is pix2pix / taming-transformers' `NLayerDiscriminator`, the
discriminator of the LDM autoencoders: a 4×4 stride-2 conv + LeakyReLU(0.2),
`num_layers - 1` more 4×4 stride-2 convs + norm + LeakyReLU with channels
doubling (capped at 8×), one 4×4 stride-1 conv + norm + LeakyReLU, and a 4×4
stride-1 conv to one logit per patch. Convolutions pad 1 pixel on every side,
as the PyTorch original does.

Difference from the original: taming uses BatchNorm (or ActNorm), whose
running statistics would be a second mutable collection beside the params;
jaxgen's train state holds params only, so the norm is GroupNorm (or none).
Weights are drawn from N(0, 0.02) and norm scales from N(1, 0.02), as in
pix2pix's `weights_init`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt

NORMS = ("group", "none")
LEAKY_SLOPE = 0.2
KERNEL_SIZE = 4
MAX_CHANNEL_MULTIPLIER = 8


@dataclasses.dataclass(frozen=True)
class PatchDiscriminatorConfig:
  """Architecture of a `PatchDiscriminator`.

  channels: width of the first conv (taming's `ndf`, 64 there).
  num_layers: stride-2 convs (taming's `n_layers`, 3 there); each halves the
    resolution, so an input side must be at least 2**num_layers * 4.
  norm: 'group' (GroupNorm with `norm_num_groups`) or 'none'.
  """

  in_channels: int = 3
  channels: int = 64
  num_layers: int = 3
  norm: str = "group"
  norm_num_groups: int = 32

  def __post_init__(self):
    for name in ("in_channels", "channels", "num_layers", "norm_num_groups"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")
    if self.norm not in NORMS:
      raise ValueError(f"norm: expected one of {NORMS}, found {self.norm!r}")
    if self.norm == "group":
      for width in self.layer_channels()[1:]:
        if width % self.norm_num_groups:
          raise ValueError(
            f"norm_num_groups: expected a divisor of every normalised layer's "
            f"channels {self.layer_channels()[1:]}, found {self.norm_num_groups}"
          )

  def layer_channels(self) -> tuple[int, ...]:
    """Output channels of the conv layers before the logit conv."""
    return tuple(
      self.channels * min(2**i, MAX_CHANNEL_MULTIPLIER) for i in range(self.num_layers + 1)
    )

  def min_input_size(self) -> int:
    """Smallest input side that leaves at least a 1×1 logit map."""
    size = 1
    for _ in range(2):  # the two stride-1 4×4 convs each remove one pixel
      size += 1
    for _ in range(self.num_layers):
      size *= 2
    return size


def _conv(features: int, strides: int, use_bias: bool, name: str) -> nn.Conv:
  return nn.Conv(
    features,
    (KERNEL_SIZE, KERNEL_SIZE),
    strides=(strides, strides),
    padding=((1, 1), (1, 1)),
    use_bias=use_bias,
    param_dtype=jnp.float32,
    kernel_init=pt.annotated(nn.initializers.normal(0.02), (None, None, "conv_in", "conv_out")),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def _normal_scale(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class PatchDiscriminator(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> patch logits (B, h, w, 1)."""

  config: PatchDiscriminatorConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = self.config
    check_discriminator_input(cfg, images)
    widths = cfg.layer_channels()
    x = images.astype(self.dtype)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      normalised = i > 0 and cfg.norm != "none"
      # A norm right after the conv makes its bias redundant (taming drops it too).
      x = _conv(width, 1 if last else 2, use_bias=not normalised, name=f"conv_{i}")(x)
      if normalised:
        x = nn.GroupNorm(
          num_groups=cfg.norm_num_groups,
          epsilon=1e-5,
          dtype=self.dtype,
          param_dtype=jnp.float32,
          use_fast_variance=False,
          scale_init=pt.annotated(_normal_scale, ("norm",)),
          bias_init=pt.annotated(nn.initializers.zeros_init(), ("norm",)),
          name=f"norm_{i}",
        )(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    return _conv(1, 1, use_bias=True, name="conv_out")(x).astype(jnp.float32)


def check_discriminator_input(config: PatchDiscriminatorConfig, images: Any) -> None:
  """Raises a ValueError naming `images` unless it is (B, H, W, in_channels) with H, W large enough."""
  shape = tuple(getattr(images, "shape", ()))
  if len(shape) != 4 or shape[-1] != config.in_channels:
    raise ValueError(
      f"images: expected NHWC with {config.in_channels} channels, found shape {shape}"
    )
  if min(shape[1:3]) < config.min_input_size():
    raise ValueError(
      f"images: a {config.num_layers}-layer PatchGAN needs height and width >= "
      f"{config.min_input_size()}, found {shape[1]}x{shape[2]}"
    )


# ----------------------------------------------------------------------------
# Hinge losses (Lim & Ye 2017; the LDM autoencoders' default).


def hinge_discriminator_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]), averaged over patches and batch."""
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def hinge_generator_loss(logits_fake: jax.Array) -> jax.Array:
  """-E[D(G(z))]: the generator's side of the hinge game."""
  return -jnp.mean(logits_fake)
