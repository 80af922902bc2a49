"""Residual conv block with optional timestep conditioning (diffusers `ResnetBlock2D`)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt


class ResnetBlock2D(nn.Module):
  """GroupNorm -> SiLU -> conv3x3 (+ time projection) -> GroupNorm -> SiLU -> dropout -> conv3x3, plus skip.

  Submodules: `norm1`, `conv1`, `time_emb_proj` (only when a time embedding
  is passed), `norm2`, `conv2`, `conv_shortcut` (1x1, only when the channel
  count changes), as in diffusers (`time_embedding_norm="default"`).

  Attributes:
    out_channels: output channels (defaults to the input channels).
    groups: GroupNorm groups.
    eps: GroupNorm epsilon.
    dropout: dropout rate before `conv2`.
    output_scale_factor: the sum (skip + residual) is divided by this.
    dtype: compute dtype.
  """

  out_channels: int | None = None
  groups: int = 32
  eps: float = 1e-6
  dropout: float = 0.0
  output_scale_factor: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, temb: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    """x: (B, H, W, C); temb: (B, T) or None."""
    in_channels = x.shape[-1]
    out_channels = self.out_channels or in_channels
    h = pt.group_norm(self.groups, self.eps, dtype=self.dtype, name="norm1")(x)
    h = pt.conv(out_channels, 3, padding=1, dtype=self.dtype, name="conv1")(nn.silu(h))
    if temb is not None:
      t = pt.dense(
        out_channels, ("time_embed", "conv_out"), dtype=self.dtype, name="time_emb_proj"
      )(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(pt.group_norm(self.groups, self.eps, dtype=self.dtype, name="norm2")(h))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = pt.conv(out_channels, 3, padding=1, dtype=self.dtype, name="conv2")(h)
    if in_channels != out_channels:
      x = pt.conv(out_channels, 1, dtype=self.dtype, name="conv_shortcut")(x)
    return (x + h) / self.output_scale_factor
