"""PatchGAN discriminator (Isola et al. 2017) and the hinge GAN losses.

The layout is pix2pix / taming-transformers' `NLayerDiscriminator`, the
discriminator of the LDM autoencoders: a 4×4 stride-2 conv + LeakyReLU(0.2),
`num_layers - 1` more 4×4 stride-2 convs + norm + LeakyReLU with channels
doubling (capped at 8×), one 4×4 stride-1 conv + norm + LeakyReLU, and a 4×4
stride-1 conv to one logit per patch. Convolutions pad 1 pixel on every side,
as the PyTorch original does.

Norms (`jaxgen.nn.normalization`; the train state holds params only):
- "batch": BatchNorm on the current batch's statistics, with affine, as
  pix2pix runs it (no running averages: they are never read);
- "instance": InstanceNorm without affine (CycleGAN, SPADE);
- "group": GroupNorm (the LDM autoencoders here; taming uses BatchNorm);
- "none".
As in pix2pix's `NLayerDiscriminator`, a conv followed by a norm with an
affine shift has no bias; SPADE also drops it before instance norm
(`conv_bias=False`). `spectral_norm` wraps every conv (SPADE), `padding` is
pix2pix's 1 or SPADE's 2. `MultiscaleDiscriminator` runs the same design on
the image and on average-pooled copies (pix2pixHD / SPADE `num_D`).
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
from jaxgen.nn.normalization import BatchStatNorm, InstanceNorm, SpectralConv

NORMS = ("group", "batch", "instance", "none")
LEAKY_SLOPE = 0.2
KERNEL_SIZE = 4
MAX_CHANNEL_MULTIPLIER = 8


@dataclasses.dataclass(frozen=True)
class PatchDiscriminatorConfig:
  """Architecture of a `PatchDiscriminator`.

  channels: width of the first conv (taming's `ndf`, 64 there).
  num_layers: stride-2 convs (taming's `n_layers`, 3 there); each halves the
    resolution, so an input side must be at least 2**num_layers * 4.
  norm: one of NORMS ('group' uses `norm_num_groups`).
  conv_bias: whether a conv followed by a norm has a bias; None = pix2pix's
    rule (only when the norm has no affine shift, i.e. 'instance').
  spectral_norm: divide every conv kernel by its spectral norm (SPADE).
  padding: pixels padded on every side of every 4×4 conv (1; SPADE 2).
  """

  in_channels: int = 3
  channels: int = 64
  num_layers: int = 3
  norm: str = "group"
  norm_num_groups: int = 32
  conv_bias: bool | None = None
  spectral_norm: bool = False
  padding: int = 1

  def __post_init__(self):
    for name in ("in_channels", "channels", "num_layers", "norm_num_groups"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, found {value!r}")
    if not isinstance(self.padding, int) or self.padding < 0:
      raise ValueError(f"padding: expected an int >= 0, found {self.padding!r}")
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

  def normalised_conv_bias(self) -> bool:
    """Whether the convs followed by a norm carry a bias."""
    if self.conv_bias is not None:
      return self.conv_bias
    return self.norm == "instance"  # the only norm here without an affine shift

  def min_input_size(self) -> int:
    """Smallest input side that leaves at least a 1×1 logit map."""
    shrink = KERNEL_SIZE - 1 - 2 * self.padding  # pixels a stride-1 4×4 conv removes
    size = max(1 + 2 * shrink, 1)  # through the two stride-1 convs
    for _ in range(self.num_layers):  # back through each stride-2 conv: (n - 1) * 2 + k - 2p
      size = max((size - 1) * 2 + KERNEL_SIZE - 2 * self.padding, 1)
    return size


def _conv(config: PatchDiscriminatorConfig, features: int, strides: int, use_bias: bool, name: str):
  kernel_init = pt.annotated(nn.initializers.normal(0.02), (None, None, "conv_in", "conv_out"))
  if config.spectral_norm:
    return SpectralConv(
      features,
      KERNEL_SIZE,
      strides=strides,
      padding=config.padding,
      use_bias=use_bias,
      kernel_init=nn.initializers.normal(0.02),
      name=name,
    )
  p = config.padding
  return nn.Conv(
    features,
    (KERNEL_SIZE, KERNEL_SIZE),
    strides=(strides, strides),
    padding=((p, p), (p, p)),
    use_bias=use_bias,
    param_dtype=jnp.float32,
    kernel_init=kernel_init,
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def _norm(config: PatchDiscriminatorConfig, dtype, name: str) -> nn.Module:
  if config.norm == "batch":
    return BatchStatNorm(dtype=dtype, name=name)
  if config.norm == "instance":
    return InstanceNorm(dtype=dtype, name=name)
  return nn.GroupNorm(
    num_groups=config.norm_num_groups,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=jnp.float32,
    use_fast_variance=False,
    scale_init=pt.annotated(_normal_scale, ("norm",)),
    bias_init=pt.annotated(nn.initializers.zeros_init(), ("norm",)),
    name=name,
  )


def _normal_scale(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class PatchDiscriminator(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> patch logits (B, h, w, 1).

  With `return_features=True` it returns (logits, [activation after each
  conv block]), the features SPADE's feature-matching loss compares.
  """

  config: PatchDiscriminatorConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, return_features: bool = False):
    cfg = self.config
    check_discriminator_input(cfg, images)
    widths = cfg.layer_channels()
    x, features = images.astype(self.dtype), []
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      normalised = i > 0 and cfg.norm != "none"
      use_bias = cfg.normalised_conv_bias() if normalised else True
      x = _conv(cfg, width, 1 if last else 2, use_bias=use_bias, name=f"conv_{i}")(x)
      if normalised:
        x = _norm(cfg, self.dtype, f"norm_{i}")(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
      features.append(x)
    logits = _conv(cfg, 1, 1, use_bias=True, name="conv_out")(x).astype(jnp.float32)
    return (logits, features) if return_features else logits


def downsample_for_next_scale(images: jax.Array) -> jax.Array:
  """3×3 average pool, stride 2, pad 1, padding not counted (pix2pixHD's `num_D` pyramid)."""
  window, strides, padding = (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(images, 0.0, jax.lax.add, window, strides, padding)
  count = jax.lax.reduce_window(
    jnp.ones_like(images[..., :1]), 0.0, jax.lax.add, window, strides, padding
  )
  return total / count


class MultiscaleDiscriminator(nn.Module):
  """`num_scales` PatchDiscriminators, scale i seeing the image pooled i times (SPADE, pix2pixHD).

  Returns a list of per-scale logits, or of (logits, features) with `return_features`.
  """

  config: PatchDiscriminatorConfig
  num_scales: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, return_features: bool = False) -> list:
    if not isinstance(self.num_scales, int) or self.num_scales < 1:
      raise ValueError(f"num_scales: expected an int >= 1, found {self.num_scales!r}")
    outputs, x = [], images
    for i in range(self.num_scales):
      if i:
        x = downsample_for_next_scale(x)
      disc = PatchDiscriminator(self.config, dtype=self.dtype, name=f"scale_{i}")
      outputs.append(disc(x, return_features=return_features))
    return outputs


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
