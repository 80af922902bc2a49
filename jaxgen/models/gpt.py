"""Text-conditioned GPT prior over motion codes (T2M-GPT `Text2Motion_Transformer`).

Sequence: [cond_emb(text vector), tok_emb(code_0), ..., tok_emb(code_{n-1})] +
fixed sinusoidal positions; `num_layers` pre-LayerNorm causal blocks form
the "base" and another `num_layers` the "head" (the reference builds both
halves with the same `num_layers`, so `--num-layers 9` is 18 blocks), then
LayerNorm and a bias-free linear to `num_codes + 1` logits (codes + End).
Position i predicts code i; the token table also holds End (= num_codes)
and Pad (= num_codes + 1).

Decoding keeps each block's keys and values in an explicit cache pytree
(`init_cache`) and runs one position per step (`MotionGPT.decode_step`);
`sample_codes` is one `lax.scan` over positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt
from jaxgen.nn.embeddings import sinusoidal_positions

# The reference initialises every Linear and Embedding with N(0, 0.02).
_INIT_STD = 0.02


@dataclass(frozen=True)
class GPTConfig:
  """Hyper-parameters (T2M-GPT option names in comments).

  Attributes:
    num_codes: motion codebook size (`nb_code`); vocabulary = codes + End + Pad.
    embed_dim: transformer width (`embed_dim_gpt`).
    cond_dim: width of the text vector (`clip_dim`).
    block_size: positions = 1 condition + up to block_size - 1 codes (`block_size`).
    num_layers: blocks in each of the base and the head (`num_layers`).
    num_heads: attention heads (`n_head_gpt`).
    ff_rate: feed-forward width multiplier (`ff_rate`).
    dropout: dropout rate (`drop_out_rate`).
  """

  num_codes: int = 512
  embed_dim: int = 1024
  cond_dim: int = 512
  block_size: int = 51
  num_layers: int = 9
  num_heads: int = 16
  ff_rate: int = 4
  dropout: float = 0.1

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(
        f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
      )
    if self.embed_dim % 2:
      raise ValueError(f"embed_dim must be even for sinusoidal positions, got {self.embed_dim}")

  @property
  def end_id(self) -> int:
    return self.num_codes

  @property
  def pad_id(self) -> int:
    return self.num_codes + 1

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads


def _dense(features: int, axes: tuple[str, str], **kwargs) -> nn.Dense:
  """A `pt.dense` with GPT's N(0, 0.02) kernel initialisation."""
  return pt.dense(features, axes, kernel_init=nn.initializers.normal(_INIT_STD), **kwargs)


def causal_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  mask: jax.Array,
  dropout: nn.Dropout,
  deterministic: bool,
) -> jax.Array:
  """softmax(q k^T/√d) v in float32 with dropout on the weights (B, L, H, D layout)."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
  logits = jnp.where(mask, logits * q.shape[-1] ** -0.5, jnp.finfo(jnp.float32).min)
  weights = dropout(jax.nn.softmax(logits, axis=-1), deterministic=deterministic)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


class CausalSelfAttention(nn.Module):
  """Causal multi-head self-attention, full-sequence or one position against a KV cache."""

  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None = None,
    index: jax.Array | None = None,
    deterministic: bool = True,
    mask: jax.Array | None = None,
  ):
    """x: (B, L, C). With `cache` = (keys, values) (B, S, H, D), x is the one position
    `index` (L = 1): its key/value are written there and it attends to positions <= index.
    `mask` (broadcastable to (B, H, L, keys)), if given, replaces the causal mask; with a
    cache, x may then be L positions written from `index` on.
    Returns (output, updated cache or None)."""
    batch, length, width = x.shape
    head_dim = width // self.num_heads

    def project(name):
      y = _dense(width, ("embed", "heads"), dtype=self.dtype, name=name)(x)
      return y.reshape(batch, length, self.num_heads, head_dim)

    q, k, v = project("to_q"), project("to_k"), project("to_v")
    if cache is None:
      causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    else:
      keys, values = cache
      keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), index, axis=1)
      values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), index, axis=1)
      cache = (keys, values)
      k, v = keys, values
      causal = (jnp.arange(keys.shape[1]) <= index)[None, None, None, :]
    mask = causal if mask is None else mask
    out = causal_attention(q, k, v, mask, nn.Dropout(self.dropout), deterministic)
    out = _dense(width, ("heads", "embed"), dtype=self.dtype, name="to_out")(
      out.reshape(batch, length, width)
    )
    return nn.Dropout(self.dropout)(out, deterministic=deterministic), cache


class GPTBlock(nn.Module):
  """x + attn(ln1(x)); x + dropout(fc2(gelu(fc1(ln2(x)))))."""

  num_heads: int
  ff_rate: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cache=None, index=None, deterministic: bool = True, mask=None):
    width = x.shape[-1]
    h, cache = CausalSelfAttention(self.num_heads, self.dropout, self.dtype, name="attn")(
      pt.layer_norm(dtype=self.dtype, name="ln1")(x), cache, index, deterministic, mask
    )
    x = x + h
    h = pt.layer_norm(dtype=self.dtype, name="ln2")(x)
    h = nn.gelu(
      _dense(self.ff_rate * width, ("embed", "mlp"), dtype=self.dtype, name="fc1")(h),
      approximate=False,
    )
    h = _dense(width, ("mlp", "embed"), dtype=self.dtype, name="fc2")(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic), cache


KVCache = tuple[tuple[jax.Array, jax.Array], ...]


def init_cache(config: GPTConfig, batch: int, dtype: Any = jnp.float32) -> KVCache:
  """Zero keys/values (B, block_size, H, D) for each of the 2·num_layers blocks."""
  shape = (batch, config.block_size, config.num_heads, config.head_dim)
  return tuple(
    (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(2 * config.num_layers)
  )


class MotionGPT(nn.Module):
  """The T2M-GPT transformer (see module docstring)."""

  config: GPTConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.cond_emb = _dense(c.embed_dim, ("kv", "embed"), dtype=self.dtype, name="cond_emb")
    self.tok_emb = nn.Embed(
      c.num_codes + 2,
      c.embed_dim,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(nn.initializers.normal(_INIT_STD), ("vocab", "embed")),
      name="tok_emb",
    )
    block = lambda name: GPTBlock(c.num_heads, c.ff_rate, c.dropout, self.dtype, name=name)
    self.base_blocks = [block(f"base_blocks_{i}") for i in range(c.num_layers)]
    self.head_blocks = [block(f"head_blocks_{i}") for i in range(c.num_layers)]
    self.ln_f = pt.layer_norm(dtype=self.dtype, name="ln_f")
    self.head = _dense(
      c.num_codes + 1, ("embed", "vocab"), use_bias=False, dtype=self.dtype, name="head"
    )

  def _check_cond(self, cond: jax.Array) -> None:
    if cond.ndim != 2 or cond.shape[-1] != self.config.cond_dim:
      raise ValueError(
        f"cond: expected (batch, cond_dim={self.config.cond_dim}), found {cond.shape}"
      )

  def _blocks(self):
    return list(self.base_blocks) + list(self.head_blocks)

  def __call__(self, tokens: jax.Array, cond: jax.Array, deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits: tokens (B, n) with n < block_size, cond (B, cond_dim)
    -> (B, n + 1, num_codes + 1); row i predicts code i."""
    c = self.config
    self._check_cond(cond)
    if tokens.ndim != 2 or tokens.shape[0] != cond.shape[0] or tokens.shape[1] >= c.block_size:
      raise ValueError(
        f"tokens: expected (batch={cond.shape[0]}, length < block_size={c.block_size}), "
        f"found {tokens.shape}"
      )
    x = jnp.concatenate([self.cond_emb(cond)[:, None], self.tok_emb(tokens)], axis=1)
    positions = sinusoidal_positions(c.block_size, c.embed_dim)
    # No dropout on the embeddings: the reference defines one but never applies it.
    x = x + positions[None, : x.shape[1]].astype(x.dtype)
    for block in self._blocks():
      x, _ = block(x, deterministic=deterministic)
    return self.head(self.ln_f(x))

  def decode_step(
    self, token: jax.Array, cond: jax.Array, index: jax.Array, cache: KVCache
  ) -> tuple[jax.Array, KVCache]:
    """Logits (B, num_codes + 1) at position `index` given the previous code `token` (B,)
    (ignored at index 0, where the input is the text vector) and the cache of positions
    < index. Returns (logits, cache with this position written)."""
    c = self.config
    first = index == 0
    x = jnp.where(first, self.cond_emb(cond), self.tok_emb(token))[:, None]
    positions = sinusoidal_positions(c.block_size, c.embed_dim)
    x = x + jax.lax.dynamic_slice_in_dim(positions, index, 1)[None].astype(x.dtype)
    new_cache = []
    for block, layer_cache in zip(self._blocks(), cache):
      x, layer_cache = block(x, layer_cache, index)
      new_cache.append(layer_cache)
    return self.head(self.ln_f(x))[:, 0], tuple(new_cache)


def sample_codes(
  model: MotionGPT,
  variables: Any,
  cond: jax.Array,
  rng: jax.Array,
  *,
  min_codes: jax.Array,
  max_codes: jax.Array,
  temperature: float = 1.0,
  top_k: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Autoregressive codes with a KV cache: one `lax.scan` over the block's positions.

  Args:
    model, variables: the GPT and its variables.
    cond: (B, cond_dim) text vectors.
    rng: sampling key (unused at temperature 0).
    min_codes, max_codes: (B,) ints; End is masked out before `min_codes` codes and
      forced once `max_codes` codes exist (max_codes <= block_size - 1). Equal values
      fix the length; (1, block_size - 1) lets the model decide as in T2M-GPT.
    temperature: 0 takes the arg-max (greedy); otherwise samples softmax(logits / T).
    top_k: if set, samples among the k most likely tokens only.
  Returns:
    codes (B, block_size): codes, then End, then Pad; lengths (B,): codes before End.
  """
  c = model.config
  batch = cond.shape[0]
  min_codes = jnp.broadcast_to(jnp.asarray(min_codes, jnp.int32), (batch,))
  max_codes = jnp.minimum(
    jnp.broadcast_to(jnp.asarray(max_codes, jnp.int32), (batch,)), c.block_size - 1
  )

  def step(carry, index):
    previous, cache, done, lengths = carry
    logits, cache = model.apply(
      variables, previous, cond, index, cache, method=MotionGPT.decode_step
    )
    logits = logits.astype(jnp.float32)
    is_end_column = jnp.arange(logits.shape[-1]) == c.end_id
    logits = jnp.where(is_end_column[None] & (index < min_codes)[:, None], -jnp.inf, logits)
    if temperature == 0:
      token = jnp.argmax(logits, axis=-1)
    else:
      scaled = logits / temperature
      if top_k is not None:
        kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
      token = jax.random.categorical(jax.random.fold_in(rng, index), scaled, axis=-1)
    token = jnp.where(index >= max_codes, c.end_id, token).astype(jnp.int32)
    ends_now = ~done & (token == c.end_id)
    lengths = jnp.where(ends_now, index, lengths)
    output = jnp.where(done, c.pad_id, token)
    return (token, cache, done | ends_now, lengths), output

  carry = (
    jnp.zeros((batch,), jnp.int32),
    init_cache(c, batch, model.dtype),
    jnp.zeros((batch,), bool),
    jnp.full((batch,), c.block_size - 1, jnp.int32),
  )
  (_, _, _, lengths), codes = jax.lax.scan(step, carry, jnp.arange(c.block_size))
  return codes.T, lengths
