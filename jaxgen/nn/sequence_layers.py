"""`torch.nn.TransformerEncoderLayer` / `TransformerDecoderLayer` in Flax (batch first).

The motion models (MDM, TEMOS) are built from PyTorch's stock layers, so
these follow them exactly: LayerNorm eps 1e-5, a feed-forward linear1 ->
activation -> dropout -> linear2, dropout after every sublayer, and either
post-norm (PyTorch's default, `x = norm(x + f(x))`) or pre-norm
(`norm_first=True`, `x = x + f(norm(x))`). Sub-module names are PyTorch's
(`self_attn`, `multihead_attn` as `cross_attn`, `linear1`, `linear2`,
`norm1..3`), so reference checkpoints convert by a key map. PyTorch also
drops attention weights; jaxgen's shared attention does not (a regulariser
only, identical at inference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import Attention

ACTIVATIONS = {
  "gelu": lambda x: nn.gelu(x, approximate=False),
  # jax.nn.gelu's default, as BERT / MaskGIT in JAX use it.
  "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
  "relu": nn.relu,
}


def check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, found {activation!r}")


class TransformerSublayers(nn.Module):
  """What a transformer layer shares (residual wiring, feed-forward); the base of the PyTorch-layout
  encoder and decoder layers here and of EDGE's layers."""

  num_heads: int
  ff_size: int
  dropout: float = 0.1
  activation: str = "gelu"
  norm_first: bool = False
  norm_eps: float = 1e-5  # PyTorch's; BERT-style models use 1e-12
  dtype: Any = jnp.float32

  def residual(
    self, x: jax.Array, name: str, sublayer: Callable[[jax.Array], jax.Array], deterministic: bool
  ) -> jax.Array:
    norm = pt.layer_norm(self.norm_eps, dtype=self.dtype, name=name)
    drop = nn.Dropout(self.dropout)
    if self.norm_first:
      return x + drop(sublayer(norm(x)), deterministic=deterministic)
    return norm(x + drop(sublayer(x), deterministic=deterministic))

  def attention(self, width: int, name: str) -> Attention:
    return Attention(
      self.num_heads, width // self.num_heads, qkv_bias=True, dtype=self.dtype, name=name
    )

  def feed_forward(self, x: jax.Array, deterministic: bool) -> jax.Array:
    h = pt.dense(self.ff_size, ("embed", "mlp"), dtype=self.dtype, name="linear1")(x)
    h = nn.Dropout(self.dropout)(ACTIVATIONS[self.activation](h), deterministic=deterministic)
    return pt.dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="linear2")(h)


class TransformerEncoderLayer(TransformerSublayers):
  """Self-attention then feed-forward; mask (B, L) or (B, L, L), true = attend."""

  @nn.compact
  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    attention = self.attention(x.shape[-1], "self_attn")
    x = self.residual(x, "norm1", lambda h: attention(h, mask=mask), deterministic)
    return self.residual(x, "norm2", lambda h: self.feed_forward(h, deterministic), deterministic)


class TransformerDecoderLayer(TransformerSublayers):
  """Self-attention, cross-attention to `memory` (B, M, C), then feed-forward."""

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    memory: jax.Array,
    mask: jax.Array | None = None,
    memory_mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    width = x.shape[-1]
    self_attention = self.attention(width, "self_attn")
    cross_attention = self.attention(width, "cross_attn")
    x = self.residual(x, "norm1", lambda h: self_attention(h, mask=mask), deterministic)
    x = self.residual(
      x, "norm2", lambda h: cross_attention(h, memory, mask=memory_mask), deterministic
    )
    return self.residual(x, "norm3", lambda h: self.feed_forward(h, deterministic), deterministic)
