"""MDM: the motion diffusion transformer of Tevet et al. (2023).

Motion frames are tokens. One extra token at the front carries the condition:
the timestep embedding (an MLP over a sinusoidal code) plus the projected
text embedding. The sequence gets sinusoidal positions and runs through a
post-norm Transformer encoder (PyTorch `nn.TransformerEncoderLayer`
semantics: x = norm1(x + attn(x)); x = norm2(x + ff(x))); the condition
token is dropped and every frame is projected back to the feature width. The
network predicts the clean motion x0. Three options beyond the published
model, all off in its config: `frames_per_token` folds consecutive frames
into one token, `text_token_dim` lets the text encoder's token states join
the sequence after the condition token, and `norm_first` makes the layers
pre-norm.

Module names mirror the reference `model/mdm.py`, so a key map converts its
checkpoints mechanically:

  input_process                     input_process.poseEmbedding
  embed_timestep_linear_1, _2       embed_timestep.time_embed.0, .2
  embed_text                        embed_text
  layers_<i>/self_attn/to_q|to_k|to_v, to_out_0
                                    seqTransEncoder.layers.<i>.self_attn.in_proj_* (split),
                                    .out_proj
  layers_<i>/linear1, linear2, norm1, norm2
                                    seqTransEncoder.layers.<i>.linear1 ...
  output_process                    output_process.poseFinal

The faithful HumanML3D config (`MDMConfig.humanml3d()`: width 512, 8 layers,
4 heads, FF 1024, 263 features, 512-d CLIP text embedding) has 17,880,327
trainable parameters, the reference's `parameters_wo_clip()` count (frozen
CLIP excluded):
  input_process      263*512 + 512                     =    135,168
  embed_timestep     2 * (512*512 + 512)               =    525,312
  embed_text         512*512 + 512                     =    262,656
  8 encoder layers   8 * (3*(512*512+512)              =
                          + 512*512+512                 (out_proj)
                          + 512*1024+1024 + 1024*512+512 (FF)
                          + 2*2*512)                   = 16,822,272  (layer norms)
  output_process     512*263 + 263                     =    134,919
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.transformers_compat import check_positive_ints
from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import sinusoidal_positions
from jaxgen.nn.sequence_layers import TransformerEncoderLayer, check_activation


@dataclasses.dataclass(frozen=True)
class MDMConfig:
  """Architecture of the MDM denoiser (names as in the reference's arguments)."""

  feature_dim: int = 263  # njoints * nfeats: 263 for HumanML3D, 251 for KIT-ML
  latent_dim: int = 512
  ff_size: int = 1024
  num_layers: int = 8
  num_heads: int = 4
  dropout: float = 0.1
  activation: str = "gelu"
  text_dim: int = 512  # width of the text embedding (CLIP ViT-B/32: 512)
  # Key-padding mask on frames beyond each motion's length. The published
  # model attends to padding (the mask is commented out in the reference);
  # masking makes the output of a frame independent of the padding.
  mask_padding: bool = False
  # Consecutive frames folded into one token (1 in MDM: every frame is a
  # token). p > 1 makes the sequence p times shorter, as patches do for
  # images (space-to-depth); a CPU-budget option, not the published model.
  frames_per_token: int = 1
  # > 0: the text encoder's token states (this wide) also join the sequence,
  # after the condition token (in-context text, as MDM's later BERT-token
  # variants); 0: only the pooled text vector conditions (the published MDM).
  text_token_dim: int = 0
  # Pre-norm layers (PyTorch's norm_first=True: x = x + f(norm(x))); MDM's
  # layers are post-norm. On the synthetic set its loss fell faster but its
  # samples scored lower (configs/t2m_mdm_synthetic.py).
  norm_first: bool = False

  def __post_init__(self):
    check_positive_ints(
      self,
      (
        "feature_dim",
        "latent_dim",
        "ff_size",
        "num_layers",
        "num_heads",
        "text_dim",
        "frames_per_token",
      ),
    )
    if self.latent_dim % self.num_heads:
      raise ValueError(
        f"latent_dim: expected a multiple of num_heads={self.num_heads}, found {self.latent_dim}"
      )
    if self.latent_dim % 2:
      raise ValueError(
        f"latent_dim: expected an even width (sin/cos pairs), found {self.latent_dim}"
      )
    if not isinstance(self.text_token_dim, int) or self.text_token_dim < 0:
      raise ValueError(f"text_token_dim: expected an int >= 0, found {self.text_token_dim!r}")
    check_activation(self.activation)
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout: expected a rate in [0, 1), found {self.dropout}")

  @classmethod
  def humanml3d(cls) -> MDMConfig:
    """The published HumanML3D model (hml_vec, trans_enc, CLIP ViT-B/32 text)."""
    return cls()


def fold_frames(x: jax.Array, p: int) -> jax.Array:
  """(B, T, D) -> (B, T/p, p*D): p consecutive frames concatenated into one token."""
  batch, frames, width = x.shape
  if frames % p:
    raise ValueError(f"frames: expected a number divisible by frames_per_token={p}, found {frames}")
  return x.reshape(batch, frames // p, p * width)


def fold_mask(mask: jax.Array, p: int) -> jax.Array:
  """(B, T) frame mask -> (B, T/p) token mask: a token is real when any of its frames is."""
  return fold_frames(mask.astype(bool)[..., None], p).any(-1)


class MDM(nn.Module):
  """The MDM denoiser: (x_t (B, T, D), t (B,), text embedding (B, text_dim)) -> x0 (B, T, D).

  The text embedding arrives already condition-dropped (zeros = the null
  condition, as the reference's `mask_cond`), so classifier-free guidance is
  a batch of [text, zeros].
  """

  config: MDMConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: jax.Array,
    text_embedding: jax.Array,
    frame_mask: jax.Array | None = None,
    train: bool = False,
    *,
    text_states: jax.Array | None = None,
    text_mask: jax.Array | None = None,
  ) -> jax.Array:
    """frame_mask (B, T), true on real frames: used only with `config.mask_padding`.

    text_states (B, L, text_token_dim) and text_mask (B, L) are required when
    `config.text_token_dim` > 0 (all-false masks drop the text tokens).
    """
    c = self.config
    if x.ndim != 3 or x.shape[-1] != c.feature_dim:
      raise ValueError(f"x: expected (batch, frames, {c.feature_dim}), found {x.shape}")
    batch, frames, _ = x.shape
    p = c.frames_per_token
    if text_embedding.shape != (batch, c.text_dim):
      raise ValueError(
        f"text_embedding: expected {(batch, c.text_dim)}, found {text_embedding.shape}"
      )
    t = jnp.broadcast_to(jnp.asarray(t), (batch,))
    d = c.latent_dim

    time = sinusoidal_positions(t, d).astype(self.dtype)
    time = pt.dense(d, ("embed", "mlp"), dtype=self.dtype, name="embed_timestep_linear_1")(time)
    time = pt.dense(d, ("mlp", "embed"), dtype=self.dtype, name="embed_timestep_linear_2")(
      nn.silu(time)
    )
    text = pt.dense(d, ("kv", "embed"), dtype=self.dtype, name="embed_text")(
      text_embedding.astype(self.dtype)
    )
    condition_token = (time + text)[:, None, :]

    x = fold_frames(x, p)
    tokens = x.shape[1]
    h = pt.dense(d, (None, "embed"), dtype=self.dtype, name="input_process")(x.astype(self.dtype))
    prefix = [condition_token]
    prefix_mask = [jnp.ones((batch, 1), bool)]
    if c.text_token_dim:
      if (
        text_states is None
        or text_states.shape[::2] != (batch, c.text_token_dim)
        or (text_states.ndim != 3)
      ):
        found = None if text_states is None else text_states.shape
        raise ValueError(
          f"text_states: expected (batch={batch}, length, {c.text_token_dim}), found {found}"
        )
      if text_mask is None or text_mask.shape != text_states.shape[:2]:
        raise ValueError(
          f"text_mask: expected {text_states.shape[:2]}, found "
          f"{None if text_mask is None else text_mask.shape}"
        )
      prefix.append(
        pt.dense(d, ("kv", "embed"), dtype=self.dtype, name="embed_text_tokens")(
          text_states.astype(self.dtype)
        )
      )
      prefix_mask.append(text_mask.astype(bool))
    num_prefix = sum(part.shape[1] for part in prefix)
    h = jnp.concatenate(prefix + [h], axis=1)
    h = h + sinusoidal_positions(jnp.arange(h.shape[1]), d).astype(self.dtype)[None]
    h = nn.Dropout(c.dropout)(h, deterministic=not train)

    token_mask = jnp.ones((batch, tokens), bool)
    if c.mask_padding and frame_mask is not None:
      if frame_mask.shape != (batch, frames):
        raise ValueError(f"frame_mask: expected {(batch, frames)}, found {frame_mask.shape}")
      # A token is real when any of its frames is.
      token_mask = fold_mask(frame_mask, p)
    mask = None
    if c.text_token_dim or (c.mask_padding and frame_mask is not None):
      mask = jnp.concatenate(prefix_mask + [token_mask], axis=1)
    for i in range(c.num_layers):
      h = TransformerEncoderLayer(
        c.num_heads,
        c.ff_size,
        c.dropout,
        c.activation,
        norm_first=c.norm_first,
        dtype=self.dtype,
        name=f"layers_{i}",
      )(h, mask=mask, deterministic=not train)
    out = pt.dense(p * c.feature_dim, ("embed", None), dtype=self.dtype, name="output_process")(
      h[:, num_prefix:]
    )
    return out.reshape(batch, frames, c.feature_dim).astype(jnp.float32)


def count_params(params: Any) -> int:
  """Number of scalars in a (possibly abstract or boxed) parameter tree."""
  leaves = jax.tree.leaves(nn.meta.unbox(params))
  return int(sum(math.prod(leaf.shape) for leaf in leaves))
