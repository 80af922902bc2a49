"""Multi-head attention (self or cross) with diffusers-compatible names.

Submodules are `to_q`, `to_k`, `to_v`, `to_out_0` and, when enabled, the input
`group_norm`, matching diffusers' `Attention` (`to_out.0`), so weights convert
by a mechanical name map.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt


def _as_bool_mask(mask: jax.Array, batch: int, q_len: int, k_len: int) -> jax.Array:
  """Validates a key-padding (B, Lk) or full (B, Lq, Lk) mask; returns it as bool (B, 1, Lq|1, Lk)."""
  if mask.shape == (batch, k_len):
    return mask[:, None, None, :].astype(bool)
  if mask.shape == (batch, q_len, k_len):
    return mask[:, None, :, :].astype(bool)
  raise ValueError(
    f"mask: expected shape (batch, key_len) = {(batch, k_len)} or "
    f"(batch, query_len, key_len) = {(batch, q_len, k_len)}, found {mask.shape}"
  )


def dot_product_attention(
  q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v with logits and softmax in float32.

  q: (B, Lq, H, D); k, v: (B, Lk, H, D); mask: bool broadcastable to
  (B, H, Lq, Lk), True = attend. Masked logits get the most negative float32,
  so a row with every key masked degrades to uniform weights (as a -1e4 bias
  does in diffusers) rather than NaN.
  """
  scale = q.shape[-1] ** -0.5
  # Heads before length: plain batched matmuls, which XLA:CPU runs ~2.5x
  # faster (forward + backward) than the same contraction over (B, L, H, D).
  qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
  # Inputs stay in their (compute) dtype; the products accumulate into float32
  # logits, as exact as upcasting bfloat16 first but without float32 copies of q, k.
  qk_dtype = jnp.promote_types(q.dtype, k.dtype)
  logits = jnp.matmul(
    qh.astype(qk_dtype),
    jnp.swapaxes(kh.astype(qk_dtype), -1, -2),
    preferred_element_type=jnp.float32,
  )
  logits = logits * scale
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.swapaxes(jnp.matmul(weights.astype(v.dtype), vh), 1, 2)


class Attention(nn.Module):
  """Multi-head attention like diffusers' `Attention` (default processor).

  Attributes:
    heads: number of heads.
    dim_head: width of one head; projections have `heads * dim_head` features.
    out_features: output width (defaults to the query width).
    qkv_bias: bias on to_q/to_k/to_v (diffusers `bias`, False in U-Nets).
    dropout: dropout rate applied after the output projection.
    norm_num_groups: if set, a GroupNorm (`group_norm`) normalises `x` before
      the projections (diffusers `norm_num_groups`, e.g. the VAE mid-block).
    norm_eps: epsilon of that GroupNorm.
    residual_connection: add the (un-normalised) input `x` to the output.
    dtype: compute dtype (params stay float32).
  """

  heads: int
  dim_head: int
  out_features: int | None = None
  qkv_bias: bool = False
  dropout: float = 0.0
  norm_num_groups: int | None = None
  norm_eps: float = 1e-5
  residual_connection: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    context: jax.Array | None = None,
    mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """Attends from `x` (B, Lq, C) to `context` (B, Lk, Ck), or to itself.

    `x` may also be an image (B, H, W, C): it attends as H*W tokens and the
    result is returned in image layout, as diffusers does for 4-D inputs.
    mask: bool/int (B, Lk) key padding or (B, Lq, Lk); 1 = attend.
    """
    if x.ndim not in (3, 4):
      raise ValueError(
        f"x: expected (batch, length, features) or (batch, height, width, features), found shape {x.shape}"
      )
    residual, x = x, x.reshape(x.shape[0], -1, x.shape[-1])
    self_attention = context is None or context is residual
    if self.norm_num_groups is not None:
      x = pt.group_norm(self.norm_num_groups, self.norm_eps, dtype=self.dtype, name="group_norm")(x)
    context = x if self_attention else context
    if context.ndim != 3 or context.shape[0] != x.shape[0]:
      raise ValueError(
        f"context: expected (batch={x.shape[0]}, length, features), found shape {context.shape}"
      )
    batch, q_len, width = x.shape
    k_len = context.shape[1]
    inner = self.heads * self.dim_head
    kv_axis = "embed" if self_attention else "kv"

    def project(name: str, inputs: jax.Array, in_axis: str) -> jax.Array:
      layer = pt.dense(
        inner, (in_axis, "heads"), use_bias=self.qkv_bias, dtype=self.dtype, name=name
      )
      return layer(inputs).reshape(inputs.shape[0], inputs.shape[1], self.heads, self.dim_head)

    q = project("to_q", x, "embed")
    k = project("to_k", context, kv_axis)
    v = project("to_v", context, kv_axis)
    bool_mask = None if mask is None else _as_bool_mask(jnp.asarray(mask), batch, q_len, k_len)
    out = dot_product_attention(q, k, v, bool_mask).reshape(batch, q_len, inner)
    out = pt.dense(
      self.out_features or width, ("heads", "embed"), dtype=self.dtype, name="to_out_0"
    )(out)
    out = nn.Dropout(self.dropout)(out, deterministic=deterministic)
    out = out.reshape(residual.shape[:-1] + out.shape[-1:])
    if self.residual_connection:
      if out.shape != residual.shape:
        raise ValueError(
          f"residual_connection: output shape {out.shape} differs from the input shape {residual.shape} "
          "(out_features must equal the input width)"
        )
      out = out + residual
    return out
