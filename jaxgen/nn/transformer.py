"""Transformer blocks: GEGLU feed-forward, the pre-norm block, and its 2-D image wrapper.

Names follow diffusers (`attn1`, `attn2`, `norm1..3`, `ff/net_0/proj`,
`ff/net_2`, `proj_in`, `proj_out`, `transformer_blocks_<i>`), so weights
convert mechanically.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import Attention

_ACTIVATIONS = ("geglu", "gelu", "gelu-approximate")


class GEGLU(nn.Module):
  """`proj` to 2*features, then value * gelu(gate) (exact erf GELU)."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = pt.dense(2 * self.features, ("embed", "mlp"), dtype=self.dtype, name="proj")(x)
    value, gate = jnp.split(h, 2, axis=-1)
    return value * nn.gelu(gate, approximate=False)


class GELU(nn.Module):
  """`proj` to features, then GELU (exact, or tanh-approximate)."""

  features: int
  approximate: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = pt.dense(self.features, ("embed", "mlp"), dtype=self.dtype, name="proj")(x)
    return nn.gelu(h, approximate=self.approximate)


class FeedForward(nn.Module):
  """`net_0` (GEGLU or GELU projection) -> dropout -> `net_2` linear (diffusers `FeedForward`).

  Attributes:
    mult: hidden width = mult * input width (unless `inner_dim` is given).
    activation: "geglu" (default), "gelu" or "gelu-approximate".
    out_features: output width (defaults to the input width).
  """

  mult: int = 4
  inner_dim: int | None = None
  out_features: int | None = None
  activation: str = "geglu"
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"activation: expected one of {_ACTIVATIONS}, found {self.activation!r}")
    inner = self.inner_dim or self.mult * x.shape[-1]
    if self.activation == "geglu":
      h = GEGLU(inner, dtype=self.dtype, name="net_0")(x)
    else:
      h = GELU(
        inner, approximate=self.activation == "gelu-approximate", dtype=self.dtype, name="net_0"
      )(x)
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return pt.dense(
      self.out_features or x.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="net_2"
    )(h)


class BasicTransformerBlock(nn.Module):
  """Pre-LayerNorm block: self-attention, optional cross-attention, feed-forward.

  x + attn1(norm1(x), mask) -> + attn2(norm2(x), context, context_mask)
  (only when `cross_attention_dim` is set) -> + ff(norm3(x)).
  With `cross_attention_dim=None` it is a plain encoder block for sequences.
  With `double_self_attention` (diffusers' option, used by its temporal
  transformers) attn2 is a second self-attention: + attn2(norm2(x), mask).
  """

  heads: int
  dim_head: int
  cross_attention_dim: int | None = None
  activation: str = "geglu"
  dropout: float = 0.0
  norm_eps: float = 1e-5
  attention_bias: bool = False
  double_self_attention: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    context: jax.Array | None = None,
    mask: jax.Array | None = None,
    context_mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """x: (B, L, C); context: (B, Lc, cross_attention_dim); masks: 1 = attend."""
    if self.double_self_attention and self.cross_attention_dim is not None:
      raise ValueError(
        "double_self_attention: attn2 is a self-attention, so cross_attention_dim must be None, "
        f"found {self.cross_attention_dim}"
      )
    if self.cross_attention_dim is None:
      if context is not None or context_mask is not None:
        raise ValueError(
          "context: this block has no cross-attention (cross_attention_dim=None), "
          "but a context or context_mask was passed"
        )
    elif context is None or context.ndim != 3 or context.shape[-1] != self.cross_attention_dim:
      found = None if context is None else context.shape
      raise ValueError(
        f"context: expected (batch, length, {self.cross_attention_dim}) for cross-attention, found {found}"
      )

    def attention(name: str) -> Attention:
      return Attention(
        self.heads,
        self.dim_head,
        qkv_bias=self.attention_bias,
        dropout=self.dropout,
        dtype=self.dtype,
        name=name,
      )

    def norm(name: str) -> nn.LayerNorm:
      return pt.layer_norm(self.norm_eps, dtype=self.dtype, name=name)

    x = x + attention("attn1")(norm("norm1")(x), mask=mask, deterministic=deterministic)
    if self.double_self_attention:
      x = x + attention("attn2")(norm("norm2")(x), mask=mask, deterministic=deterministic)
    elif self.cross_attention_dim is not None:
      x = x + attention("attn2")(
        norm("norm2")(x), context, mask=context_mask, deterministic=deterministic
      )
    ff = FeedForward(activation=self.activation, dropout=self.dropout, dtype=self.dtype, name="ff")
    return x + ff(norm("norm3")(x), deterministic=deterministic)


class Transformer2DModel(nn.Module):
  """Spatial transformer on NHWC feature maps (diffusers `Transformer2DModel`, continuous input).

  GroupNorm(eps 1e-6) -> `proj_in` (1x1 conv, or linear with
  `use_linear_projection`) -> `num_layers` BasicTransformerBlocks over the
  H*W tokens -> `proj_out` -> + input.
  """

  heads: int
  dim_head: int
  num_layers: int = 1
  cross_attention_dim: int | None = None
  use_linear_projection: bool = False
  norm_num_groups: int = 32
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    context: jax.Array | None = None,
    context_mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """x: (B, H, W, C); context: (B, L, cross_attention_dim); context_mask: (B, L)."""
    batch, height, width, channels = x.shape
    inner = self.heads * self.dim_head
    h = pt.group_norm(self.norm_num_groups, 1e-6, dtype=self.dtype, name="norm")(x)
    if self.use_linear_projection:
      h = pt.dense(inner, ("conv_in", "embed"), dtype=self.dtype, name="proj_in")(h)
    else:
      h = pt.conv(inner, 1, dtype=self.dtype, name="proj_in")(h)
    h = h.reshape(batch, height * width, inner)
    for i in range(self.num_layers):
      h = BasicTransformerBlock(
        self.heads,
        self.dim_head,
        cross_attention_dim=self.cross_attention_dim,
        dropout=self.dropout,
        dtype=self.dtype,
        name=f"transformer_blocks_{i}",
      )(h, context, context_mask=context_mask, deterministic=deterministic)
    h = h.reshape(batch, height, width, inner)
    if self.use_linear_projection:
      h = pt.dense(channels, ("embed", "conv_out"), dtype=self.dtype, name="proj_out")(h)
    else:
      h = pt.conv(channels, 1, dtype=self.dtype, name="proj_out")(h)
    return h + x
