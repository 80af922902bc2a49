"""Masked visual token modelling and MaskGIT's parallel decoding (Chang et al. 2022).

A bidirectional transformer learns to fill in image tokens hidden behind a
[MASK] id; at sampling time it starts from an all-masked grid and, in T
steps, predicts every token at once, keeps the most confident ones and masks
the rest again, fewer each step as the mask schedule γ falls from 1 to 0.
Plain functions of arrays, following google-research/maskgit
(`libml/mask_schedule.py`, `libml/parallel_decode.py`):

- `mask_ratio(schedule, r)`: γ(r), the masked fraction at progress r,
  clipped to [1e-6, 1] as the reference does.
- `mask_tokens`: training corruption; per example r ~ U(0, 1) and
  ceil(γ(r)·N) tokens chosen uniformly are masked.
- `masked_cross_entropy`: label-smoothed cross-entropy on masked tokens only.
- `parallel_decode`: the T decoding steps as one `lax.scan`.

The model is reached only through `logits_fn(tokens) -> logits`, a closure,
so one decoder serves class- or text-conditioned models and classifier-free
guidance alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# γ(r) for r in [0, 1]: 1 at r = 0 (everything masked), 0 at r = 1. The reference
# calls `linear` "uniform" and `square` "pow2"; cosine is its default and the paper's best.
SCHEDULES: dict[str, Callable[[jax.Array], jax.Array]] = {
  "cosine": lambda r: jnp.cos(0.5 * math.pi * r),
  "linear": lambda r: 1.0 - r,
  "square": lambda r: 1.0 - r * r,
}
MIN_MASK_RATIO = 1e-6  # the reference's clip: at least one token is always masked in training

LogitsFn = Callable[[jax.Array], jax.Array]


class MaskScheduleError(ValueError):
  """An unknown mask schedule name."""


class DecodingOptionError(ValueError):
  """A parallel-decoding or masking argument out of range (steps, temperatures, shapes)."""


def check_schedule(schedule: str) -> None:
  if schedule not in SCHEDULES:
    raise MaskScheduleError(f"schedule: expected one of {sorted(SCHEDULES)}, found {schedule!r}")


def mask_ratio(schedule: str, r: jax.Array | float) -> jax.Array:
  """γ(r): the fraction of tokens masked at progress r in [0, 1], clipped to [1e-6, 1]."""
  check_schedule(schedule)
  r = jnp.asarray(r, jnp.float32)
  return jnp.clip(SCHEDULES[schedule](r), MIN_MASK_RATIO, 1.0)


def _row_ranks(scores: jax.Array) -> jax.Array:
  """Rank of each entry within its row (0 = smallest); ties broken by position."""
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)


def mask_tokens(
  rng: jax.Array,
  codes: jax.Array,
  ratio_or_schedule: str | float | jax.Array = "cosine",
  *,
  mask_id: int,
) -> tuple[jax.Array, jax.Array]:
  """Hides ceil(ratio·N) tokens of each example behind `mask_id`, positions chosen uniformly.

  Args:
    rng: PRNG key.
    codes: int tokens (B, ...) with N = prod(...) tokens per example.
    ratio_or_schedule: a schedule name (training: the ratio is γ(r) with
      r ~ U(0, 1) drawn per example, as MaskGIT trains), or fixed masked
      fraction(s) in (0, 1], a scalar or one per example (B,).
    mask_id: the [MASK] token id.

  Returns:
    (masked codes, bool mask of the hidden positions), both shaped like `codes`.
  """
  if codes.ndim < 2:
    raise DecodingOptionError(f"codes: expected (batch, tokens...), found shape {codes.shape}")
  batch, num_tokens = codes.shape[0], math.prod(codes.shape[1:])
  ratio_rng, position_rng = jax.random.split(rng)
  if isinstance(ratio_or_schedule, str):
    ratio = mask_ratio(ratio_or_schedule, jax.random.uniform(ratio_rng, (batch,)))
  else:
    ratio = jnp.broadcast_to(jnp.asarray(ratio_or_schedule, jnp.float32), (batch,))
  num_masked = jnp.ceil(ratio * num_tokens).astype(jnp.int32)
  ranks = _row_ranks(jax.random.uniform(position_rng, (batch, num_tokens)))
  hidden = (ranks < num_masked[:, None]).reshape(codes.shape)
  return jnp.where(hidden, jnp.asarray(mask_id, codes.dtype), codes), hidden


def masked_cross_entropy(
  logits: jax.Array, targets: jax.Array, mask: jax.Array, label_smoothing: float = 0.1
) -> jax.Array:
  """Mean label-smoothed cross-entropy over the masked tokens (MaskGIT: smoothing 0.1).

  logits: (..., K); targets: int (...); mask: bool (...), True where the loss
  counts. Smoothing spreads `label_smoothing` uniformly over all K classes
  (optax.smooth_labels). An all-False mask gives 0, not NaN.
  """
  if logits.shape[:-1] != targets.shape or targets.shape != mask.shape:
    raise DecodingOptionError(
      f"logits, targets, mask: expected shapes (..., K), (...), (...) with equal leading axes, "
      f"found {logits.shape}, {targets.shape}, {mask.shape}"
    )
  if not 0.0 <= label_smoothing < 1.0:
    raise DecodingOptionError(f"label_smoothing: expected in [0, 1), found {label_smoothing}")
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), -1)[..., 0]
  per_token = -(1.0 - label_smoothing) * target_log_prob - label_smoothing * log_probs.mean(-1)
  weights = mask.astype(jnp.float32)
  return (per_token * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def num_to_mask(
  unknown_at_start: jax.Array,
  unknown_now: jax.Array,
  step: jax.Array,
  num_steps: int,
  schedule: str,
) -> jax.Array:
  """How many tokens step `step` (0-based) leaves masked: the reference's rule.

  floor(unknown_at_start · γ((step+1)/T)), clamped to [1, unknown_now − 1] so
  each step fixes at least one token and leaves at least one for the next;
  0 at the last step, where every token is decoded.
  """
  ratio = (step + 1) / num_steps
  planned = jnp.floor(unknown_at_start * mask_ratio(schedule, ratio)).astype(jnp.int32)
  clamped = jnp.maximum(1, jnp.minimum(unknown_now - 1, planned))
  return jnp.where(step == num_steps - 1, 0, clamped)


def _check_decode_options(
  num_steps: int, choice_temperature: float, temperature: float, schedule: str
) -> None:
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise DecodingOptionError(f"num_steps: expected an int >= 1, found {num_steps!r}")
  if choice_temperature < 0:
    raise DecodingOptionError(f"choice_temperature: expected >= 0, found {choice_temperature}")
  if temperature < 0:
    raise DecodingOptionError(f"temperature: expected >= 0 (0 = argmax), found {temperature}")
  check_schedule(schedule)


def _sample_with_log_probs(
  rng: jax.Array, logits: jax.Array, temperature: float
) -> tuple[jax.Array, jax.Array]:
  """Tokens drawn from softmax(logits / temperature) (argmax at 0) and their log-probabilities."""
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    sampled = jnp.argmax(logits, axis=-1)
  else:
    logits = logits / temperature
    sampled = jax.random.categorical(rng, logits, axis=-1)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return sampled, jnp.take_along_axis(log_probs, sampled[..., None], -1)[..., 0]


def parallel_decode(
  logits_fn: LogitsFn,
  rng: jax.Array,
  batch: int,
  num_tokens: int,
  num_steps: int,
  mask_id: int,
  choice_temperature: float = 4.5,
  schedule: str = "cosine",
  temperature: float = 1.0,
  *,
  tokens: jax.Array | None = None,
  return_history: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """MaskGIT's iterative parallel decoding: `num_steps` steps in one `lax.scan`.

  Each step t: sample every token from `logits_fn(current)` (B, N, K) at
  `temperature`; keep the tokens already known; with ratio = (t+1)/T,
  confidence = log p(sampled) + choice_temperature·(1 − ratio)·Gumbel (known
  tokens: +inf); re-mask the `num_to_mask` least confident. The choice noise
  anneals linearly to 0, and the last step decodes everything left.

  Args:
    logits_fn: `tokens (B, N) -> logits (B, N, K)` over the K codes a token
      may take (cut the class / mask rows of a tied vocabulary off here).
    rng: PRNG key.
    batch, num_tokens: B and N.
    num_steps: T >= 1 (T = 1 decodes everything in one forward).
    mask_id: the [MASK] id (outside [0, K)).
    choice_temperature: τ of the re-masking noise (MaskGIT: 4.5).
    schedule: mask schedule name (`SCHEDULES`).
    temperature: sampling temperature of the tokens (0 = argmax).
    tokens: optional start (B, N) with known tokens and `mask_id` elsewhere
      (editing / inpainting); default all masked. Known tokens never change.
    return_history: also return the tokens after each step (T, B, N), with
      `mask_id` where they are masked again.

  Returns:
    decoded tokens (B, N) int32, and the history when asked.
  """
  _check_decode_options(num_steps, choice_temperature, temperature, schedule)
  if tokens is None:
    tokens = jnp.full((batch, num_tokens), mask_id, jnp.int32)
  if tokens.shape != (batch, num_tokens):
    raise DecodingOptionError(
      f"tokens: expected shape (batch, num_tokens) = {(batch, num_tokens)}, found {tokens.shape}"
    )
  tokens = tokens.astype(jnp.int32)
  unknown_at_start = jnp.sum(tokens == mask_id, axis=-1)

  def step(current: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    sample_rng, choice_rng = jax.random.split(jax.random.fold_in(rng, t))
    logits = logits_fn(current)
    if logits.shape[:2] != (batch, num_tokens):
      raise DecodingOptionError(
        f"logits_fn: expected logits (batch, num_tokens, K) = {(batch, num_tokens)} + (K,), "
        f"found {logits.shape}"
      )
    unknown = current == mask_id
    sampled, log_prob = _sample_with_log_probs(sample_rng, logits, temperature)
    sampled = jnp.where(unknown, sampled, current)
    ratio = (t + 1) / num_steps
    noise = choice_temperature * (1.0 - ratio) * jax.random.gumbel(choice_rng, log_prob.shape)
    confidence = jnp.where(unknown, log_prob + noise, jnp.inf)
    n_mask = num_to_mask(unknown_at_start, unknown.sum(-1), t, num_steps, schedule)
    # `& unknown`: a known token is never masked again, even when none is left unknown.
    remask = (_row_ranks(confidence) < n_mask[:, None]) & unknown
    updated = jnp.where(remask, mask_id, sampled)
    return updated, updated

  decoded, history = jax.lax.scan(step, tokens, jnp.arange(num_steps))
  return (decoded, history) if return_history else decoded
