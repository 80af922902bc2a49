"""A small caption encoder trained with its task: one pooled vector and the token states."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.transformer import TextTransformer
from jaxgen.nn.pooling import masked_mean


class CaptionEncoder(nn.Module):
  """A `TextTransformer` over caption words, mean-pooled over the real tokens.

  The text condition of the motion tasks when no frozen CLIP tower is used:
  the pooled vector conditions the whole motion, the token states may join
  the sequence (MDM's text tokens).
  """

  vocab_size: int
  max_length: int
  width: int = 256
  num_layers: int = 4
  num_heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pooled (B, width), token states (B, L, width))."""
    states = TextTransformer(
      self.vocab_size,
      self.max_length,
      self.width,
      self.num_layers,
      self.num_heads,
      self.dtype,
      name="transformer",
    )(tokens, mask)
    return masked_mean(states, mask), states
