"""Mask-and-replace discrete diffusion over tokens (VQ-Diffusion, Gu et al. 2022).

Each of N tokens takes one of K codes or the mask class K. One forward step
keeps a code with probability α_t + β_t, replaces it by any one code with
probability β_t each, and masks it with probability γ_t; a mask stays a
mask. The cumulative ᾱ_t and γ̄_t are linear in t (the reference's
`alpha_schedule`, computed in float64 and cast to float32 once, as the
reference and diffusers' `VQDiffusionScheduler` do), so at the last step
nearly every token is masked and sampling starts from an all-mask grid.

Conventions follow the reference code, so its formulas read across:
- Timestep index t ∈ [0, T) is the paper's step t + 1; index −1 (stored at
  index T of the cumulative tables) is the identity, q(x_0 | x_0).
- Log-probabilities have the class axis LAST: (..., N, K + 1), the mask class
  at index K. log 0 is kept finite: one-hots use log(1e-30) and results are
  clamped to [−70, 0] (`LOG_ZERO`), as the reference does.
- The network predicts x_0 (logits over the K codes); its mask class gets
  log-probability −70. p_θ(x_{t−1} | x_t) = Σ_{x_0} q(x_{t−1} | x_t, x_0)
  p_θ(x_0 | x_t), computed by `q_posterior` on the predicted distribution.
- The loss is the variational bound (KL to the true posterior, the decoder
  NLL at t = 0) divided by p(t), with t drawn by importance sampling once
  every step has been seen often enough, plus the auxiliary x_0 loss with the
  reference's adaptive weight; both averaged per token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOG_ZERO = -70.0  # the reference's floor for log-probabilities (exp(-70) ~ 4e-31)
_LOG_TINY = float(np.log(np.float32(1e-30)))  # log of a one-hot's zeros, as `index_to_log_onehot`
IMPORTANCE_MIN_COUNT = 10  # uniform t until every step has been drawn more than this often

X0LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


class MaskScheduleError(ValueError):
  """A mask-and-replace schedule was asked for with impossible arguments."""


class DiscreteSamplerError(ValueError):
  """Sampler options out of range (skip_step, temperature, truncation_rate, shapes)."""


class MaskSchedule(NamedTuple):
  """Log transition probabilities of mask-and-replace diffusion (float32).

  Per-step tables have shape (T,); cumulative ones (T + 1,), their last entry
  the identity (ᾱ = 1, β̄ = 0, γ̄ = 0) so index −1 (step 0) reads it.
  """

  log_at: jax.Array
  log_bt: jax.Array
  log_ct: jax.Array
  log_1_min_ct: jax.Array
  log_cumprod_at: jax.Array
  log_cumprod_bt: jax.Array
  log_cumprod_ct: jax.Array
  log_1_min_cumprod_ct: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.log_at.shape[0]


def schedule_probabilities(
  num_codes: int,
  num_timesteps: int = 100,
  alpha_cum_start: float = 0.99999,
  alpha_cum_end: float = 0.000009,
  gamma_cum_start: float = 0.000009,
  gamma_cum_end: float = 0.99999,
) -> dict[str, np.ndarray]:
  """The reference's `alpha_schedule` in float64: at, bt, ct (T,) and att, btt, ctt (T + 1,)."""
  if num_codes < 2:
    raise MaskScheduleError(f"num_codes: expected at least 2 codes, found {num_codes}")
  if num_timesteps < 2:
    raise MaskScheduleError(f"num_timesteps: expected at least 2, found {num_timesteps}")
  for name, value in (
    ("alpha_cum_start", alpha_cum_start),
    ("alpha_cum_end", alpha_cum_end),
    ("gamma_cum_start", gamma_cum_start),
    ("gamma_cum_end", gamma_cum_end),
  ):
    if not 0.0 < value < 1.0:
      raise MaskScheduleError(f"{name}: expected a probability in (0, 1), found {value}")
  if alpha_cum_start + gamma_cum_start > 1.0 or alpha_cum_end + gamma_cum_end > 1.0:
    raise MaskScheduleError(
      "alpha_cum_* + gamma_cum_*: expected at most 1 at both ends, found "
      f"{alpha_cum_start + gamma_cum_start} and {alpha_cum_end + gamma_cum_end}"
    )
  ramp = np.arange(num_timesteps, dtype=np.float64) / (num_timesteps - 1)
  att = np.concatenate(([1.0], ramp * (alpha_cum_end - alpha_cum_start) + alpha_cum_start))
  at = att[1:] / att[:-1]
  ctt = np.concatenate(([0.0], ramp * (gamma_cum_end - gamma_cum_start) + gamma_cum_start))
  ct = 1.0 - (1.0 - ctt[1:]) / (1.0 - ctt[:-1])
  bt = (1.0 - at - ct) / num_codes
  att = np.concatenate((att[1:], [1.0]))
  ctt = np.concatenate((ctt[1:], [0.0]))
  btt = (1.0 - att - ctt) / num_codes
  return {"at": at, "bt": bt, "ct": ct, "att": att, "btt": btt, "ctt": ctt}


def mask_schedule(num_codes: int, num_timesteps: int = 100, **ends: float) -> MaskSchedule:
  """Log tables of the schedule for K = `num_codes` codes (plus the mask class).

  `ends` are `schedule_probabilities`' alpha_cum_start/end, gamma_cum_start/end.
  """
  p = schedule_probabilities(num_codes, num_timesteps, **ends)
  with np.errstate(divide="ignore"):  # log(0) = -inf for the identity's γ̄ and β̄, as the reference
    logs = {k: np.log(v) for k, v in p.items()}
    log_1_min_ct = np.log1p(-p["ct"])
    log_1_min_cumprod_ct = np.log1p(-p["ctt"])

  def f32(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x.astype(np.float32))

  return MaskSchedule(
    log_at=f32(logs["at"]),
    log_bt=f32(logs["bt"]),
    log_ct=f32(logs["ct"]),
    log_1_min_ct=f32(log_1_min_ct),
    log_cumprod_at=f32(logs["att"]),
    log_cumprod_bt=f32(logs["btt"]),
    log_cumprod_ct=f32(logs["ctt"]),
    log_1_min_cumprod_ct=f32(log_1_min_cumprod_ct),
  )


def _at(table: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
  """table[t] for per-example t (B,), shaped to broadcast over (B, ..., classes)."""
  values = jnp.take(table, jnp.asarray(t) % table.shape[0])
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def index_to_log_onehot(x: jax.Array, num_classes: int) -> jax.Array:
  """Tokens (...,) -> log one-hot (..., num_classes) with log(1e-30) for the zeros."""
  return jnp.where(jax.nn.one_hot(x, num_classes, dtype=bool), 0.0, _LOG_TINY)


def q_pred(schedule: MaskSchedule, log_x0: jax.Array, t: jax.Array) -> jax.Array:
  """log q(x_t | x_0) for a (possibly soft) log distribution of x_0, (B, ..., K + 1).

  Codes: log(ᾱ_t p(code) + β̄_t); mask: log((1 − γ̄_t) p(mask) + γ̄_t).
  t ∈ [−1, T); −1 is the identity.
  """
  codes = jnp.logaddexp(
    log_x0[..., :-1] + _at(schedule.log_cumprod_at, t, log_x0),
    _at(schedule.log_cumprod_bt, t, log_x0),
  )
  mask = jnp.logaddexp(
    log_x0[..., -1:] + _at(schedule.log_1_min_cumprod_ct, t, log_x0),
    _at(schedule.log_cumprod_ct, t, log_x0),
  )
  return jnp.concatenate([codes, mask], axis=-1)


def q_pred_one_timestep(schedule: MaskSchedule, log_x: jax.Array, t: jax.Array) -> jax.Array:
  """log q(x_t | x_{t−1}) as a function of x_{t−1}'s log distribution, t ∈ [0, T)."""
  codes = jnp.logaddexp(
    log_x[..., :-1] + _at(schedule.log_at, t, log_x), _at(schedule.log_bt, t, log_x)
  )
  mask = jnp.logaddexp(
    log_x[..., -1:] + _at(schedule.log_1_min_ct, t, log_x), _at(schedule.log_ct, t, log_x)
  )
  return jnp.concatenate([codes, mask], axis=-1)


def q_probs(schedule: MaskSchedule, x0: jax.Array, t: jax.Array, num_codes: int) -> jax.Array:
  """log q(x_t | x_0) for tokens x_0 (B, N): (B, N, K + 1)."""
  return q_pred(schedule, index_to_log_onehot(x0, num_codes + 1), t)


def q_sample(
  schedule: MaskSchedule, x0: jax.Array, t: jax.Array, rng: jax.Array, num_codes: int
) -> jax.Array:
  """Draws x_t ~ q(x_t | x_0) for tokens x_0 (B, N) at per-example steps t (B,)."""
  return jax.random.categorical(rng, q_probs(schedule, x0, t, num_codes), axis=-1)


def q_posterior(
  schedule: MaskSchedule, log_x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> jax.Array:
  """log q(x_{t−1} | x_t, x_0) averaged over x_0 ~ exp(log_x0): (B, N, K + 1).

  Σ_{x0} q(x_{t−1} | x_t, x0) p(x0) = Σ_{x0} q(x_t | x_{t−1}) q(x_{t−1} | x0)
  p(x0) / q(x_t | x0), computed as the reference does: reweight p(x0) by
  1 / q(x_t | x0), push it through q(x_{t−1} | ·), multiply by q(x_t | x_{t−1}).
  log_x0 (B, N, K + 1) holds p(x0) (its mask entry is ignored); t ∈ [0, T).
  """
  num_classes = log_x0.shape[-1]
  masked = (x_t == num_classes - 1)[..., None]
  log_x_t = index_to_log_onehot(x_t, num_classes)
  # q(x_t | x0 = code) for every code; a masked x_t came from any code with prob γ̄_t.
  log_qt = jnp.where(
    masked, _at(schedule.log_cumprod_ct, t, log_x0), q_pred(schedule, log_x_t, t)[..., :-1]
  )
  # q(x_t | x_{t−1}) for every x_{t−1}: a non-mask x_t never comes from the mask.
  one_step = q_pred_one_timestep(schedule, log_x_t, t)
  one_step = jnp.concatenate(
    [one_step[..., :-1], jnp.full_like(one_step[..., -1:], _LOG_TINY)], axis=-1
  )
  mask_column = jnp.concatenate(
    [
      jnp.broadcast_to(_at(schedule.log_ct, t, log_x0), one_step[..., :-1].shape),
      jnp.zeros_like(one_step[..., -1:]),
    ],
    axis=-1,
  )
  one_step = jnp.where(masked, mask_column, one_step)
  q = jnp.concatenate([log_x0[..., :-1] - log_qt, jnp.full_like(log_qt[..., :1], _LOG_TINY)], -1)
  q_log_sum_exp = jax.nn.logsumexp(q, axis=-1, keepdims=True)
  q = q - q_log_sum_exp
  log_prev = q_pred(schedule, q, jnp.asarray(t) - 1) + one_step + q_log_sum_exp
  return jnp.clip(log_prev, LOG_ZERO, 0.0)


def truncate(log_probs: jax.Array, truncation_rate: float) -> jax.Array:
  """Keeps the most likely classes whose cumulative probability stays below the rate.

  The top class is always kept; the others past the rate get `LOG_ZERO` (the
  reference's `top{r}r` sampling, default r = 0.85). Not renormalised: the
  posterior normalises. Class axis last.
  """
  order = jnp.argsort(-log_probs, axis=-1)
  sorted_log = jnp.take_along_axis(log_probs, order, axis=-1)
  below = jnp.cumsum(jnp.exp(sorted_log), axis=-1) < truncation_rate
  keep_sorted = jnp.concatenate([jnp.ones_like(below[..., :1]), below[..., :-1]], axis=-1)
  keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(keep, log_probs, LOG_ZERO)


def x0_log_probs(
  logits: jax.Array, temperature: float = 1.0, truncation_rate: float | None = None
) -> jax.Array:
  """p_θ(x_0 | x_t) from the network's logits over K codes: (B, N, K + 1), mask at −70.

  Softmax in float32 (the reference uses float64 here), optional temperature
  and truncation, clamped to [−70, 0] with the mask class appended.
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  if truncation_rate is not None:
    log_p = truncate(log_p, truncation_rate)
  log_p = jnp.concatenate([log_p, jnp.full_like(log_p[..., :1], LOG_ZERO)], axis=-1)
  return jnp.clip(log_p, LOG_ZERO, 0.0)


def p_posterior(
  schedule: MaskSchedule, logits: jax.Array, x_t: jax.Array, t: jax.Array, **x0_options
) -> jax.Array:
  """log p_θ(x_{t−1} | x_t): the x_0-parameterised reverse step, (B, N, K + 1)."""
  return q_posterior(schedule, x0_log_probs(logits, **x0_options), x_t, t)


def multinomial_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p ‖ q) over the last (class) axis."""
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


# ---------------------------------------------------------------------------
# Training: importance sampling of t and the loss.
# ---------------------------------------------------------------------------


class ImportanceState(NamedTuple):
  """The reference's `Lt_history` (moving average of L_t², per step) and `Lt_count`.

  A plain pytree of (T,) float32 arrays: a task carries it as non-gradient
  state and replaces it by `DiscreteLoss.state` after every step.
  """

  loss_sq: jax.Array
  count: jax.Array


def init_importance_state(num_timesteps: int) -> ImportanceState:
  return ImportanceState(jnp.zeros((num_timesteps,)), jnp.zeros((num_timesteps,)))


def sample_timesteps(
  rng: jax.Array, batch: int, num_timesteps: int, state: ImportanceState | None = None
) -> tuple[jax.Array, jax.Array]:
  """t (B,) int32 and its probability p(t) (B,).

  Uniform without a state, or while some step has been drawn at most
  `IMPORTANCE_MIN_COUNT` times; otherwise p(t) ∝ sqrt(E[L_t²]) + 1e-4 with
  step 0 (the decoder term) given step 1's weight, as the reference.
  """
  uniform_t = jax.random.randint(rng, (batch,), 0, num_timesteps)
  uniform_p = jnp.full((batch,), 1.0 / num_timesteps)
  if state is None:
    return uniform_t, uniform_p
  weights = jnp.sqrt(state.loss_sq + 1e-10) + 1e-4
  weights = weights.at[0].set(weights[1])
  probs = weights / jnp.sum(weights)
  importance_t = jax.random.categorical(rng, jnp.log(probs), shape=(batch,))
  ready = jnp.all(state.count > IMPORTANCE_MIN_COUNT)
  t = jnp.where(ready, importance_t, uniform_t)
  return t, jnp.where(ready, probs[t], uniform_p)


def update_importance_state(
  state: ImportanceState, t: jax.Array, per_example_loss: jax.Array
) -> ImportanceState:
  """L_t² history ← 0.9 · history + 0.1 · L_t² at the drawn steps; counts += 1.

  Where one step is drawn twice in a batch, one of the writes wins (the
  reference's `scatter_` does the same).
  """
  loss_sq = jax.lax.stop_gradient(per_example_loss) ** 2
  new = 0.1 * loss_sq + 0.9 * state.loss_sq[t]
  return ImportanceState(state.loss_sq.at[t].set(new), state.count.at[t].add(1.0))


class DiscreteLoss(NamedTuple):
  """`vq_diffusion_loss`'s result: the scalar to minimise, its parts, the new state."""

  loss: jax.Array
  vb_loss: jax.Array  # the bound's term per token (KL or decoder NLL), / p(t)
  aux_loss: jax.Array  # the weighted auxiliary x_0 term per token, / p(t)
  x0_accuracy: jax.Array  # argmax p_θ(x_0 | x_t) == x_0, per token
  state: ImportanceState | None


def loss_terms(
  schedule: MaskSchedule,
  logits: jax.Array,
  x0: jax.Array,
  x_t: jax.Array,
  t: jax.Array,
  pt: jax.Array,
  *,
  auxiliary_loss_weight: float = 5e-4,
  adaptive_auxiliary_loss: bool = True,
  mask_weight: tuple[float, float] = (1.0, 1.0),
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example (bound term / p(t), weighted auxiliary term / p(t), unweighted bound term).

  Sums over the N tokens (divide by N for the reference's per-token loss).
  logits (B, N, K) are the network's x_0 prediction from x_t (B, N) at t (B,).
  """
  num_codes = logits.shape[-1]
  log_x0 = index_to_log_onehot(x0, num_codes + 1)
  log_x0_recon = x0_log_probs(logits)
  log_model_prob = q_posterior(schedule, log_x0_recon, x_t, t)
  log_true_prob = q_posterior(schedule, log_x0, x_t, t)
  masked = (x_t == num_codes).astype(jnp.float32)
  token_weight = masked * mask_weight[0] + (1.0 - masked) * mask_weight[1]
  kl = jnp.sum(multinomial_kl(log_true_prob, log_model_prob) * token_weight, axis=-1)
  decoder_nll = -jnp.sum(jnp.exp(log_x0) * log_model_prob, axis=(-2, -1))
  first = (t == 0).astype(jnp.float32)
  bound = first * decoder_nll + (1.0 - first) * kl
  kl_aux = multinomial_kl(log_x0[..., :-1], log_x0_recon[..., :-1])
  kl_aux = jnp.sum(kl_aux * token_weight, axis=-1)
  aux = first * decoder_nll + (1.0 - first) * kl_aux
  weight = auxiliary_loss_weight
  if adaptive_auxiliary_loss:
    weight = weight * (2.0 - t / schedule.num_timesteps)
  return bound / pt, weight * aux / pt, bound


def vq_diffusion_loss(
  schedule: MaskSchedule,
  x0_logits_fn: X0LogitsFn,
  x0: jax.Array,
  rng: jax.Array,
  *,
  num_codes: int,
  state: ImportanceState | None = None,
  **weights,
) -> DiscreteLoss:
  """The reference's training loss for token grids x0 (B, N) in [0, K).

  Draws t (importance-sampled with a `state`, else uniform) and x_t ~ q(x_t | x_0),
  calls `x0_logits_fn(x_t, t) -> (B, N, K)` once, and returns the per-token
  mean of bound / p(t) + auxiliary / p(t) (the reference's `loss.sum() / (B·N)`).
  `weights` are `loss_terms`' keyword options.
  """
  if x0.ndim != 2:
    raise DiscreteSamplerError(
      f"x0: expected token grids flattened to (batch, tokens), found {x0.shape}"
    )
  batch, tokens = x0.shape
  t_rng, x_rng = jax.random.split(rng)
  t, pt = sample_timesteps(t_rng, batch, schedule.num_timesteps, state)
  x_t = q_sample(schedule, x0, t, x_rng, num_codes)
  logits = x0_logits_fn(x_t, t)
  if logits.shape != (batch, tokens, num_codes):
    raise DiscreteSamplerError(
      f"x0_logits_fn: expected logits of shape {(batch, tokens, num_codes)}, found {logits.shape}"
    )
  vb, aux, bound = loss_terms(schedule, logits, x0, x_t, t, pt, **weights)
  new_state = None if state is None else update_importance_state(state, t, bound)
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == x0)
  norm = batch * tokens
  return DiscreteLoss(
    loss=(jnp.sum(vb) + jnp.sum(aux)) / norm,
    vb_loss=jnp.sum(vb) / norm,
    aux_loss=jnp.sum(aux) / norm,
    x0_accuracy=accuracy,
    state=new_state,
  )


# ---------------------------------------------------------------------------
# Sampling: one scan from the all-mask grid.
# ---------------------------------------------------------------------------


def sampling_steps(num_timesteps: int, skip_step: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(model steps, posterior steps) of the reference's `sample_fast`, host int32 arrays.

  Model steps T−1, T−2−skip, ... (0 appended if missing); at step t > skip the
  posterior is taken at t − skip (x_t is treated as x_{t−skip}: the jump is
  free), else at t. skip_step 0 is the full T-step chain (`sample`).
  """
  if skip_step < 0 or skip_step >= num_timesteps:
    raise DiscreteSamplerError(
      f"skip_step: expected an integer in [0, {num_timesteps}), found {skip_step}"
    )
  steps = list(range(num_timesteps - 1, -1, -1 - skip_step))
  if steps[-1] != 0:
    steps.append(0)
  steps = np.asarray(steps, np.int32)
  posterior = np.where(steps > skip_step, steps - skip_step, steps).astype(np.int32)
  return steps, posterior


def sample(
  schedule: MaskSchedule,
  x0_logits_fn: X0LogitsFn,
  rng: jax.Array,
  shape: tuple[int, int],
  *,
  num_codes: int,
  skip_step: int = 0,
  temperature: float = 1.0,
  truncation_rate: float | None = None,
) -> jax.Array:
  """Tokens (B, N) drawn by ancestral sampling from the all-mask grid, one `lax.scan`.

  Each step calls `x0_logits_fn(x_t, t) -> (B, N, K)` once, turns it into
  p_θ(x_0 | x_t) (temperature divides the logits; the reference accepts a
  temperature but never applies it; `truncation_rate` is its `top{r}r`,
  0.85 in its COCO inference, None = off), forms p_θ(x_{t−1} | x_t) and draws
  from it with Gumbel-max. For classifier-free guidance pass
  `jaxgen.diffusion.guidance.classifier_free_guidance(model, cond, null, s)`
  as `x0_logits_fn`: guiding logits equals the improved VQ-Diffusion's
  guidance on log-probabilities followed by renormalisation (the two differ by
  a per-token constant that the softmax removes). Guidance precedes truncation,
  as in diffusers' `VQDiffusionPipeline`.
  """
  if len(shape) != 2:
    raise DiscreteSamplerError(f"shape: expected (batch, tokens), found {shape}")
  if not temperature > 0:
    raise DiscreteSamplerError(f"temperature: expected a number > 0, found {temperature}")
  if truncation_rate is not None and not 0.0 < truncation_rate <= 1.0:
    raise DiscreteSamplerError(
      f"truncation_rate: expected a probability in (0, 1] or None, found {truncation_rate}"
    )
  steps, posterior_steps = sampling_steps(schedule.num_timesteps, skip_step)
  batch = shape[0]
  x_T = jnp.full(shape, num_codes, jnp.int32)
  keys = jax.random.split(rng, len(steps))

  def step(x_t, inputs):
    t, t_post, key = inputs
    logits = x0_logits_fn(x_t, jnp.full((batch,), t, jnp.int32))
    log_x0 = x0_log_probs(logits, temperature, truncation_rate)
    log_prev = q_posterior(schedule, log_x0, x_t, jnp.full((batch,), t_post, jnp.int32))
    return jax.random.categorical(key, log_prev, axis=-1).astype(jnp.int32), None

  tokens, _ = jax.lax.scan(step, x_T, (jnp.asarray(steps), jnp.asarray(posterior_steps), keys))
  return tokens
