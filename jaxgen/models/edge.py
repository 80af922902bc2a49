"""EDGE: the music-to-dance diffusion denoiser of Tseng et al. (2023), the reference `DanceDecoder`.

Pose frames are tokens (151 = 4 foot contacts + 3 root position + 24 joints x
6-D rotations; 150 frames = 5 s at 30 fps). The network predicts the clean
motion x0 from a noisy one, the diffusion time and per-frame music features
(35-d baseline or 4800-d Jukebox):

  music   -> cond_projection -> 2 pre-LN encoder layers -> music tokens
  time    -> sinusoidal -> time_mlp (Linear d->4d, Mish) -> to_time_cond (FiLM vector t)
                                                         -> to_time_tokens (2 tokens)
  t      += non_attn_cond_projection(mean of the music tokens)   (LN, Linear, SiLU, Linear)
  memory  = norm_cond([music tokens, time tokens])
  poses   -> input_projection -> decoder layers -> final_layer

Each decoder layer is pre-LN self-attention, cross-attention to `memory` and
a GELU feed-forward; every sublayer's output is modulated by its own FiLM
((1 + scale) * y + shift, from Mish + Linear of t) before the residual add.
Positions enter only through rotary embeddings, which the reference applies
to whole token vectors before attention projects them: queries and keys
come from rotated tokens, values from unrotated ones (`RotaryAttention`).
Classifier-free guidance: a dropped condition replaces the music tokens by
the learned `null_cond_embed` and the pooled music by `null_cond_hidden`;
`keep_mask` (B,) chooses per row, `cond_drop_prob` draws it as the reference.

Names mirror the reference `model/model.py`, so `jaxgen.convert.edge` maps
its state dicts mechanically (`time_mlp_1` is `time_mlp.1`, `cond_encoder_<i>`
is `cond_encoder.<i>`, `decoder_<i>` is `seqTransDecoder.stack.<i>`, `film1`
is `film1.block.1`, q/k/v are split from `in_proj_weight`). PyTorch also
drops attention weights; jaxgen's attention does not (a regulariser only,
identical at inference).

The faithful config (`EDGEConfig()`, the baseline features) has 47,024,791
parameters, the reference's printed count; `EDGEConfig.jukebox()` 49,464,471:
  time_mlp, to_time_cond, to_time_tokens  (512*2048+2048) + (2048*512+512)
                                          + (2048*1024+1024)            =  4,197,888
  null_cond_embed, null_cond_hidden       150*512 + 512                 =     77,312
  norm_cond                               2*512                         =      1,024
  input_projection                        151*512 + 512                 =     77,824
  cond_projection                         35*512 + 512 (4800: 2,458,112) =     18,432
  cond_encoder (2 layers)                 2 * (4*(512^2+512) + FF 1,050,112
                                               + 2*2*512)               =  4,205,568
  non_attn_cond_projection                2*512 + 2*(512^2+512)         =    526,336
  decoder (8 layers)                      8 * (8*(512^2+512) + FF 1,050,112
                                               + 3*2*512 + 3*(512*1024+1024))
                                                                        = 37,842,944
  final_layer                             512*151 + 151                 =     77,463
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.transformers_compat import check_positive_ints
from jaxgen.nn import partitioning as pt
from jaxgen.nn.attention import dot_product_attention
from jaxgen.nn.embeddings import timestep_embedding
from jaxgen.nn.rotary import apply_rotary
from jaxgen.nn.sequence_layers import TransformerSublayers

BASELINE_MUSIC_DIM = 35  # onset envelope, 20 MFCC, 12 chroma, onset and beat one-hots
JUKEBOX_MUSIC_DIM = 4800
NUM_TIME_TOKENS = 2


@dataclasses.dataclass(frozen=True)
class EDGEConfig:
  """Architecture of the EDGE denoiser (the reference's `DanceDecoder` arguments in `EDGE.py`)."""

  pose_dim: int = 151  # nfeats: 4 contacts + 3 root position + 24 * 6 rotations
  seq_len: int = 150  # frames of the null music embedding (5 s at 30 fps)
  music_dim: int = BASELINE_MUSIC_DIM  # cond_feature_dim
  latent_dim: int = 512
  ff_size: int = 1024
  num_layers: int = 8
  num_heads: int = 8
  num_music_layers: int = 2  # fixed at 2 in the reference
  dropout: float = 0.1

  def __post_init__(self):
    check_positive_ints(
      self,
      (
        "pose_dim",
        "seq_len",
        "music_dim",
        "latent_dim",
        "ff_size",
        "num_layers",
        "num_heads",
        "num_music_layers",
      ),
    )
    if self.latent_dim % self.num_heads:
      raise ValueError(
        f"latent_dim: expected a multiple of num_heads={self.num_heads}, found {self.latent_dim}"
      )
    if self.latent_dim % 2 or self.latent_dim < 4:
      # Rotary pairs and sin/cos halves of the time embedding, whose frequencies
      # divide by latent_dim/2 - 1 in the reference.
      raise ValueError(f"latent_dim: expected an even width >= 4, found {self.latent_dim}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout: expected a rate in [0, 1), found {self.dropout}")

  @classmethod
  def jukebox(cls, **overrides: Any) -> EDGEConfig:
    """The published model on 4800-d Jukebox features (the released checkpoint's)."""
    return cls(**{"music_dim": JUKEBOX_MUSIC_DIM, **overrides})


def condition_keep_mask(rng: jax.Array | None, batch: int, cond_drop_prob: float) -> jax.Array:
  """(batch,) bool, True = keep the music: uniform < 1 - p, as the reference's `prob_mask_like`.

  p = 0 keeps and p = 1 drops every row without drawing (then `rng` may be None).
  """
  if not 0.0 <= cond_drop_prob <= 1.0:
    raise ValueError(f"cond_drop_prob: expected a probability in [0, 1], found {cond_drop_prob}")
  if cond_drop_prob in (0.0, 1.0):
    return jnp.full((batch,), cond_drop_prob == 0.0)
  if rng is None:
    raise ValueError(f"rng: a random key is needed to drop conditions with p={cond_drop_prob}")
  return jax.random.uniform(rng, (batch,)) < 1.0 - cond_drop_prob


def check_inputs(config: EDGEConfig, x: Any, music: Any, times: Any, keep_mask: Any | None) -> int:
  """Named errors for inputs the model cannot take; returns the batch size."""
  c = config
  if x.ndim != 3 or x.shape[-1] != c.pose_dim:
    raise ValueError(f"x: expected poses (batch, frames, {c.pose_dim}), found shape {x.shape}")
  batch, frames, _ = x.shape
  if music.ndim != 3 or music.shape[-1] != c.music_dim:
    raise ValueError(
      f"music: expected features (batch, frames, {c.music_dim}), found shape {music.shape}"
    )
  if music.shape[0] != batch:
    raise ValueError(f"music: expected the batch size of x ({batch}), found {music.shape[0]}")
  if music.shape[1] != frames:
    raise ValueError(
      f"music: expected as many frames as x ({frames}), found {music.shape[1]} (length mismatch)"
    )
  if frames != c.seq_len:
    raise ValueError(
      f"x: expected seq_len={c.seq_len} frames (the null music embedding's), found {frames}"
    )
  if jnp.shape(times) not in ((), (batch,)):
    raise ValueError(f"times: expected a scalar or shape ({batch},), found {jnp.shape(times)}")
  if keep_mask is not None and jnp.shape(keep_mask) != (batch,):
    raise ValueError(f"keep_mask: expected shape ({batch},), found {jnp.shape(keep_mask)}")
  return batch


class RotaryAttention(nn.Module):
  """`torch.nn.MultiheadAttention(rot(x), rot(context), context)` as EDGE calls it.

  Tokens are rotated by position before the q/k projections (values are not);
  self-attention when `context` is None. Names: `to_q`, `to_k`, `to_v`,
  `to_out_0` with biases (PyTorch's fused `in_proj_*` split in three).
  """

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    kv_axis = "embed" if context is None else "kv"
    context = x if context is None else context
    width = x.shape[-1]

    def project(name: str, tokens: jax.Array, axis: str) -> jax.Array:
      h = pt.dense(width, (axis, "heads"), dtype=self.dtype, name=name)(tokens)
      return h.reshape(h.shape[:2] + (self.num_heads, width // self.num_heads))

    q = project("to_q", apply_rotary(x), "embed")
    k = project("to_k", apply_rotary(context), kv_axis)
    v = project("to_v", context, kv_axis)
    out = dot_product_attention(q, k, v).reshape(x.shape[:2] + (width,))
    return pt.dense(width, ("heads", "embed"), dtype=self.dtype, name="to_out_0")(out)


class MusicEncoderLayer(TransformerSublayers):
  """The reference's pre-LN `TransformerEncoderLayer` with rotary self-attention (`cond_encoder`)."""

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    attention = RotaryAttention(self.num_heads, dtype=self.dtype, name="self_attn")
    x = self.residual(x, "norm1", attention, deterministic)
    return self.residual(x, "norm2", lambda h: self.feed_forward(h, deterministic), deterministic)


class FiLMDecoderLayer(TransformerSublayers):
  """The reference's `FiLMTransformerDecoderLayer`: x + FiLM_i(dropout(sublayer_i(norm_i(x))), t)."""

  @nn.compact
  def __call__(
    self, x: jax.Array, memory: jax.Array, t: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """x: (B, T, d) pose tokens; memory: (B, M, d) music + time tokens; t: (B, d) FiLM vector."""

    def modulated(index: int, sublayer, h: jax.Array) -> jax.Array:
      y = sublayer(pt.layer_norm(1e-5, dtype=self.dtype, name=f"norm{index}")(h))
      y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
      # DenseFiLM: Mish then Linear d -> 2d, split into (scale, shift).
      film = pt.dense(2 * h.shape[-1], ("embed", "mlp"), dtype=self.dtype, name=f"film{index}")
      scale, shift = jnp.split(film(jax.nn.mish(t))[:, None, :], 2, axis=-1)
      return h + (1.0 + scale) * y + shift

    self_attention = RotaryAttention(self.num_heads, dtype=self.dtype, name="self_attn")
    cross_attention = RotaryAttention(self.num_heads, dtype=self.dtype, name="multihead_attn")
    x = modulated(1, self_attention, x)
    x = modulated(2, lambda h: cross_attention(h, memory), x)
    return modulated(3, lambda h: self.feed_forward(h, deterministic), x)


class EDGE(nn.Module):
  """EDGE's `DanceDecoder`: (x_t (B, T, pose_dim), music (B, T, music_dim), t (B,)) -> x0."""

  config: EDGEConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    music: jax.Array,
    times: jax.Array,
    *,
    keep_mask: jax.Array | None = None,
    cond_drop_prob: float = 0.0,
    train: bool = False,
  ) -> jax.Array:
    """keep_mask (B,) bool: True uses the music, False the null condition (guidance's
    unconditional half). Without it, `cond_drop_prob` draws one from the `dropout` rng
    stream (0: keep all, 1: drop all, neither needs a key). Clips are `config.seq_len`
    frames long, the length of the null music embedding.
    """
    c = self.config
    batch = check_inputs(c, x, music, times, keep_mask)
    if keep_mask is not None and cond_drop_prob:
      raise ValueError("keep_mask: pass either keep_mask or cond_drop_prob > 0, not both")
    if keep_mask is None:
      needs_key = 0.0 < cond_drop_prob < 1.0
      keep_mask = condition_keep_mask(
        self.make_rng("dropout") if needs_key else None, batch, cond_drop_prob
      )
    keep = jnp.asarray(keep_mask).astype(bool)
    times = jnp.broadcast_to(jnp.asarray(times), (batch,))
    d, deterministic = c.latent_dim, not train
    dense = functools.partial(pt.dense, dtype=self.dtype)
    layer_options = {
      "num_heads": c.num_heads,
      "ff_size": c.ff_size,
      "dropout": c.dropout,
      "activation": "gelu",
      "norm_first": True,
      "dtype": self.dtype,
    }

    tokens = dense(d, (None, "embed"), name="cond_projection")(music.astype(self.dtype))
    for i in range(c.num_music_layers):
      tokens = MusicEncoderLayer(**layer_options, name=f"cond_encoder_{i}")(tokens, deterministic)
    null_tokens = self.param(
      "null_cond_embed",
      pt.annotated(nn.initializers.normal(1.0), (None, None, "embed")),
      (1, c.seq_len, d),
    )
    tokens = jnp.where(keep[:, None, None], tokens, null_tokens.astype(tokens.dtype))

    pooled = tokens.mean(axis=1)
    music_hidden = pt.layer_norm(1e-5, dtype=self.dtype, name="non_attn_cond_projection_0")(pooled)
    music_hidden = dense(d, ("embed", "mlp"), name="non_attn_cond_projection_1")(music_hidden)
    music_hidden = dense(d, ("mlp", "embed"), name="non_attn_cond_projection_3")(
      nn.silu(music_hidden)
    )

    # SinusoidalPosEmb: frequencies exp(-ln(1e4) i / (d/2 - 1)), [sin, cos].
    time = timestep_embedding(times, d, downscale_freq_shift=1.0).astype(self.dtype)
    time_hidden = jax.nn.mish(dense(4 * d, ("embed", "mlp"), name="time_mlp_1")(time))
    t = dense(d, ("mlp", "embed"), name="to_time_cond_0")(time_hidden)
    time_tokens = dense(NUM_TIME_TOKENS * d, ("mlp", "embed"), name="to_time_tokens_0")(time_hidden)
    time_tokens = time_tokens.reshape(batch, NUM_TIME_TOKENS, d)
    null_hidden = self.param(
      "null_cond_hidden", pt.annotated(nn.initializers.normal(1.0), (None, "embed")), (1, d)
    )
    t = t + jnp.where(keep[:, None], music_hidden, null_hidden.astype(music_hidden.dtype))
    memory = pt.layer_norm(1e-5, dtype=self.dtype, name="norm_cond")(
      jnp.concatenate([tokens, time_tokens], axis=1)
    )

    h = dense(d, (None, "embed"), name="input_projection")(x.astype(self.dtype))
    for i in range(c.num_layers):
      h = FiLMDecoderLayer(**layer_options, name=f"decoder_{i}")(h, memory, t, deterministic)
    return dense(c.pose_dim, ("embed", None), name="final_layer")(h).astype(jnp.float32)


def abstract_variables(config: EDGEConfig) -> Any:
  """The model's boxed variable shapes, by `jax.eval_shape` (no memory, no compute)."""
  frames = config.seq_len
  x = jax.ShapeDtypeStruct((1, frames, config.pose_dim), jnp.float32)
  music = jax.ShapeDtypeStruct((1, frames, config.music_dim), jnp.float32)
  times = jax.ShapeDtypeStruct((1,), jnp.float32)
  return jax.eval_shape(
    lambda x, m, t: EDGE(config).init(jax.random.PRNGKey(0), x, m, t), x, music, times
  )


def abstract_params(config: EDGEConfig) -> Any:
  """The model's unboxed param shapes (the template `jaxgen.convert.edge` checks against)."""
  return nn.meta.unbox(abstract_variables(config)["params"])
