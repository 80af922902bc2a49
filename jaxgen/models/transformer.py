"""Sequence transformers built from the shared `BasicTransformerBlock`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.transformer import BasicTransformerBlock


class TextTransformer(nn.Module):
  """A small bidirectional text encoder trained from scratch.

  Token + learned position embeddings, `num_layers` pre-norm blocks with a
  key-padding mask, a final LayerNorm. Returns per-token states (B, L, width)
  for cross-attention. (Pretrained CLIP / T5 towers live in
  `jaxgen.models.clip_text` and `jaxgen.models.t5`.)
  """

  vocab_size: int
  max_length: int
  width: int = 256
  num_layers: int = 4
  num_heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if tokens.ndim != 2 or tokens.shape[1] > self.max_length:
      raise ValueError(
        f"tokens: expected [batch, length <= {self.max_length}], found {tokens.shape}"
      )
    if self.width % self.num_heads:
      raise ValueError(f"width ({self.width}) must be divisible by num_heads ({self.num_heads})")
    x = pt.embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embedding")(tokens)
    # Same N(0, 1) scale as the token table; the pre-norm blocks normalise.
    positions = self.param(
      "position_embedding",
      pt.annotated(nn.initializers.normal(1.0), (None, "embed")),
      (self.max_length, self.width),
    )
    x = x + positions[None, : tokens.shape[1]].astype(x.dtype)
    for i in range(self.num_layers):
      x = BasicTransformerBlock(
        self.num_heads,
        self.width // self.num_heads,
        activation="gelu",
        dtype=self.dtype,
        name=f"layers_{i}",
      )(x, mask=mask)
    return pt.layer_norm(dtype=self.dtype, name="final_layer_norm")(x)
