"""Autoregressive text-to-image over image tokens (DALL·E, Ramesh et al. 2021; CogView).

One decoder-only transformer reads the stream [text tokens ; image tokens] and
models it left to right with causal attention over the whole stream:

  slot i < T        text token i + its learned text position; a pad is replaced by
                    the pad token of position i (DALL·E's per-position padding:
                    the text table holds text_vocab + T rows), so a short caption
                    needs no attention mask and the all-pad caption is a learned
                    "empty caption";
  slot T + j        image input j + the learned row and column embeddings of grid
                    cell j (row-major), where input 0 is the image BOS
                    (= num_image_codes, the image table's extra row) and input
                    j > 0 is the code of cell j - 1.

Outputs: a text head on slots 0 .. T - 2 predicts text tokens 1 .. T - 1; an image
head on slots T .. T + N - 1 predicts the N image codes. The loss is DALL·E's
weighted sum, each term a mean over its own tokens: text_loss_weight (1/8) ×
text cross-entropy over real (non-pad) text targets + image_loss_weight (7/8) ×
image cross-entropy. Captions are dropped to the empty caption with probability
`caption_dropout` in training, which classifier-free guidance samples against.

The blocks are `jaxgen.models.gpt.GPTBlock` (pre-LayerNorm, GELU MLP, N(0, 0.02)
init). DALL·E's row / column / convolutional sparse attention masks only restrict
which keys a query sees, so they change no parameter count; this model attends to
every earlier slot.

Sampling (`sample_image_tokens`) writes the text prefix into a KV cache once,
then draws one image token per step in one `lax.scan` over the N cells; with
guidance the conditional and empty-caption streams run as one doubled batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.models.gpt import GPTBlock
from jaxgen.models.token_sampling import SamplingOptionError, sample_tokens, sampling_options
from jaxgen.nn import partitioning as pt

# GPT-style N(0, 0.02) for every kernel, embedding table and position table.
_INIT = nn.initializers.normal(0.02)


class DalleConfigError(ValueError):
  """A `DalleConfig` field out of its range."""


class DalleInputError(ValueError):
  """Text or image tokens of the wrong shape, dtype or id range."""


@dataclass(frozen=True)
class DalleConfig:
  """Hyper-parameters; defaults are DALL·E's 12-billion-parameter transformer
  (see `jaxgen.configs.arch.dalle_12b` for which numbers are recalled).

  Attributes:
    text_vocab: text token ids (BPE vocabulary); the table adds one pad token per position.
    text_length: text slots T (captions are padded or cut to it by the tokenizer).
    text_pad_id: the tokenizer's pad id, replaced by the per-position pad tokens.
    num_image_codes: image codebook size; the image table adds the BOS row.
    image_rows, image_cols: the token grid (row-major stream of rows · cols cells).
    embed_dim: transformer width.
    num_layers: transformer blocks.
    num_heads: attention heads.
    ff_rate: MLP width multiplier.
    dropout: embedding, attention and residual dropout.
    text_loss_weight, image_loss_weight: the weights of the two cross-entropy means.
    caption_dropout: probability of training a caption as the empty caption (for
      classifier-free guidance); 0 trains no unconditional model.
  """

  text_vocab: int = 16384
  text_length: int = 256
  text_pad_id: int = 0
  num_image_codes: int = 8192
  image_rows: int = 32
  image_cols: int = 32
  embed_dim: int = 3968
  num_layers: int = 64
  num_heads: int = 62
  ff_rate: int = 4
  dropout: float = 0.0
  text_loss_weight: float = 1 / 8
  image_loss_weight: float = 7 / 8
  caption_dropout: float = 0.0

  def __post_init__(self):
    for name in ("text_vocab", "text_length", "num_image_codes", "image_rows", "image_cols"):
      if getattr(self, name) < 1:
        raise DalleConfigError(f"{name}: expected an int >= 1, found {getattr(self, name)}")
    if self.text_length < 2:
      raise DalleConfigError(
        f"text_length: expected >= 2 (one text target), found {self.text_length}"
      )
    if not 0 <= self.text_pad_id < self.text_vocab:
      raise DalleConfigError(
        f"text_pad_id: expected an id in [0, text_vocab={self.text_vocab}), found {self.text_pad_id}"
      )
    if self.embed_dim % self.num_heads:
      raise DalleConfigError(
        f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
      )
    for name in ("dropout", "caption_dropout"):
      if not 0 <= getattr(self, name) < 1:
        raise DalleConfigError(f"{name}: expected a rate in [0, 1), found {getattr(self, name)}")
    if self.text_loss_weight < 0 or self.image_loss_weight < 0:
      raise DalleConfigError(
        "text_loss_weight, image_loss_weight: expected weights >= 0, found "
        f"{self.text_loss_weight} and {self.image_loss_weight}"
      )

  @property
  def image_length(self) -> int:
    return self.image_rows * self.image_cols

  @property
  def sequence_length(self) -> int:
    return self.text_length + self.image_length

  @property
  def image_bos_id(self) -> int:
    return self.num_image_codes

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


def _check_ids(name: str, tokens: Any, size: int) -> None:
  """Integer ids in [0, size); the range only on concrete arrays (a traced one cannot be)."""
  dtype = jnp.asarray(tokens).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise DalleInputError(f"{name}: expected integer token ids, found dtype {dtype}")
  if isinstance(tokens, jax.core.Tracer) or not np.size(tokens):
    return
  # On the host: under a trace, reductions of even a concrete jax array are staged.
  tokens = np.asarray(tokens)
  low, high = int(tokens.min()), int(tokens.max())
  if low < 0 or high >= size:
    raise DalleInputError(f"{name}: ids must lie in [0, {size}), found [{low}, {high}]")


def check_tokens(config: DalleConfig, text: Any, image: Any = None) -> None:
  """Named errors for (B, text_length) text ids and (B, image_rows, image_cols) image codes."""
  c = config
  if np.ndim(text) != 2 or np.shape(text)[1] != c.text_length:
    raise DalleInputError(
      f"text: expected (batch, text_length={c.text_length}) ids, found shape {np.shape(text)}"
    )
  _check_ids("text", text, c.text_vocab)
  if image is None:
    return
  expected = (np.shape(text)[0], c.image_rows, c.image_cols)
  if np.shape(image) != expected:
    raise DalleInputError(
      f"image: expected codes (batch, image_rows, image_cols) = {expected}, found {np.shape(image)}"
    )
  _check_ids("image", image, c.num_image_codes)


KVCache = tuple[tuple[jax.Array, jax.Array], ...]


def init_cache(config: DalleConfig, batch: int, dtype: Any = jnp.float32) -> KVCache:
  """Zero keys/values (B, text_length + image_length, H, D) for each block."""
  shape = (batch, config.sequence_length, config.num_heads, config.head_dim)
  return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))


class DalleTransformer(nn.Module):
  """The text + image token transformer (see module docstring)."""

  config: DalleConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    embed = lambda rows, name: nn.Embed(
      rows,
      c.embed_dim,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(_INIT, ("vocab", "embed")),
      name=name,
    )
    position = lambda rows, name: self.param(
      name, pt.annotated(_INIT, (None, "embed")), (rows, c.embed_dim), jnp.float32
    )
    head = lambda size, name: pt.dense(
      size, ("embed", "vocab"), use_bias=False, kernel_init=_INIT, dtype=self.dtype, name=name
    )
    self.text_emb = embed(c.text_vocab + c.text_length, "text_emb")
    self.image_emb = embed(c.num_image_codes + 1, "image_emb")
    self.text_pos = position(c.text_length, "text_pos")
    self.row_pos = position(c.image_rows, "row_pos")
    self.col_pos = position(c.image_cols, "col_pos")
    self.embed_dropout = nn.Dropout(c.dropout)
    self.blocks = [
      GPTBlock(c.num_heads, c.ff_rate, c.dropout, self.dtype, name=f"blocks_{i}")
      for i in range(c.num_layers)
    ]
    self.ln_f = pt.layer_norm(dtype=self.dtype, name="ln_f")
    self.text_head = head(c.text_vocab, "text_head")
    self.image_head = head(c.num_image_codes, "image_head")

  def _embed_text(self, text: jax.Array) -> jax.Array:
    """(B, T, C): pads become the pad token of their position, plus text positions."""
    c = self.config
    slots = jnp.arange(c.text_length)
    ids = jnp.where(text == c.text_pad_id, c.text_vocab + slots, text)
    return self.text_emb(ids) + self.text_pos.astype(self.dtype)

  def _embed_image(self, inputs: jax.Array, start: jax.Array | int) -> jax.Array:
    """(B, n, C): image inputs of cells start .. start + n - 1 plus their row and column."""
    cells = start + jnp.arange(inputs.shape[1])
    rows, cols = cells // self.config.image_cols, cells % self.config.image_cols
    positions = jnp.take(self.row_pos, rows, axis=0) + jnp.take(self.col_pos, cols, axis=0)
    return self.image_emb(inputs) + positions.astype(self.dtype)

  def __call__(
    self, text: jax.Array, image: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced logits: text (B, T) ids and image (B, rows, cols) codes ->
    text logits (B, T - 1, text_vocab), row i predicting text token i + 1, and image
    logits (B, N, num_image_codes), row j predicting cell j from the cells before it."""
    c = self.config
    check_tokens(c, text, image)
    codes = image.reshape(image.shape[0], c.image_length)
    bos = jnp.full((codes.shape[0], 1), c.image_bos_id, codes.dtype)
    inputs = jnp.concatenate([bos, codes[:, :-1]], axis=1)
    x = jnp.concatenate([self._embed_text(text), self._embed_image(inputs, 0)], axis=1)
    x = self.embed_dropout(x, deterministic=deterministic)
    for block in self.blocks:
      x, _ = block(x, deterministic=deterministic)
    h = self.ln_f(x)
    return self.text_head(h[:, : c.text_length - 1]), self.image_head(h[:, c.text_length :])

  def prefill(self, text: jax.Array, cache: KVCache) -> KVCache:
    """Writes the keys/values of the T text slots into `cache` (one pass, causal)."""
    c = self.config
    x = self._embed_text(text)
    query, key = jnp.arange(c.text_length), jnp.arange(c.sequence_length)
    mask = (key[None, :] <= query[:, None])[None, None]
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x, layer_cache = block(x, layer_cache, 0, mask=mask)
      new_cache.append(layer_cache)
    return tuple(new_cache)

  def decode_step(
    self, token: jax.Array, cell: jax.Array, cache: KVCache
  ) -> tuple[jax.Array, KVCache]:
    """Image logits (B, num_image_codes) of grid cell `cell` given its input `token` (B,)
    (the BOS at cell 0, else the code of cell - 1) and the cache of every earlier slot.
    Returns (logits, cache with this slot written)."""
    x = self._embed_image(token[:, None], cell)
    slot = self.config.text_length + cell
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x, layer_cache = block(x, layer_cache, slot)
      new_cache.append(layer_cache)
    return self.image_head(self.ln_f(x))[:, 0], tuple(new_cache)


def empty_captions(config: DalleConfig, batch: int) -> jax.Array:
  """(B, T) all-pad captions: the learned empty caption guidance samples against."""
  return jnp.full((batch, config.text_length), config.text_pad_id, jnp.int32)


def drop_captions(config: DalleConfig, text: jax.Array, rng: jax.Array) -> jax.Array:
  """Replaces each caption by the empty caption with probability `caption_dropout`."""
  dropped = jax.random.uniform(rng, (text.shape[0], 1)) < config.caption_dropout
  return jnp.where(dropped, config.text_pad_id, text)


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def token_losses(
  config: DalleConfig,
  text: jax.Array,
  image: jax.Array,
  text_logits: jax.Array,
  image_logits: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DALL·E's weighted loss: w_text · mean text CE over real (non-pad) text targets +
  w_image · mean image CE over every cell; each mean is over its own tokens in the batch.

  Returns (loss, {"text_loss", "image_loss"}) with the unweighted means."""
  targets = text[:, 1:]
  real = targets != config.text_pad_id
  text_ce = _cross_entropy(text_logits, targets)
  text_loss = jnp.sum(jnp.where(real, text_ce, 0.0)) / jnp.maximum(jnp.sum(real), 1)
  codes = image.reshape(image.shape[0], config.image_length)
  image_loss = jnp.mean(_cross_entropy(image_logits, codes))
  loss = config.text_loss_weight * text_loss + config.image_loss_weight * image_loss
  return loss, {"text_loss": text_loss, "image_loss": image_loss}


def dalle_loss(
  model: DalleTransformer, variables: Any, text: jax.Array, image: jax.Array, rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Training loss on (B, T) captions and (B, rows, cols) codes: captions dropped for
  guidance, dropout on, then `token_losses`."""
  drop_rng, dropout_rng = jax.random.split(rng)
  text = drop_captions(model.config, text, drop_rng)
  text_logits, image_logits = model.apply(
    variables, text, image, deterministic=False, rngs={"dropout": dropout_rng}
  )
  return token_losses(model.config, text, image, text_logits, image_logits)


def guide_logits(conditional: jax.Array, unconditional: jax.Array, scale: jax.Array) -> jax.Array:
  """Classifier-free guidance u + s·(c - u), written c + (s - 1)·(c - u) so that
  s = 1 gives the conditional logits exactly."""
  return conditional + (scale - 1) * (conditional - unconditional)


def sample_image_tokens(
  model: DalleTransformer,
  variables: Any,
  text_tokens: jax.Array,
  rng: jax.Array,
  *,
  temperature: float = 1.0,
  top_k: int | None = None,
  top_p: float | None = None,
  guidance_scale: float | None = None,
) -> jax.Array:
  """Image codes for captions: the text prefix cached once, then one `lax.scan` over cells.

  Args:
    model, variables: the transformer and its variables.
    text_tokens: (B, text_length) caption ids (pad = config.text_pad_id).
    rng: sampling key (unused at temperature 0).
    temperature: 0 takes the arg-max (greedy); otherwise samples the tempered logits.
    top_k, top_p: keep the k most likely codes / the nucleus of mass p (None: all).
    guidance_scale: None samples the conditional model alone; a scale s runs the
      empty-caption stream beside it in one batch and samples u + s·(c - u).
  Returns:
    (B, image_rows, image_cols) int32 codes, for the image tokenizer to decode.
  """
  c = model.config
  check_tokens(c, text_tokens)
  if guidance_scale is not None and guidance_scale < 0:
    raise SamplingOptionError(
      "guidance_scale", f"expected None or a number >= 0, found {guidance_scale}"
    )
  options = sampling_options(temperature, top_k, top_p) + (
    jnp.float32(1.0 if guidance_scale is None else guidance_scale),
  )
  return sample_scan(
    model, variables, jnp.asarray(text_tokens, jnp.int32), rng, options, guidance_scale is not None
  )


@functools.partial(jax.jit, static_argnums=(0, 5))
def sample_scan(model, variables, text, rng, options, guided):
  """`sample_image_tokens` without its host-side checks, for callers inside a trace.

  `options` = (temperature, top_k, top_p, guidance scale) as arrays
  (`token_sampling.sampling_options` + the scale): data, so one compiled
  program serves every value.
  """
  temperature, top_k, top_p, scale = options
  c = model.config
  batch = text.shape[0]
  if guided:
    text = jnp.concatenate([text, empty_captions(c, batch)], axis=0)
  streams = text.shape[0]
  cache = model.apply(
    variables, text, init_cache(c, streams, model.dtype), method=DalleTransformer.prefill
  )

  def step(carry, cell):
    previous, cache = carry
    logits, cache = model.apply(
      variables, previous, cell, cache, method=DalleTransformer.decode_step
    )
    logits = logits.astype(jnp.float32)
    if guided:
      logits = guide_logits(logits[:batch], logits[batch:], scale)
    token = sample_tokens(logits, jax.random.fold_in(rng, cell), temperature, top_k, top_p)
    # Both streams continue from the guided choice.
    fed = jnp.concatenate([token, token]) if guided else token
    return (fed, cache), token

  first = jnp.full((streams,), c.image_bos_id, jnp.int32)
  _, codes = jax.lax.scan(step, (first, cache), jnp.arange(c.image_length))
  return codes.T.reshape(batch, c.image_rows, c.image_cols)
