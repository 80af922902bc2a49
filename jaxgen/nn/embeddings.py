"""Sinusoidal features of timesteps and positions, and the MLP that lifts timesteps."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt


def timestep_embedding(
  timesteps: jax.Array,
  dim: int,
  flip_sin_to_cos: bool = False,
  downscale_freq_shift: float = 1.0,
  max_period: float = 10000.0,
) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) timesteps, (N,) -> (N, dim) float32.

  Same as diffusers' `get_timestep_embedding`: frequencies
  exp(-ln(max_period) * i / (dim/2 - downscale_freq_shift)), [sin, cos]
  (or [cos, sin] with `flip_sin_to_cos`), zero-padded when `dim` is odd.
  """
  timesteps = jnp.asarray(timesteps)
  if timesteps.ndim != 1:
    raise ValueError(f"timesteps: expected a 1-D array (N,), found shape {timesteps.shape}")
  half = dim // 2
  exponent = (
    -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - downscale_freq_shift)
  )
  angles = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def sinusoidal_positions(positions: jax.Array | int, dim: int) -> jax.Array:
  """Transformer position encodings, (N,) -> (N, dim) float32: sin on even, cos on odd features.

  Frequencies exp(-ln(10000) * 2i / dim), interleaved [sin f0, cos f0, sin f1, ...]
  as MDM's `PositionalEncoding` and T2M-GPT's `PE1d_sincos`. `positions` may be
  fractional (a sampler's timesteps), or an int L for the positions 0..L-1.
  """
  if isinstance(positions, int):
    positions = jnp.arange(positions)
  positions = jnp.asarray(positions, jnp.float32)
  if positions.ndim != 1:
    raise ValueError(
      f"positions: expected an int or a 1-D array (N,), found shape {positions.shape}"
    )
  if dim % 2:
    raise ValueError(f"dim: expected an even number of features (sin, cos pairs), found {dim}")
  freqs = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
  angles = positions[:, None] * freqs[None, :]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(positions.shape[0], dim)


class TimestepEmbedding(nn.Module):
  """Two-layer MLP `linear_1` -> SiLU -> `linear_2` (diffusers `TimestepEmbedding`)."""

  features: int
  out_features: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = pt.dense(self.features, ("embed", "time_embed"), dtype=self.dtype, name="linear_1")(x)
    x = nn.silu(x)
    return pt.dense(
      self.out_features or self.features, ("mlp", "time_embed"), dtype=self.dtype, name="linear_2"
    )(x)
