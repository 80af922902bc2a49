"""Choosing the next token from logits: temperature, top-k and top-p (nucleus) filtering.

Pure functions of a (..., vocab) logits array, shared by the token samplers
(the autoregressive image-token prior in `jaxgen.models.dalle`; any sampler
that draws one categorical per position). The order is the one Hugging Face's
`generate` uses: divide by the temperature, keep the top k, then keep the
nucleus of the tempered distribution, so the nucleus grows as the temperature
rises. Every option may be a traced scalar, so one compiled sampler serves
every setting; the "off" values (top_k <= 0, top_p >= 1) keep every token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The one error class for out-of-range sampling options: it names the option, so the
# command line can name its flag.
from jaxgen.diffusion.samplers import SamplingOptionError


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
  """`SamplingOptionError`s for host-side sampling options (None turns a filter off)."""
  if temperature < 0:
    raise SamplingOptionError("temperature", f"expected >= 0 (0 is greedy), found {temperature}")
  if top_k is not None and top_k < 1:
    raise SamplingOptionError("top_k", f"expected None or an int >= 1, found {top_k}")
  if top_p is not None and not 0 < top_p <= 1:
    raise SamplingOptionError("top_p", f"expected None or a float in (0, 1], found {top_p}")


def sampling_options(
  temperature: float, top_k: int | None, top_p: float | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The options as arrays, None mapped to the value that keeps every token."""
  check_sampling_options(temperature, top_k, top_p)
  return (
    jnp.float32(temperature),
    jnp.int32(0 if top_k is None else top_k),
    jnp.float32(1.0 if top_p is None else top_p),
  )


def apply_temperature(logits: jax.Array, temperature: jax.Array | float) -> jax.Array:
  """logits / T; T = 0 (greedy) leaves them as they are (the arg-max does not change)."""
  temperature = jnp.asarray(temperature, jnp.float32)
  return logits / jnp.where(temperature > 0, temperature, 1.0)


def top_k_filter(logits: jax.Array, top_k: jax.Array | int) -> jax.Array:
  """-inf outside the k largest logits of each row (ties with the k-th are kept);
  k <= 0 or k >= vocab keeps every token."""
  vocab = logits.shape[-1]
  top_k = jnp.asarray(top_k, jnp.int32)
  k = jnp.where(top_k <= 0, vocab, jnp.minimum(top_k, vocab))
  ascending = jnp.sort(logits, axis=-1)
  kth = jax.lax.dynamic_slice_in_dim(ascending, vocab - k, 1, axis=-1)
  return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, top_p: jax.Array | float) -> jax.Array:
  """-inf outside the nucleus: the fewest most likely tokens whose probabilities sum to
  at least p (the most likely token always stays; ties with the least likely kept one
  stay too). p >= 1 keeps every token."""
  top_p = jnp.asarray(top_p, jnp.float32)
  descending = -jnp.sort(-logits, axis=-1)
  probs = jax.nn.softmax(descending.astype(jnp.float32), axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  # A token joins while the tokens above it hold less than p.
  kept = mass_before < top_p
  kept = kept.at[..., 0].set(True)
  threshold = jnp.min(jnp.where(kept, descending, jnp.inf), axis=-1, keepdims=True)
  filtered = jnp.where(logits < threshold, -jnp.inf, logits)
  # Rounding can leave the tail's mass_before a hair above 1: p >= 1 is "off", exactly.
  return jnp.where(top_p >= 1, logits, filtered)


def filter_logits(
  logits: jax.Array,
  temperature: jax.Array | float = 1.0,
  top_k: jax.Array | int = 0,
  top_p: jax.Array | float = 1.0,
) -> jax.Array:
  """Temperature, then top-k, then top-p: the logits a categorical draw samples from."""
  return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def sample_tokens(
  logits: jax.Array,
  rng: jax.Array,
  temperature: jax.Array | float = 1.0,
  top_k: jax.Array | int = 0,
  top_p: jax.Array | float = 1.0,
) -> jax.Array:
  """int32 tokens (...,) from (..., vocab) logits: the arg-max at temperature 0,
  otherwise a draw from the filtered, tempered distribution."""
  logits = logits.astype(jnp.float32)
  drawn = jax.random.categorical(rng, filter_logits(logits, temperature, top_k, top_p), axis=-1)
  greedy = jnp.argmax(logits, axis=-1)
  return jnp.where(jnp.asarray(temperature) > 0, drawn, greedy).astype(jnp.int32)
