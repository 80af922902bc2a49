"""Adaptive LayerNorm conditioned on a discrete timestep (VQ-Diffusion's `AdaLayerNorm`).

LayerNorm without affine parameters, then x · (1 + scale) + shift with
(scale, shift) = `linear`(SiLU(`emb`[t])): each block learns its own timestep
table, so a timestep modulates every normalisation directly. Names follow
diffusers' `AdaLayerNorm` (`emb`, `linear`), which the VQ-Diffusion
transformers (`norm_type="ada_norm"`) use.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt


class AdaLayerNorm(nn.Module):
  """x (B, L, C), t (B,) int in [0, num_embeddings) -> LN(x) · (1 + scale_t) + shift_t.

  Attributes:
    num_embeddings: number of timesteps with a learned embedding.
    epsilon: LayerNorm epsilon (PyTorch's 1e-5).
    init_std: std of the N(0, init_std) embedding and linear kernels (the
      VQ-Diffusion reference initialises both with 0.02).
  """

  num_embeddings: int
  epsilon: float = 1e-5
  init_std: float = 0.02
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    width = x.shape[-1]
    t = jnp.asarray(t)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
      raise ValueError(
        f"t: expected one timestep per example, shape ({x.shape[0]},), found {t.shape}"
      )
    init = nn.initializers.normal(self.init_std)
    table = nn.Embed(
      self.num_embeddings,
      width,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(init, ("vocab", "time_embed")),
      name="emb",
    )
    emb = pt.dense(
      2 * width, ("time_embed", "mlp"), kernel_init=init, dtype=self.dtype, name="linear"
    )(nn.silu(table(t)))
    scale, shift = jnp.split(emb[:, None, :], 2, axis=-1)
    normed = nn.LayerNorm(
      epsilon=self.epsilon,
      use_scale=False,
      use_bias=False,
      use_fast_variance=False,
      dtype=self.dtype,
    )(x)
    return normed * (1.0 + scale) + shift
