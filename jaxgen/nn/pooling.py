"""Pooling token states under a padding mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of token states over attended tokens: (B, L, D), (B, L) -> (B, D)."""
  weights = mask.astype(states.dtype)[..., None]
  return (states * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
