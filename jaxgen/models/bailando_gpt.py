"""Bailando's motion GPT (Li et al., 2022): upper and lower codes, cross-conditioned on music.

The reference `CrossCondGPT2` (lisiyao21/Bailando `models/cross_cond_gpt2.py`,
`configs/cc_motion_gpt.yaml`) reads three streams of equal length t: music
features projected to the width (`cond_emb`, a biased linear), upper-body
codes and lower-body codes (one embedding table each). Each stream has its own
third of one learned position table (`pos_emb`, (3·block_size, C), zero
init): stream s at position i adds row s·block_size + i. The sum goes through
dropout, the base blocks, the head blocks, a final LayerNorm and two bias-free
heads; the upper stream's outputs give the next upper codes, the lower
stream's the next lower codes (the music stream's outputs are unused).

Attention is cross-conditional: a token at position i of any stream sees all
three streams at positions <= i (the reference tiles tril(t, t) 3 × 3). So the
upper and lower codes at step i+1 both follow from music, upper and lower codes
up to step i, and neither half waits for the other. Here the streams are
interleaved — slot 3·i + s holds stream s (0 music, 1 upper, 2 lower) at
position i — which turns the mask into "slot j is visible from slot q when
j // 3 <= q // 3" and makes one decoding step three adjacent cache slots.
Attention does not depend on the order of its keys, so this is the reference's
computation with the same parameters.

Alignment (the reference trainer, `mc_gpt_all.py`): codes[:, :-1] go in,
codes[:, 1:] are the targets and the music is `music[:, 1:]`, so the music at
position i is the feature frame of the code being predicted (7.5 fps, one
frame per code).

Sampling (`CrossCondGPT2.sample`) is greedy and slides a window of
block_size - 1 = 28 positions over long music. The position table is absolute,
so once the window slides every cached key is stale: `sample_codes` refills the
cache from the window (one forward pass over it) on those steps and extends it
by one position otherwise, inside one `lax.scan`. With the reference's default
(`shift=None`) every step past the 28th refills; a `shift` s restarts the
window at s positions and lets it grow back to 28 by cached steps.
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
from jaxgen.nn import partitioning as pt

# The reference initialises every Linear and Embedding with N(0, 0.02).
_INIT = nn.initializers.normal(0.02)
# Streams in slot order: slot 3·i + s is stream s at position i.
_MUSIC, _UPPER, _LOWER = 0, 1, 2
_STREAMS = 3


@dataclass(frozen=True)
class BailandoGPTConfig:
  """Hyper-parameters; defaults are the reference's `cc_motion_gpt.yaml`.

  Attributes:
    num_codes_upper, num_codes_lower: codebook sizes (`vocab_size_up`, `vocab_size_down`).
    music_dim: music feature width (`n_music`: Bailando's 438-d features).
    embed_dim: transformer width (`n_embd`).
    block_size: positions per stream (`block_size`); sampling windows hold block_size - 1.
    num_base_layers, num_head_layers: blocks of `gpt_base` and `gpt_head` (`n_layer`).
    num_heads: attention heads (`n_head`).
    dropout: embedding, attention and residual dropout (`embd_pdrop`, `attn_pdrop`,
      `resid_pdrop`, all equal in the reference).
  """

  num_codes_upper: int = 512
  num_codes_lower: int = 512
  music_dim: int = 438
  embed_dim: int = 768
  block_size: int = 29
  num_base_layers: int = 6
  num_head_layers: int = 6
  num_heads: int = 12
  dropout: float = 0.1

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(
        f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
      )
    if self.block_size < 2:
      raise ValueError(f"block_size must be >= 2 (a sampling window of 1+), got {self.block_size}")

  @property
  def window(self) -> int:
    """Positions the sampler's window holds (the reference's `get_block_size() - 1`)."""
    return self.block_size - 1

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def num_layers(self) -> int:
    return self.num_base_layers + self.num_head_layers


def check_inputs(config: BailandoGPTConfig, upper: Any, lower: Any, music: Any) -> None:
  """Named errors for (B, L) upper and lower codes and (B, L, music_dim) music.

  Code ranges are checked only on concrete arrays (traced ones cannot be, and an
  out-of-range lookup reads no row of the table silently); tasks check host batches
  with this.
  """
  if np.ndim(upper) != 2:
    raise ValueError(f"upper: expected codes (batch, length), found shape {np.shape(upper)}")
  if np.shape(lower) != np.shape(upper):
    raise ValueError(
      f"lower: expected the shape of upper {np.shape(upper)}, found {np.shape(lower)}"
    )
  batch, length = np.shape(upper)
  if np.ndim(music) != 3 or np.shape(music)[::2] != (batch, config.music_dim):
    raise ValueError(
      f"music: expected (batch={batch}, length, music_dim={config.music_dim}), "
      f"found {np.shape(music)}"
    )
  if np.shape(music)[1] != length:
    raise ValueError(
      f"music: expected one feature frame per code position (length {length}), "
      f"found {np.shape(music)[1]} frames"
    )
  for name, codes, size in (
    ("upper", upper, config.num_codes_upper),
    ("lower", lower, config.num_codes_lower),
  ):
    dtype = jnp.asarray(codes).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
      raise ValueError(f"{name}: expected integer code ids, found dtype {dtype}")
    if isinstance(codes, jax.core.Tracer) or not np.size(codes):
      continue
    low, high = int(np.min(codes)), int(np.max(codes))
    if low < 0 or high >= size:
      raise ValueError(f"{name}: code ids must lie in [0, {size}), found [{low}, {high}]")


def cross_conditional_mask(query_slots: jax.Array, key_slots: jax.Array) -> jax.Array:
  """(1, 1, Q, K) bools: every stream at positions <= the query's position is visible."""
  return (key_slots[None, :] // _STREAMS <= query_slots[:, None] // _STREAMS)[None, None]


KVCache = tuple[tuple[jax.Array, jax.Array], ...]


def init_cache(config: BailandoGPTConfig, batch: int, dtype: Any = jnp.float32) -> KVCache:
  """Zero keys/values (B, 3·window, H, D) for each block: one sampling window, interleaved."""
  shape = (batch, _STREAMS * config.window, config.num_heads, config.head_dim)
  return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))


class BailandoGPT(nn.Module):
  """`CrossCondGPT2` (see module docstring); parameter names follow the reference's roles."""

  config: BailandoGPTConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    dense = lambda n, axes, name, **kw: pt.dense(
      n, axes, kernel_init=_INIT, dtype=self.dtype, name=name, **kw
    )
    embed = lambda n, name: nn.Embed(
      n,
      c.embed_dim,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      embedding_init=pt.annotated(_INIT, ("vocab", "embed")),
      name=name,
    )
    self.cond_emb = dense(c.embed_dim, ("kv", "embed"), "cond_emb")
    self.tok_emb_upper = embed(c.num_codes_upper, "tok_emb_upper")
    self.tok_emb_lower = embed(c.num_codes_lower, "tok_emb_lower")
    self.pos_emb = self.param(
      "pos_emb",
      pt.annotated(nn.initializers.zeros_init(), (None, "embed")),
      (_STREAMS * c.block_size, c.embed_dim),
      jnp.float32,
    )
    self.embed_dropout = nn.Dropout(c.dropout)
    block = lambda name: GPTBlock(c.num_heads, 4, c.dropout, self.dtype, name=name)
    self.base_blocks = [block(f"base_blocks_{i}") for i in range(c.num_base_layers)]
    self.head_blocks = [block(f"head_blocks_{i}") for i in range(c.num_head_layers)]
    self.ln_f = pt.layer_norm(dtype=self.dtype, name="ln_f")
    self.head_upper = dense(c.num_codes_upper, ("embed", "vocab"), "head_upper", use_bias=False)
    self.head_lower = dense(c.num_codes_lower, ("embed", "vocab"), "head_lower", use_bias=False)

  def _embed(self, upper, lower, music, start, deterministic):
    """Interleaved (B, 3·n, C) inputs of positions start .. start + n - 1."""
    c = self.config
    batch, length = upper.shape
    # Stream s reads its own third of the table: rows s·block_size + position.
    rows = lambda s: jax.lax.dynamic_slice_in_dim(self.pos_emb, s * c.block_size + start, length)
    streams = (self.cond_emb(music), self.tok_emb_upper(upper), self.tok_emb_lower(lower))
    x = jnp.stack([h + rows(s).astype(h.dtype) for s, h in enumerate(streams)], axis=2)
    x = x.reshape(batch, _STREAMS * length, c.embed_dim)
    return self.embed_dropout(x, deterministic=deterministic)

  def _logits(self, x):
    """Head logits of the upper and lower slots: (B, n, num_codes_upper), (B, n, num_codes_lower)."""
    h = self.ln_f(x).reshape(x.shape[0], -1, _STREAMS, x.shape[-1])
    return self.head_upper(h[:, :, _UPPER]), self.head_lower(h[:, :, _LOWER])

  def _blocks(self):
    return list(self.base_blocks) + list(self.head_blocks)

  def __call__(
    self, upper: jax.Array, lower: jax.Array, music: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced logits: upper, lower (B, L) codes and music (B, L, music_dim) with
    L <= block_size -> (B, L, num_codes_upper), (B, L, num_codes_lower); row i predicts
    the codes of step i + 1."""
    c = self.config
    check_inputs(c, upper, lower, music)
    if upper.shape[1] > c.block_size:
      raise ValueError(
        f"upper, lower, music: length must be <= block_size={c.block_size}, found {upper.shape[1]}"
      )
    x = self._embed(upper, lower, music, 0, deterministic)
    slots = jnp.arange(x.shape[1])
    mask = cross_conditional_mask(slots, slots)
    for block in self._blocks():
      x, _ = block(x, deterministic=deterministic, mask=mask)
    return self._logits(x)

  def decode(
    self, upper: jax.Array, lower: jax.Array, music: jax.Array, start: jax.Array, cache: KVCache
  ) -> tuple[jax.Array, jax.Array, KVCache]:
    """Positions start .. start + n - 1 of a sampling window against `cache`, which holds
    the window's earlier positions: their keys/values are written and the logits
    (B, n, ·) of both heads returned with the cache. n = window refills it from 0."""
    x = self._embed(upper, lower, music, start, deterministic=True)
    first = _STREAMS * start
    mask = cross_conditional_mask(first + jnp.arange(x.shape[1]), jnp.arange(cache[0][0].shape[1]))
    new_cache = []
    for block, layer_cache in zip(self._blocks(), cache):
      x, layer_cache = block(x, layer_cache, first, mask=mask)
      new_cache.append(layer_cache)
    logits_upper, logits_lower = self._logits(x)
    return logits_upper, logits_lower, tuple(new_cache)


def window_lengths(config: BailandoGPTConfig, steps: int, shift: int | None = None) -> np.ndarray:
  """Positions the reference's `sample` feeds the model at each step k < steps.

  k + 1 until the window (block_size - 1) is full, then, with s = min(shift, window),
  s + (k - window - 1) mod (window - s + 1): the window slides at k = window, restarts at s
  positions and grows back to the window (always the window when shift is None).
  """
  w = config.window
  s = w if shift is None else min(shift, w)
  k = np.arange(steps)
  return np.where(k < w, k + 1, s + np.mod(k - w - 1, w - s + 1))


def _choose(logits, rng, temperature, top_k):
  """Arg-max at temperature 0, else a draw from softmax(logits / T) over the top_k codes
  (all codes when top_k exceeds them). Both options are arrays, so one compiled sampler
  serves every setting."""
  logits = logits.astype(jnp.float32)
  num_codes = logits.shape[-1]
  kth_index = num_codes - jnp.minimum(top_k, num_codes)
  kth = jnp.take_along_axis(jnp.sort(logits, axis=-1), kth_index[None, None], axis=-1)
  scaled = jnp.where(logits < kth, -jnp.inf, logits) / jnp.maximum(temperature, 1e-6)
  drawn = jax.random.categorical(rng, scaled, axis=-1)
  return jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def sample_codes(
  model: BailandoGPT,
  variables: Any,
  music: jax.Array,
  first_upper: jax.Array,
  first_lower: jax.Array,
  rng: jax.Array,
  *,
  temperature: float = 0.0,
  top_k: int | None = None,
  shift: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Upper and lower codes for music of any length: one `lax.scan`, a KV cache per window.

  Args:
    model, variables: the GPT and its variables.
    music: (B, N, music_dim); music[:, k] conditions the codes of step k + 1 (the
      reference passes `music[:, 1:]` of the clip's features).
    first_upper, first_lower: (B,) the codes of step 0 (the reference takes them from
      the ground truth's first codes or at random).
    rng: sampling key (unused at temperature 0).
    temperature: 0 (the reference) takes the arg-max; otherwise samples softmax(logits / T).
    top_k: if set, samples among the k most likely codes only.
    shift: the reference's `sample_shift` (see `window_lengths`); None slides by one.
  Returns:
    upper, lower: (B, N + 1) codes, the first ones included.
  """
  c = model.config
  first_upper, first_lower = jnp.asarray(first_upper), jnp.asarray(first_lower)
  if first_upper.ndim != 1 or first_lower.shape != first_upper.shape:
    raise ValueError(
      "first_upper, first_lower: expected two (batch,) code arrays, "
      f"found shapes {first_upper.shape} and {first_lower.shape}"
    )
  if np.ndim(music) != 3 or np.shape(music)[1] < 1:
    raise ValueError(f"music: expected (batch, frames >= 1, music_dim), found {np.shape(music)}")
  check_inputs(c, first_upper[:, None], first_lower[:, None], music[:, :1])
  if shift is not None and shift < 1:
    raise ValueError(f"shift: expected None or an int >= 1, found {shift}")
  if temperature < 0:
    raise ValueError(f"temperature: expected >= 0, found {temperature}")
  if top_k is not None and top_k < 1:
    raise ValueError(f"top_k: expected None or an int >= 1, found {top_k}")
  lengths = window_lengths(c, music.shape[1], shift)
  # Refill where the window did not just grow by one: it slid, or restarted at `shift`.
  refill = np.r_[False, np.diff(lengths) != 1]
  every_code = max(c.num_codes_upper, c.num_codes_lower)
  options = (jnp.float32(temperature), jnp.int32(every_code if top_k is None else top_k))
  return _sample_scan(
    model, variables, music, first_upper, first_lower, rng, lengths, refill, options
  )


@functools.partial(jax.jit, static_argnums=0)
def _sample_scan(model, variables, music, first_upper, first_lower, rng, lengths, refill, options):
  """`sample_codes` after its checks. The window schedule and the sampling options are
  data, so one compiled program serves every `shift`, temperature and top_k."""
  temperature, top_k = options
  c = model.config
  batch, steps = music.shape[:2]
  w = c.window
  # Codes so far, padded so every window slice stays in bounds.
  pad = lambda first: jnp.zeros((batch, steps + 1 + w), jnp.int32).at[:, 0].set(first)
  music = jnp.pad(music, ((0, 0), (0, w), (0, 0)))
  decode = lambda *args: model.apply(variables, *args, method=BailandoGPT.decode)
  window = lambda array, start, size: jax.lax.dynamic_slice_in_dim(array, start, size, axis=1)

  def refill_window(k, length, upper, lower, cache):
    start = k - length + 1
    logits_upper, logits_lower, cache = decode(
      window(upper, start, w), window(lower, start, w), window(music, start, w), 0, cache
    )
    last = lambda x: jax.lax.dynamic_index_in_dim(x, length - 1, axis=1, keepdims=False)
    return last(logits_upper), last(logits_lower), cache

  def extend_window(k, length, upper, lower, cache):
    logits_upper, logits_lower, cache = decode(
      window(upper, k, 1), window(lower, k, 1), window(music, k, 1), length - 1, cache
    )
    return logits_upper[:, 0], logits_lower[:, 0], cache

  def step(carry, inputs):
    upper, lower, cache = carry
    k, length, refill_now = inputs
    logits_upper, logits_lower, cache = jax.lax.cond(
      refill_now, refill_window, extend_window, k, length, upper, lower, cache
    )
    rng_upper, rng_lower = jax.random.split(jax.random.fold_in(rng, k))
    upper = upper.at[:, k + 1].set(_choose(logits_upper, rng_upper, temperature, top_k))
    lower = lower.at[:, k + 1].set(_choose(logits_lower, rng_lower, temperature, top_k))
    return (upper, lower, cache), None

  carry = (pad(first_upper), pad(first_lower), init_cache(c, batch, model.dtype))
  inputs = (jnp.arange(steps), jnp.asarray(lengths, jnp.int32), jnp.asarray(refill))
  (upper, lower, _), _ = jax.lax.scan(step, carry, inputs)
  return upper[:, : steps + 1], lower[:, : steps + 1]
