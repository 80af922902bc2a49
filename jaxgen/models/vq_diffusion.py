"""VQ-Diffusion's denoising transformer (Gu et al. 2022, `Text2ImageTransformer`).

It reads a grid of image tokens x_t (codes 0..K−1, the mask K) at a
diffusion step t and predicts logits of the clean tokens x_0 over the K
codes; `jaxgen.diffusion.discrete` turns them into the reverse step, the loss
and the one-scan sampler.

- Input: token embedding ((K + 1) × width, the mask included) plus learned
  row and column embeddings (`latent_image_embedding`: `emb`, `height_emb`,
  `width_emb`).
- Blocks: AdaLN(t) → self-attention, AdaLN(t) → cross-attention to the text
  states, LayerNorm → MLP with GELU2 (x · sigmoid(1.702 x)); every attention
  projection has a bias; each AdaLN owns its timestep table.
- Output: LayerNorm + Linear to K logits.

Names follow diffusers' discrete `Transformer2DModel` (`transformer_blocks_<i>`
with `norm1`, `attn1`, `norm2`, `attn2`, `norm3`, `ff/net_0/proj`,
`ff/net_2`; `norm_out`, `out`), so its weights map one to one.

Text: the reference cross-attends to frozen CLIP ViT-B/32 token states
(77 × 512). `VQDiffusion` instead trains jaxgen's `TextTransformer` from
scratch on the captions (`text_vocab_size` set), or takes given states
(`text_vocab_size=None`, e.g. precomputed CLIP). For classifier-free guidance
it can learn a null text sequence (`learned_null_text`), as the improved
VQ-Diffusion's learnable classifier-free embedding does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.diffusion.guidance import classifier_free_guidance
from jaxgen.models.transformer import TextTransformer
from jaxgen.nn import partitioning as pt
from jaxgen.nn.adaptive_norm import AdaLayerNorm
from jaxgen.nn.attention import Attention

_INIT_STD = 0.02  # the reference's `_init_weights`: N(0, 0.02) for Linear and Embedding


class VQDiffusionInputError(ValueError):
  """Tokens, timesteps or text of the wrong shape or range for the model."""


@dataclass(frozen=True)
class VQDiffusionConfig:
  """Hyper-parameters (the reference's yaml names in comments).

  Attributes:
    num_codes: K image codes (`content_emb.num_embed`); the mask is code K.
    height, width: token grid (`content_spatial_size`).
    embed_dim: transformer width (`n_embd`).
    num_layers: blocks (`n_layer`).
    num_heads: attention heads (`n_head`).
    mlp_ratio: MLP width multiplier (`mlp_hidden_times`).
    condition_dim: width of the text states (`condition_dim`, CLIP's 512).
    num_timesteps: diffusion steps T, the size of each AdaLN table (`diffusion_step`).
    dropout: attention-output and MLP dropout (`resid_pdrop`).
    text_vocab_size: None: text states are given; else a `TextTransformer` of
      width `condition_dim` is trained from scratch on this vocabulary.
    text_max_length, text_layers, text_heads: that encoder's size (77 = CLIP's context).
    learned_null_text: learn a (text_max_length, condition_dim) null text for
      classifier-free guidance (the improved VQ-Diffusion's `empty_text_embed`).
  """

  num_codes: int = 2887
  height: int = 32
  width: int = 32
  embed_dim: int = 1024
  num_layers: int = 19
  num_heads: int = 16
  mlp_ratio: int = 4
  condition_dim: int = 512
  num_timesteps: int = 100
  dropout: float = 0.0
  text_vocab_size: int | None = None
  text_max_length: int = 77
  text_layers: int = 4
  text_heads: int = 8
  learned_null_text: bool = False

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise VQDiffusionInputError(
        f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
      )
    if self.text_vocab_size is not None and self.condition_dim % self.text_heads:
      raise VQDiffusionInputError(
        f"condition_dim ({self.condition_dim}) must be divisible by text_heads ({self.text_heads})"
      )

  @property
  def mask_id(self) -> int:
    return self.num_codes

  @property
  def num_tokens(self) -> int:
    return self.height * self.width


def _dense(features: int, axes: tuple[str, str], dtype: Any, name: str) -> nn.Dense:
  return pt.dense(
    features, axes, kernel_init=nn.initializers.normal(_INIT_STD), dtype=dtype, name=name
  )


def _table(rows: int, width: int, dtype: Any, name: str) -> nn.Embed:
  return nn.Embed(
    rows,
    width,
    dtype=dtype,
    param_dtype=jnp.float32,
    embedding_init=pt.annotated(nn.initializers.normal(_INIT_STD), ("vocab", "embed")),
    name=name,
  )


class ImageTokenEmbedding(nn.Module):
  """Tokens (B, H·W) -> token embedding + row embedding + column embedding (B, H·W, width)."""

  num_embeddings: int
  height: int
  width: int
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    emb = _table(self.num_embeddings, self.features, self.dtype, "emb")(tokens)
    rows = _table(self.height, self.features, self.dtype, "height_emb")(jnp.arange(self.height))
    cols = _table(self.width, self.features, self.dtype, "width_emb")(jnp.arange(self.width))
    positions = (rows[:, None, :] + cols[None, :, :]).reshape(self.height * self.width, -1)
    return emb + positions[None]


class GELU2Projection(nn.Module):
  """`proj` Linear, then GELU2 x · sigmoid(1.702 x) (diffusers' `ApproximateGELU`)."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _dense(self.features, ("embed", "mlp"), self.dtype, "proj")(x)
    return h * jax.nn.sigmoid(1.702 * h)


class GELU2FeedForward(nn.Module):
  """`net_0` (Linear + GELU2) -> `net_2` Linear back to the input width."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = GELU2Projection(self.features, dtype=self.dtype, name="net_0")(x)
    return _dense(x.shape[-1], ("mlp", "embed"), self.dtype, "net_2")(h)


class VQDiffusionBlock(nn.Module):
  """x + attn1(AdaLN1(x, t)); x + attn2(AdaLN2(x, t), text); x + MLP(LN(x))."""

  config: VQDiffusionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: jax.Array,
    context: jax.Array,
    context_mask: jax.Array | None,
    deterministic: bool,
  ) -> jax.Array:
    cfg = self.config
    head_dim = cfg.embed_dim // cfg.num_heads

    def attention(name: str) -> Attention:
      return Attention(
        cfg.num_heads, head_dim, qkv_bias=True, dropout=cfg.dropout, dtype=self.dtype, name=name
      )

    def ada(name: str) -> AdaLayerNorm:
      return AdaLayerNorm(cfg.num_timesteps, dtype=self.dtype, name=name)

    x = x + attention("attn1")(ada("norm1")(x, t), deterministic=deterministic)
    x = x + attention("attn2")(
      ada("norm2")(x, t), context, mask=context_mask, deterministic=deterministic
    )
    h = pt.layer_norm(dtype=self.dtype, name="norm3")(x)
    h = GELU2FeedForward(cfg.mlp_ratio * cfg.embed_dim, dtype=self.dtype, name="ff")(h)
    return x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class VQDiffusionTransformer(nn.Module):
  """The denoiser: (x_t (B, H·W), t (B,), text states (B, L, condition_dim)) -> x_0 logits (B, H·W, K)."""

  config: VQDiffusionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x_t: jax.Array,
    t: jax.Array,
    context: jax.Array,
    context_mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    cfg = self.config
    check_inputs(cfg, x_t, t)
    if (
      context.ndim != 3
      or context.shape[0] != x_t.shape[0]
      or context.shape[-1] != cfg.condition_dim
    ):
      raise VQDiffusionInputError(
        f"context: expected text states ({x_t.shape[0]}, length, {cfg.condition_dim}), "
        f"found {context.shape}"
      )
    x = ImageTokenEmbedding(
      cfg.num_codes + 1,
      cfg.height,
      cfg.width,
      cfg.embed_dim,
      dtype=self.dtype,
      name="latent_image_embedding",
    )(x_t)
    for i in range(cfg.num_layers):
      x = VQDiffusionBlock(cfg, dtype=self.dtype, name=f"transformer_blocks_{i}")(
        x, t, context.astype(self.dtype), context_mask, deterministic
      )
    x = pt.layer_norm(dtype=self.dtype, name="norm_out")(x)
    return _dense(cfg.num_codes, ("embed", "vocab"), self.dtype, "out")(x).astype(jnp.float32)


def check_inputs(cfg: VQDiffusionConfig, x_t: jax.Array, t: jax.Array) -> None:
  """Named errors for token grids and timesteps that the model cannot read."""
  if x_t.ndim != 2 or x_t.shape[1] != cfg.num_tokens:
    raise VQDiffusionInputError(
      f"x_t: expected tokens (batch, {cfg.num_tokens}) = (batch, height·width), found {x_t.shape}"
    )
  if not jnp.issubdtype(x_t.dtype, jnp.integer):
    raise VQDiffusionInputError(f"x_t: expected integer tokens, found dtype {x_t.dtype}")
  if jnp.shape(t) != (x_t.shape[0],):
    raise VQDiffusionInputError(
      f"t: expected one timestep per example, shape ({x_t.shape[0]},), found {jnp.shape(t)}"
    )


class VQDiffusion(nn.Module):
  """Text encoder (optional, from scratch) + learned null text (optional) + the denoiser.

  `__call__(x_t, t, text, text_mask, drop_text)`: `text` is token ids (B, L)
  when the config has a text vocabulary, else given states (B, L,
  condition_dim); `drop_text` (B,) bool swaps an example's text for the
  learned null text (conditioning dropout while training).
  """

  config: VQDiffusionConfig
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    if cfg.text_vocab_size is not None:
      self.text_encoder = TextTransformer(
        vocab_size=cfg.text_vocab_size,
        max_length=cfg.text_max_length,
        width=cfg.condition_dim,
        num_layers=cfg.text_layers,
        num_heads=cfg.text_heads,
        dtype=self.dtype,
      )
    if cfg.learned_null_text:
      self.null_text = self.param(
        "null_text",
        pt.annotated(nn.initializers.zeros_init(), (None, "kv")),
        (cfg.text_max_length, cfg.condition_dim),
      )
    self.transformer = VQDiffusionTransformer(cfg, dtype=self.dtype)

  def encode_text(self, text: jax.Array, text_mask: jax.Array | None = None) -> jax.Array:
    """Text states (B, L, condition_dim): encoded tokens, or the given states checked."""
    cfg = self.config
    if cfg.text_vocab_size is None:
      if text.ndim != 3 or text.shape[-1] != cfg.condition_dim:
        raise VQDiffusionInputError(
          f"text: this model takes text states (batch, length, {cfg.condition_dim}) "
          f"(text_vocab_size=None), found shape {text.shape}"
        )
      return text
    if text.ndim != 2 or not jnp.issubdtype(text.dtype, jnp.integer):
      raise VQDiffusionInputError(
        f"text: expected token ids (batch, length <= {cfg.text_max_length}), found shape "
        f"{text.shape} dtype {text.dtype}"
      )
    return self.text_encoder(text, text_mask)

  def null_condition(self, batch: int, length: int) -> tuple[jax.Array, jax.Array]:
    """(states, mask) of the learned null text, cut to `length` tokens, every token attended."""
    if not self.config.learned_null_text:
      raise VQDiffusionInputError(
        "learned_null_text: classifier-free guidance needs a null text; this config has none"
      )
    states = jnp.broadcast_to(self.null_text[:length], (batch, length, self.config.condition_dim))
    return states.astype(self.dtype), jnp.ones((batch, length), bool)

  def denoise(
    self,
    x_t: jax.Array,
    t: jax.Array,
    states: jax.Array,
    mask: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    return self.transformer(x_t, t, states, mask, deterministic)

  def __call__(
    self,
    x_t: jax.Array,
    t: jax.Array,
    text: jax.Array,
    text_mask: jax.Array | None = None,
    drop_text: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    states = self.encode_text(text, text_mask)
    mask = jnp.ones(states.shape[:2], bool) if text_mask is None else text_mask.astype(bool)
    if drop_text is not None:
      null_states, null_mask = self.null_condition(*states.shape[:2])
      drop = drop_text.astype(bool)
      states = jnp.where(drop[:, None, None], null_states, states)
      mask = jnp.where(drop[:, None], null_mask, mask)
    return self.denoise(x_t, t, states, mask, deterministic)


def x0_logits_fn(
  model: VQDiffusion,
  params: Any,
  text: jax.Array,
  text_mask: jax.Array | None = None,
  guidance_scale: float | jax.Array | None = None,
):
  """`fn(x_t, t) -> logits` for `jaxgen.diffusion.discrete.sample`: text encoded once.

  guidance_scale None: the conditional model alone. A scale extrapolates from
  the learned null text (classifier-free guidance, both branches in one
  batched call); a Python 1.0 skips the null branch, a traced scale (one
  program for every scale) always runs both.
  """
  variables = {"params": params}
  states = model.apply(variables, text, text_mask, method=VQDiffusion.encode_text)
  mask = jnp.ones(states.shape[:2], bool) if text_mask is None else text_mask.astype(bool)

  def denoise(x_t, t, cond):
    return model.apply(variables, x_t, t, *cond, method=VQDiffusion.denoise)

  if guidance_scale is None:
    return lambda x_t, t: denoise(x_t, t, (states, mask))
  null = model.apply(variables, *states.shape[:2], method=VQDiffusion.null_condition)
  return classifier_free_guidance(denoise, (states, mask), null, guidance_scale)
