"""Rotary position embeddings (RoFormer), laid out as lucidrains' `rotary-embedding-torch`.

The token at position p turns each feature pair (2i, 2i+1) by the angle
p * theta^(-2i/dim): adjacent features form a pair (interleaved layout, not
the two-halves layout of GPT-NeoX), and only the first `dim` features turn.
EDGE's copy of that library rotates whole token vectors (dim = model width)
before attention projects them; other models rotate per-head queries and
keys. Both are this one function over the last two axes (..., length, features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rotary_frequencies(dim: int, theta: float = 10000.0) -> jax.Array:
  """(dim // 2,) float32 angular frequencies theta^(-2i/dim), one per feature pair."""
  if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0 or dim % 2:
    raise ValueError(f"dim: expected a positive even number of rotated features, found {dim!r}")
  return 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def rotate_pairs(x: jax.Array) -> jax.Array:
  """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): a quarter turn of every adjacent pair."""
  pairs = x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
  turned = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
  return turned.reshape(x.shape)


def apply_rotary(x: jax.Array, dim: int | None = None, theta: float = 10000.0) -> jax.Array:
  """Rotates the first `dim` (default: all) features of x (..., length, features) by position.

  Positions are 0..length-1 along axis -2 (a query and its keys count from 0
  each, as the reference does for cross-attention). Angles are float32; the
  result has x's dtype.
  """
  if x.ndim < 2:
    raise ValueError(f"x: expected (..., length, features), found shape {x.shape}")
  features = x.shape[-1]
  dim = features if dim is None else dim
  if dim > features:
    raise ValueError(f"dim: expected at most the {features} features of x, found {dim}")
  frequencies = jnp.repeat(rotary_frequencies(dim, theta), 2)  # each pair shares its angle
  angles = jnp.arange(x.shape[-2], dtype=jnp.float32)[:, None] * frequencies[None, :]
  turned = x[..., :dim].astype(jnp.float32)
  turned = turned * jnp.cos(angles) + rotate_pairs(turned) * jnp.sin(angles)
  return jnp.concatenate([turned.astype(x.dtype), x[..., dim:]], axis=-1)
