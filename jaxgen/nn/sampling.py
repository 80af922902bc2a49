"""Spatial down/up-sampling layers (diffusers `Downsample2D` / `Upsample2D`, conv variants)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt


class Downsample2D(nn.Module):
  """Stride-2 3x3 conv named `conv`, halving H and W.

  padding=1 pads every side by one (diffusers' U-Net default); padding=0
  pads only bottom/right by one (diffusers' VAE encoder), both giving H/2.
  """

  out_channels: int | None = None
  padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.padding not in (0, 1):
      raise ValueError(f"padding: expected 0 or 1, found {self.padding}")
    pad = ((1, 1), (1, 1)) if self.padding == 1 else ((0, 1), (0, 1))
    features = self.out_channels or x.shape[-1]
    return pt.conv(features, 3, strides=2, padding=pad, dtype=self.dtype, name="conv")(x)


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of NHWC images (each pixel becomes a 2x2 block)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Upsample2D(nn.Module):
  """Nearest x2 upsampling followed by a 3x3 conv named `conv`."""

  out_channels: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = self.out_channels or x.shape[-1]
    return pt.conv(features, 3, padding=1, dtype=self.dtype, name="conv")(upsample_nearest_2x(x))
