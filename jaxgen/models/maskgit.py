"""MaskGIT's bidirectional token transformer (Chang et al. 2022), class- or caption-conditioned.

The reference (google-research/maskgit `nets/maskgit_transformer.py`) is a
BERT without segments: word + learned position embeddings, an embeddings
LayerNorm, post-LN layers (self-attention, GELU MLP; LayerNorm eps 1e-12),
and an MLM head Dense + GELU + LayerNorm whose logits are tied to the word
embedding plus a bias. Its class-conditional vocabulary is
[codes | classes | mask]: the class token `codebook_size + label` is
prepended to the N image tokens and the mask id is the last row (the
reference's -1 wraps to it).

The caption-conditioned variant (issue 20, captioned shapes) generalises
that one class token to a prefix of L caption tokens in the same stream:
caption words get their own embedding table (their vocabulary is the
caption tokenizer's, not the image codes'), share the position table, and
every image token attends to every word in every layer; padding words are
masked out of attention. A learned null caption (L × width) replaces the
words for classifier-free guidance. A separate text encoder
(`models.transformer.TextTransformer`) with cross-attention would add a
second stack that a bidirectional model seeing the prefix in every layer
does not need; one stream also matches the autoregressive prior's
[text ; image] layout, so the two families differ only in masking and
decoding at equal size.

Layers are `nn.sequence_layers.TransformerEncoderLayer` (post-LN, tanh GELU,
eps 1e-12). With the reference's weights mapped in, the logits equal the
reference module's (checked to 1e-6 on random weights). It differs only in
regularisers and init: no dropout on attention weights, one more after the
MLP activation, lecun-normal (not truncated N(0, 0.02)) kernels inside the
layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.diffusion import masked_decoding
from jaxgen.diffusion.guidance import classifier_free_guidance
from jaxgen.nn import partitioning as pt
from jaxgen.nn.sequence_layers import ACTIVATIONS, TransformerEncoderLayer


class MaskGITConfigError(ValueError):
  """An inconsistent MaskGIT config (sizes, conditioning)."""


class MaskGITInputError(ValueError):
  """Inputs that do not match the config (token shapes, missing or unexpected conditions)."""


@dataclasses.dataclass(frozen=True)
class MaskGITConfig:
  """Sizes of a MaskGIT transformer; the reference ImageNet 256 setting is `configs/arch/maskgit_imagenet256.py`.

  num_classes > 0 selects the class-conditional layout, caption_length > 0
  the caption prefix, neither an unconditional model.
  """

  codebook_size: int = 1024
  num_image_tokens: int = 256
  num_classes: int = 0
  caption_vocab_size: int = 0
  caption_length: int = 0
  width: int = 768
  num_layers: int = 24
  num_heads: int = 16
  mlp_dim: int = 3072
  dropout: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02

  def __post_init__(self) -> None:
    for name in (
      "codebook_size",
      "num_image_tokens",
      "width",
      "num_layers",
      "num_heads",
      "mlp_dim",
    ):
      if getattr(self, name) < 1:
        raise MaskGITConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")
    if self.width % self.num_heads:
      raise MaskGITConfigError(
        f"width: expected a multiple of num_heads ({self.num_heads}), found {self.width}"
      )
    if self.num_classes and self.caption_length:
      raise MaskGITConfigError(
        f"num_classes, caption_length: expected at most one conditioning, found "
        f"{self.num_classes} classes and captions of {self.caption_length} tokens"
      )
    if (self.caption_length > 0) != (self.caption_vocab_size > 0):
      raise MaskGITConfigError(
        f"caption_vocab_size, caption_length: expected both > 0 or both 0, found "
        f"{self.caption_vocab_size} and {self.caption_length}"
      )

  @property
  def conditioning(self) -> str:
    return "class" if self.num_classes else "caption" if self.caption_length else "none"

  @property
  def vocab_size(self) -> int:
    """Rows of the tied word table: codes, class tokens, then [MASK]."""
    return self.codebook_size + self.num_classes + 1

  @property
  def mask_id(self) -> int:
    return self.vocab_size - 1

  @property
  def prefix_length(self) -> int:
    return {"class": 1, "caption": self.caption_length, "none": 0}[self.conditioning]

  @property
  def sequence_length(self) -> int:
    return self.prefix_length + self.num_image_tokens


def _truncated_normal(stddev: float) -> nn.initializers.Initializer:
  """The reference's init: N(0, stddev) truncated at ±2 standard deviations."""
  return nn.initializers.truncated_normal(stddev, lower=-2.0, upper=2.0)


class MaskGITTransformer(nn.Module):
  """tokens (B, N) with `mask_id` where hidden -> logits (B, N, vocab_size) at the image positions."""

  config: MaskGITConfig
  dtype: Any = jnp.float32

  def _check_conditions(self, batch: int, labels, caption, caption_mask, drop_caption) -> None:
    c = self.config
    given = {"labels": labels, "caption": caption}
    wanted = {"class": "labels", "caption": "caption", "none": None}[c.conditioning]
    for name, value in given.items():
      if (value is None) == (name == wanted):
        expectation = "required" if name == wanted else "not accepted"
        raise MaskGITInputError(
          f"{name}: {expectation} by a {c.conditioning!r}-conditioned MaskGIT, found "
          f"{None if value is None else getattr(value, 'shape', value)}"
        )
    expected = {
      "labels": (labels, (batch,)),
      "caption": (caption, (batch, c.caption_length)),
      "caption_mask": (caption_mask, (batch, c.caption_length)),
      "drop_caption": (drop_caption, (batch,)),
    }
    for name, (value, shape) in expected.items():
      if value is not None and value.shape != shape:
        raise MaskGITInputError(f"{name}: expected shape {shape}, found {value.shape}")
    if c.conditioning != "caption" and (caption_mask is not None or drop_caption is not None):
      raise MaskGITInputError(
        "caption_mask, drop_caption: only a 'caption'-conditioned MaskGIT takes them"
      )

  def _caption_prefix(self, caption, caption_mask, drop_caption):
    """Word embeddings (B, L, width) of the captions (null caption where dropped) and their mask."""
    c = self.config
    init = pt.annotated(_truncated_normal(c.initializer_range), ("vocab", "embed"))
    table = nn.Embed(
      c.caption_vocab_size,
      c.width,
      dtype=self.dtype,
      embedding_init=init,
      name="caption_embeddings",
    )
    words = table(caption)
    mask = jnp.ones(caption.shape, bool) if caption_mask is None else caption_mask.astype(bool)
    null = self.param(
      "null_caption",
      pt.annotated(_truncated_normal(c.initializer_range), (None, "embed")),
      (c.caption_length, c.width),
    )
    if drop_caption is not None:
      drop = drop_caption.astype(bool)
      words = jnp.where(drop[:, None, None], null[None].astype(words.dtype), words)
      mask = mask | drop[:, None]  # the null caption is attended in full
    return words, mask

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    labels: jax.Array | None = None,
    caption: jax.Array | None = None,
    caption_mask: jax.Array | None = None,
    drop_caption: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """Logits over the whole vocabulary at the N image positions.

    tokens: int (B, N) or (B, h, w) image codes with `mask_id` where hidden.
    labels: int (B,) class labels (class-conditional). caption: int (B, L)
    caption token ids; caption_mask: (B, L) True on real words;
    drop_caption: bool (B,), True where the learned null caption replaces
    the words (training dropout and the unconditional half of guidance).
    """
    c = self.config
    batch = tokens.shape[0]
    tokens = tokens.reshape(batch, -1)
    if tokens.shape[1] != c.num_image_tokens:
      raise MaskGITInputError(
        f"tokens: expected {c.num_image_tokens} image tokens per example, found shape {tokens.shape}"
      )
    self._check_conditions(batch, labels, caption, caption_mask, drop_caption)
    init = _truncated_normal(c.initializer_range)
    word_table = nn.Embed(
      c.vocab_size,
      c.width,
      dtype=self.dtype,
      embedding_init=pt.annotated(init, ("vocab", "embed")),
      name="word_embeddings",
    )
    stream = tokens.astype(jnp.int32)
    if labels is not None:
      stream = jnp.concatenate([(c.codebook_size + labels.astype(jnp.int32))[:, None], stream], 1)
    x = word_table(stream)
    attention_mask = None
    if caption is not None:
      words, caption_attended = self._caption_prefix(caption, caption_mask, drop_caption)
      x = jnp.concatenate([words.astype(x.dtype), x], axis=1)
      if caption_mask is not None:
        image_attended = jnp.ones((batch, c.num_image_tokens), bool)
        attention_mask = jnp.concatenate([caption_attended, image_attended], axis=1)
    positions = self.param(
      "position_embeddings", pt.annotated(init, (None, "embed")), (c.sequence_length, c.width)
    )
    x = x + positions[None].astype(x.dtype)
    x = pt.layer_norm(c.layer_norm_eps, dtype=self.dtype, name="embeddings_ln")(x)
    x = nn.Dropout(c.dropout)(x, deterministic=deterministic)
    for i in range(c.num_layers):
      x = TransformerEncoderLayer(
        c.num_heads,
        c.mlp_dim,
        c.dropout,
        "gelu_tanh",
        norm_first=False,
        norm_eps=c.layer_norm_eps,
        dtype=self.dtype,
        name=f"layers_{i}",
      )(x, mask=attention_mask, deterministic=deterministic)
    h = x[:, c.prefix_length :]
    h = pt.dense(c.width, ("embed", "mlp"), kernel_init=init, dtype=self.dtype, name="mlm_dense")(h)
    h = pt.layer_norm(c.layer_norm_eps, dtype=self.dtype, name="mlm_ln")(
      ACTIVATIONS["gelu_tanh"](h)
    )
    bias = self.param(
      "mlm_bias", pt.annotated(nn.initializers.zeros_init(), ("vocab",)), (c.vocab_size,)
    )
    return (word_table.attend(h) + bias.astype(h.dtype)).astype(jnp.float32)


def code_logits_fn(
  model: MaskGITTransformer,
  variables: Any,
  *,
  labels: jax.Array | None = None,
  caption: jax.Array | None = None,
  caption_mask: jax.Array | None = None,
  guidance_scale: float | jax.Array | None = None,
) -> masked_decoding.LogitsFn:
  """`tokens -> logits over the codes` for `parallel_decode` (class / mask rows cut off).

  guidance_scale None: the conditional model. A scale (captions only)
  extrapolates from the null caption, uncond + s·(cond − uncond) on the
  logits, both halves in one batched forward so the decoding scan holds a
  single model call; a Python 1.0 skips the null half, a traced scale (one
  program for every scale) always runs both.
  """
  c = model.config
  if guidance_scale is not None and c.conditioning != "caption":
    raise MaskGITInputError(
      f"guidance_scale: only a 'caption'-conditioned MaskGIT is guided, found {guidance_scale} "
      f"for a {c.conditioning!r}-conditioned one"
    )

  def model_fn(tokens: jax.Array, _, condition) -> jax.Array:
    logits = model.apply(variables, tokens, labels=labels, **condition)
    return logits[..., : c.codebook_size]

  condition = dict(caption=caption, caption_mask=caption_mask)
  if guidance_scale is None:
    return lambda tokens: model_fn(tokens, None, condition)
  batch = caption.shape[0]
  cond = dict(condition, drop_caption=jnp.zeros(batch, bool))
  null = dict(condition, drop_caption=jnp.ones(batch, bool))
  guided = classifier_free_guidance(model_fn, cond, null, guidance_scale)
  return lambda tokens: guided(tokens, jnp.zeros((), jnp.int32))


def sample_codes(
  model: MaskGITTransformer,
  variables: Any,
  rng: jax.Array,
  batch: int,
  num_steps: int,
  *,
  labels: jax.Array | None = None,
  caption: jax.Array | None = None,
  caption_mask: jax.Array | None = None,
  guidance_scale: float | jax.Array | None = None,
  choice_temperature: float = 4.5,
  temperature: float = 1.0,
  schedule: str = "cosine",
) -> jax.Array:
  """Image codes (B, N) by `num_steps` of parallel decoding from an all-masked grid (one scan)."""
  logits_fn = code_logits_fn(
    model,
    variables,
    labels=labels,
    caption=caption,
    caption_mask=caption_mask,
    guidance_scale=guidance_scale,
  )
  c = model.config
  return masked_decoding.parallel_decode(
    logits_fn,
    rng,
    batch,
    c.num_image_tokens,
    num_steps,
    c.mask_id,
    choice_temperature,
    schedule,
    temperature,
  )


def masked_token_loss(
  model: MaskGITTransformer,
  variables: Any,
  codes: jax.Array,
  rng: jax.Array,
  *,
  labels: jax.Array | None = None,
  caption: jax.Array | None = None,
  caption_mask: jax.Array | None = None,
  caption_dropout: float = 0.0,
  label_smoothing: float = 0.1,
  schedule: str = "cosine",
  deterministic: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MaskGIT's training loss on image codes (B, N): mask by the schedule, predict, CE on the masked.

  The cross-entropy runs over the whole vocabulary, as the reference's
  logits do. caption_dropout: probability that an example's caption is
  replaced by the learned null caption (classifier-free guidance
  training). Returns (loss,
  {"masked_accuracy", "masked_fraction"}).
  """
  c = model.config
  mask_rng, drop_rng, dropout_rng = jax.random.split(rng, 3)
  codes = codes.reshape(codes.shape[0], -1)
  inputs, hidden = masked_decoding.mask_tokens(mask_rng, codes, schedule, mask_id=c.mask_id)
  if not 0.0 <= caption_dropout <= 1.0:
    raise MaskGITInputError(f"caption_dropout: expected in [0, 1], found {caption_dropout}")
  if caption_dropout and c.conditioning != "caption":
    raise MaskGITInputError(
      f"caption_dropout: only a 'caption'-conditioned MaskGIT drops captions, found "
      f"{caption_dropout} for a {c.conditioning!r}-conditioned one"
    )
  drop = None
  if caption_dropout:
    drop = jax.random.bernoulli(drop_rng, caption_dropout, (codes.shape[0],))
  logits = model.apply(
    variables,
    inputs,
    labels=labels,
    caption=caption,
    caption_mask=caption_mask,
    drop_caption=drop,
    deterministic=deterministic,
    rngs={"dropout": dropout_rng},
  )
  loss = masked_decoding.masked_cross_entropy(logits, codes, hidden, label_smoothing)
  correct = (jnp.argmax(logits, -1) == codes) & hidden
  metrics = {
    "masked_accuracy": correct.sum() / jnp.maximum(hidden.sum(), 1),
    "masked_fraction": hidden.mean(),
  }
  return loss, metrics
