"""TEMOS / ACTOR-style transformer VAE for text-to-motion (Petrovich et al., 2022).

Two encoders map into one Gaussian latent space:
- motion: Linear(features -> latent) per frame, two learnt tokens (mu, logvar)
  prepended, sinusoidal positions, a post-LayerNorm transformer encoder; the
  outputs at the two tokens are the posterior's mean and log-variance
  (`ActorAgnosticEncoder`);
- text: token states of a text model -> ReLU -> Linear(text width -> latent),
  then the same token scheme and encoder (`DistilbertActorAgnosticEncoder`;
  here the text model is a small trained `TextTransformer`, or frozen
  external states such as CLIP's).
The decoder is non-autoregressive (`ActorAgnosticDecoder`): one query per
frame, each only a sinusoidal position, cross-attends to the latent vector
through a post-LayerNorm transformer decoder; a linear layer gives features,
zero beyond each clip's length.

Three options, off in TEMOS (see `MotionVAEConfig`): `frames_per_token`
folds consecutive frames into one token of the motion encoder and the
decoder, `logvar_offset` shifts both posteriors' log-variances, and
`norm_first` makes every layer pre-norm.

Layers are `torch.nn.TransformerEncoderLayer` / `TransformerDecoderLayer`
(`jaxgen.nn.sequence_layers`: LayerNorm eps 1e-5, GELU feed-forward), so
parameter counts match the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.motion_transformer import fold_frames, fold_mask
from jaxgen.models.transformer import TextTransformer
from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import sinusoidal_positions
from jaxgen.nn.sequence_layers import TransformerDecoderLayer, TransformerEncoderLayer


@dataclass(frozen=True)
class MotionVAEConfig:
  """Hyper-parameters (TEMOS names in comments).

  Attributes:
    input_dim: motion feature width (`nfeats`).
    latent_dim: latent and transformer width (`latent_dim`).
    ff_size: feed-forward width (`ff_size`).
    num_layers: layers of each encoder and of the decoder (`num_layers`).
    num_heads: attention heads (`num_heads`).
    dropout: dropout rate (`dropout`).
    text_dim: width of the text-model states fed to the text projection
      (768 for DistilBERT; the small text encoder's width otherwise).
    max_frames: longest motion (positions table length).
  """

  input_dim: int = 263
  latent_dim: int = 256
  ff_size: int = 1024
  num_layers: int = 6
  num_heads: int = 4
  dropout: float = 0.1
  text_dim: int = 768
  max_frames: int = 196
  # Consecutive frames folded into one token of the motion encoder and the
  # decoder (1 in TEMOS); as MDMConfig.frames_per_token, a CPU-budget option.
  frames_per_token: int = 1
  # Added to both encoders' log-variance outputs (0 in TEMOS). Those outputs
  # leave a post-LayerNorm layer, so they start near 0 (sigma ~ 1: a latent
  # as noisy as it is informative) and TEMOS unlearns that over ~10^5 steps;
  # a negative offset starts the posteriors narrow, the same model
  # reparametrised.
  logvar_offset: float = 0.0
  # Pre-norm layers (PyTorch's norm_first=True; TEMOS uses the post-norm
  # default). Post-norm stacks learn slowly at CPU budgets: 15 minutes on one
  # core reach R-precision top-3 ~0.6 post-norm and 0.84 pre-norm on the
  # synthetic set (configs/t2m_vae_synthetic.py).
  norm_first: bool = False

  def __post_init__(self):
    if not isinstance(self.frames_per_token, int) or self.frames_per_token < 1:
      raise ValueError(
        f"frames_per_token: expected a positive int, found {self.frames_per_token!r}"
      )
    if self.max_frames % self.frames_per_token:
      raise ValueError(
        f"frames_per_token: expected a divisor of max_frames={self.max_frames}, "
        f"found {self.frames_per_token}"
      )
    if self.latent_dim % self.num_heads:
      raise ValueError(
        f"latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})"
      )


class GaussianSequenceEncoder(nn.Module):
  """(B, L, in) sequence + mask -> (mu, logvar) (B, latent) through two learnt tokens.

  `input_relu` applies ReLU before the input projection (the text branch);
  `fold` consecutive positions are concatenated into one token (the motion
  branch with frames_per_token > 1).
  """

  config: MotionVAEConfig
  input_relu: bool = False
  fold: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True):
    c = self.config
    x, mask = fold_frames(x, self.fold), fold_mask(mask, self.fold)
    batch, length, _ = x.shape
    if self.input_relu:
      x = nn.relu(x)
    x = pt.dense(c.latent_dim, ("kv", "embed"), dtype=self.dtype, name="input_proj")(x)
    normal = pt.annotated(nn.initializers.normal(1.0), ("embed",))
    tokens = jnp.stack(
      [
        self.param("mu_token", normal, (c.latent_dim,)),
        self.param("logvar_token", normal, (c.latent_dim,)),
      ]
    )
    x = jnp.concatenate([jnp.broadcast_to(tokens.astype(x.dtype), (batch, 2, c.latent_dim)), x], 1)
    x = x + sinusoidal_positions(length + 2, c.latent_dim)[None].astype(x.dtype)
    x = nn.Dropout(c.dropout)(x, deterministic=deterministic)
    mask = jnp.concatenate([jnp.ones((batch, 2), bool), mask.astype(bool)], axis=1)
    for i in range(c.num_layers):
      x = TransformerEncoderLayer(
        c.num_heads,
        c.ff_size,
        c.dropout,
        norm_first=c.norm_first,
        dtype=self.dtype,
        name=f"layers_{i}",
      )(x, mask, deterministic)
    return x[:, 0], x[:, 1] + c.logvar_offset


class MotionQueryDecoder(nn.Module):
  """Latent (B, latent) + frame mask (B, T) -> motion (B, T, input_dim), zero on padding."""

  config: MotionVAEConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    c = self.config
    p = c.frames_per_token
    batch, frames = mask.shape
    token_mask = fold_mask(mask, p)
    length = token_mask.shape[1]
    queries = sinusoidal_positions(length, c.latent_dim)[None]
    x = nn.Dropout(c.dropout)(
      jnp.broadcast_to(queries, (batch, length, c.latent_dim)).astype(self.dtype),
      deterministic=deterministic,
    )
    memory = z[:, None, :].astype(self.dtype)
    for i in range(c.num_layers):
      x = TransformerDecoderLayer(
        c.num_heads,
        c.ff_size,
        c.dropout,
        norm_first=c.norm_first,
        dtype=self.dtype,
        name=f"layers_{i}",
      )(x, memory, token_mask, deterministic=deterministic)
    out = pt.dense(p * c.input_dim, ("embed", "conv_out"), dtype=self.dtype, name="final_layer")(x)
    out = out.reshape(batch, frames, c.input_dim)
    return out * mask[..., None].astype(out.dtype)


class TEMOS(nn.Module):
  """Text encoder (optional small trained one) + text/motion VAE encoders + decoder.

  Attributes:
    config: the VAE sizes.
    text: kwargs of a `TextTransformer` trained with the model; None when the
      text states come from outside (a frozen CLIP), via `encode_text_states`.
  """

  config: MotionVAEConfig
  text: Mapping | None = None
  dtype: Any = jnp.float32

  def setup(self):
    if self.text is not None:
      if self.text["width"] != self.config.text_dim:
        raise ValueError(
          f"text.width ({self.text['width']}) must equal the VAE's text_dim "
          f"({self.config.text_dim})"
        )
      self.text_model = TextTransformer(**self.text, dtype=self.dtype)
    self.text_encoder = GaussianSequenceEncoder(self.config, input_relu=True, dtype=self.dtype)
    self.motion_encoder = GaussianSequenceEncoder(
      self.config, fold=self.config.frames_per_token, dtype=self.dtype
    )
    self.motion_decoder = MotionQueryDecoder(self.config, dtype=self.dtype)

  def encode_text_states(self, states: jax.Array, mask: jax.Array, deterministic: bool = True):
    """(mu, logvar) from text-model states (B, L, text_dim)."""
    if states.ndim != 3 or states.shape[-1] != self.config.text_dim:
      raise ValueError(
        f"text states: expected (batch, length, text_dim={self.config.text_dim}), "
        f"found {states.shape}"
      )
    return self.text_encoder(states, mask, deterministic)

  def encode_text(self, tokens: jax.Array, mask: jax.Array, deterministic: bool = True):
    """(mu, logvar) from token ids, through the trained text model."""
    if self.text is None:
      raise ValueError(
        "encode_text: this TEMOS has no text model (text=None); "
        "pass external states to encode_text_states"
      )
    return self.encode_text_states(self.text_model(tokens, mask), mask, deterministic)

  def encode_motion(self, motion: jax.Array, mask: jax.Array, deterministic: bool = True):
    """(mu, logvar) from motion (B, T, input_dim) with frame mask (B, T)."""
    if motion.ndim != 3 or motion.shape[-1] != self.config.input_dim:
      raise ValueError(
        f"motion: expected (batch, frames, {self.config.input_dim}), found {motion.shape}"
      )
    return self.motion_encoder(motion, mask, deterministic)

  def decode(self, z: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    return self.motion_decoder(z, mask, deterministic)

  def __call__(self, tokens, text_mask, motion, motion_mask, deterministic: bool = True):
    """Initialises every part: (text posterior, motion posterior, decoded motion)."""
    text_dist = self.encode_text(tokens, text_mask, deterministic)
    motion_dist = self.encode_motion(motion, motion_mask, deterministic)
    return text_dist, motion_dist, self.decode(motion_dist[0], motion_mask, deterministic)


def gaussian_kl(
  mu_q: jax.Array, logvar_q: jax.Array, mu_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
  """Element-wise KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) (TEMOS averages it)."""
  return 0.5 * (
    logvar_p - logvar_q + (jnp.exp(logvar_q) + (mu_q - mu_p) ** 2) / jnp.exp(logvar_p) - 1.0
  )


def reparameterize(rng: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """mu + sigma · eps."""
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)
