"""Forward process, prediction parameterisations and the training loss.

With abar_t = alphas_cumprod[t], alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t):

  x_t = alpha_t * x0 + sigma_t * eps                      (q_sample)
  v   = alpha_t * eps - sigma_t * x0                      (Salimans & Ho 2022)

A network predicts one of these, named as in diffusers: 'epsilon' (eps),
'sample' (x0) or 'v_prediction' (v). Every prediction is an affine function
of (x_t, prediction); `prediction_coefficients` gives those coefficients so
samplers can precompute them per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgen.diffusion.schedules import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_prediction_type(prediction_type: str) -> None:
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(
      f"prediction_type: expected one of {PREDICTION_TYPES}, found {prediction_type!r}."
    )


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes (B,) per-example values to broadcast against `like` (B, ...)."""
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def alpha_sigma(schedule: NoiseSchedule, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(alpha_t, sigma_t) = (sqrt(abar_t), sqrt(1 - abar_t)) for integer timesteps t."""
  return schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """Draws x_t ~ q(x_t | x0) with the given standard-normal noise; t has shape (B,)."""
  alpha, sigma = alpha_sigma(schedule, t)
  return _per_example(alpha, x0) * x0 + _per_example(sigma, x0) * noise


def velocity(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """v = alpha_t * eps - sigma_t * x0 (diffusers' `get_velocity`)."""
  alpha, sigma = alpha_sigma(schedule, t)
  return _per_example(alpha, x0) * noise - _per_example(sigma, x0) * x0


def training_target(
  prediction_type: str, x0: jax.Array, noise: jax.Array, schedule: NoiseSchedule, t: jax.Array
) -> jax.Array:
  """The regression target of a network with the given prediction type."""
  check_prediction_type(prediction_type)
  if prediction_type == "epsilon":
    return noise
  if prediction_type == "sample":
    return x0
  return velocity(schedule, x0, noise, t)


def prediction_coefficients(prediction_type: str, alpha: jax.Array, sigma: jax.Array):
  """Coefficients with x0 = a * x_t + b * pred and eps = c * x_t + d * pred.

  Returns (a, b, c, d). `alpha`, `sigma` may be scalars or arrays (e.g. a
  per-step table); alpha**2 + sigma**2 = 1 is assumed.
  """
  check_prediction_type(prediction_type)
  zeros, ones = jnp.zeros_like(alpha), jnp.ones_like(alpha)
  if prediction_type == "epsilon":
    return 1.0 / alpha, -sigma / alpha, zeros, ones
  if prediction_type == "sample":
    return zeros, ones, 1.0 / sigma, -alpha / sigma
  return alpha, -sigma, sigma, alpha  # v_prediction


def convert_prediction(
  prediction: jax.Array,
  x_t: jax.Array,
  schedule: NoiseSchedule,
  t: jax.Array,
  source: str,
  target: str,
) -> jax.Array:
  """Converts a model prediction between 'epsilon', 'sample' and 'v_prediction' at timesteps t (B,)."""
  check_prediction_type(target)
  alpha, sigma = alpha_sigma(schedule, t)
  alpha, sigma = _per_example(alpha, x_t), _per_example(sigma, x_t)
  a, b, c, d = prediction_coefficients(source, alpha, sigma)
  x0 = a * x_t + b * prediction
  eps = c * x_t + d * prediction
  if target == "sample":
    return x0
  if target == "epsilon":
    return eps
  return alpha * eps - sigma * x0


def snr(schedule: NoiseSchedule, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio abar_t / (1 - abar_t) at integer timesteps t."""
  abar = schedule.alphas_cumprod[t]
  return abar / (1.0 - abar)


def min_snr_weight(
  schedule: NoiseSchedule, t: jax.Array, gamma: float, prediction_type: str
) -> jax.Array:
  """Min-SNR-gamma loss weight (Hang et al. 2023) for an MSE on `prediction_type`.

  The paper's x0-space weight min(SNR, gamma) expressed in the space the
  loss is computed in: the eps-MSE equals the x0-MSE times SNR and the
  v-MSE equals it times (SNR + 1), hence the divisions below.
  """
  check_prediction_type(prediction_type)
  if not gamma > 0:
    raise ValueError(f"gamma: expected a positive number, found {gamma!r}.")
  s = snr(schedule, t)
  clipped = jnp.minimum(s, gamma)
  if prediction_type == "epsilon":
    return clipped / s
  if prediction_type == "sample":
    return clipped
  return clipped / (s + 1.0)


TIMESTEP_DISTRIBUTIONS = ("uniform", "logit_normal")


def sample_timesteps(
  rng: jax.Array,
  batch: int,
  num_train_timesteps: int,
  distribution: str = "uniform",
  mean: float = 0.0,
  std: float = 1.0,
) -> jax.Array:
  """Integer training timesteps in [0, num_train_timesteps), shape (batch,), int32.

  'uniform': every timestep alike (DDPM). 'logit_normal': t / T =
  sigmoid(N(mean, std)) (Esser et al. 2024), which spends fewer steps at the
  two ends of the schedule; mean > 0 leans towards the noisy end, where the
  condition decides the content.
  """
  if distribution == "uniform":
    return jax.random.randint(rng, (batch,), 0, num_train_timesteps, dtype=jnp.int32)
  if distribution != "logit_normal":
    raise ValueError(
      f"distribution: expected one of {TIMESTEP_DISTRIBUTIONS}, found {distribution!r}"
    )
  if not std > 0:
    raise ValueError(f"std: expected a positive spread, found {std}")
  u = jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,)))
  return jnp.minimum(jnp.floor(u * num_train_timesteps), num_train_timesteps - 1).astype(jnp.int32)


def _check_mask(mask: jax.Array, x0: jax.Array) -> None:
  if mask.ndim > x0.ndim or tuple(mask.shape) != tuple(x0.shape[: mask.ndim]):
    raise ValueError(
      f"mask: expected a shape that prefixes x0's shape {tuple(x0.shape)} (e.g. (batch, time) for NTC), "
      f"found {tuple(mask.shape)}."
    )


def diffusion_loss(
  model_fn: ModelFn,
  x0: jax.Array,
  rng: jax.Array,
  schedule: NoiseSchedule,
  prediction_type: str = "epsilon",
  min_snr_gamma: float | None = None,
  mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """Denoising loss: mean over the batch of the (weighted) per-example MSE.

  Args:
    model_fn: `model_fn(x_t, t) -> prediction`, t an int32 (B,) array.
    x0: clean data (B, ...), e.g. NHWC images or NTC sequences.
    rng: key; split into (timestep key, noise key) in that order.
    schedule: the noise schedule.
    prediction_type: 'epsilon', 'sample' or 'v_prediction'.
    min_snr_gamma: if set, weight each example by `min_snr_weight`.
    mask: optional validity mask whose shape prefixes x0's (e.g. (B, T) for
      padded sequences); the MSE averages over valid elements only.

  Returns:
    (loss, aux) where aux holds the unweighted 'mse', the mean 'weight' and
    the per-example 'mse_per_example' and timesteps 't'.
  """
  check_prediction_type(prediction_type)
  if mask is not None:
    _check_mask(mask, x0)
  t_rng, noise_rng = jax.random.split(rng)
  t = sample_timesteps(t_rng, x0.shape[0], schedule.num_train_timesteps)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  x_t = q_sample(schedule, x0, t, noise)
  prediction = model_fn(x_t, t)
  if prediction.shape != x0.shape:
    raise ValueError(
      f"model_fn: expected a prediction of shape {x0.shape}, found {prediction.shape}."
    )
  target = training_target(prediction_type, x0, noise, schedule, t)
  squared_error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
  reduce_axes = tuple(range(1, x0.ndim))
  if mask is None:
    mse = jnp.mean(squared_error, axis=reduce_axes)
  else:
    weights = jnp.broadcast_to(_per_example(mask.astype(jnp.float32), x0), x0.shape)
    mse = jnp.sum(squared_error * weights, axis=reduce_axes) / jnp.maximum(
      jnp.sum(weights, axis=reduce_axes), 1.0
    )
  if min_snr_gamma is None:
    weight = jnp.ones_like(mse)
  else:
    weight = min_snr_weight(schedule, t, min_snr_gamma, prediction_type)
  loss = jnp.mean(weight * mse)
  aux = {"mse": jnp.mean(mse), "weight": jnp.mean(weight), "mse_per_example": mse, "t": t}
  return loss, aux
