"""Brownian-bridge diffusion (BBDM, Li et al. 2023) as plain functions of arrays.

The bridge runs from the target x0 (t = 0) to the source y (t = T - 1):

  x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps,   delta_t = 2 s (m_t - m_t^2)

with m_t evenly spaced from 0.001 to 0.999 ('linear') and s = `max_var`.
Both ends are the reference's (xuekt98/BBDM, `BrownianBridgeModel`): m never
reaches 0 or 1, so x_0 is x0 up to 0.1 % of y plus noise of variance
0.002 s, and sampling starts from y itself.

A network predicts one of three objectives, as in the reference:
  'grad'   m_t (y - x0) + sqrt(delta_t) eps   (x0 = x_t - prediction)
  'noise'  eps
  'ysubx'  y - x0
trained with an L1 (or L2) loss at t uniform in [0, T).

The sampler is the reference's `p_sample_loop` with skip steps: from
t = T - 1 down in strides of (T - 1) // (sample_step - 2), then 1 and 0
(202 model calls for T = 1000, sample_step = 200). Each step recovers x0
from the prediction (optionally clipped to [-1, 1]) and moves to the next
timestep n with

  x_n = (1 - m_n) x0 + m_n y + sqrt((delta_n - s2) / delta_t) (x_t - (1 - m_t) x0 - m_t y)
        + eta sqrt(s2) z,      s2 = (delta_t - delta_n (1 - m_t)^2 / (1 - m_n)^2) delta_n / delta_t.

The last step (t = 0) returns x0; here it is the same formula with
m_n = delta_n = 0, so every step is one row of a table and the whole loop is
one `jax.lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

OBJECTIVES = ("grad", "noise", "ysubx")
MT_TYPES = ("linear", "sin")
LOSS_TYPES = ("l1", "l2")
# The reference's m_t range ('linear').
M_MIN, M_MAX = 0.001, 0.999

# model_fn(x_t, t) -> prediction of the objective; t is (B,) int32. The caller
# closes over the condition (the reference concatenates y or a context to x_t).
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class BridgeConfigError(ValueError):
  """A Brownian-bridge option (schedule, objective, loss, sampler) out of range."""


@flax.struct.dataclass
class BridgeSchedule:
  """m_t and delta_t, float32 arrays of shape (num_timesteps,), indexed by integer t."""

  m_t: jax.Array
  variance_t: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.m_t.shape[0]


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise BridgeConfigError(f"{name}: expected an int >= {minimum}, found {value!r}")
  return int(value)


def check_objective(objective: str) -> None:
  if objective not in OBJECTIVES:
    raise BridgeConfigError(f"objective: expected one of {OBJECTIVES}, found {objective!r}")


def check_loss_type(loss_type: str) -> None:
  if loss_type not in LOSS_TYPES:
    raise BridgeConfigError(f"loss_type: expected one of {LOSS_TYPES}, found {loss_type!r}")


def m_schedule(num_timesteps: int, mt_type: str = "linear") -> np.ndarray:
  """m_t in float64 with the reference's formulas ('linear' 0.001 -> 0.999, or 'sin')."""
  num_timesteps = _check_int("num_timesteps", num_timesteps, 2)
  if mt_type == "linear":
    return np.linspace(M_MIN, M_MAX, num_timesteps)
  if mt_type == "sin":
    m = np.arange(num_timesteps) / num_timesteps
    m[0] = 0.0005
    return 0.5 * np.sin(np.pi * (m - 0.5)) + 0.5
  raise BridgeConfigError(f"mt_type: expected one of {MT_TYPES}, found {mt_type!r}")


def make_bridge_schedule(
  num_timesteps: int = 1000, mt_type: str = "linear", max_var: float = 1.0
) -> BridgeSchedule:
  """The schedule of the reference: delta_t = 2 max_var (m_t - m_t^2), float64 cast to float32."""
  if isinstance(max_var, bool) or not isinstance(max_var, (int, float)) or not max_var > 0:
    raise BridgeConfigError(f"max_var: expected a number > 0, found {max_var!r}")
  m_t = m_schedule(num_timesteps, mt_type)
  variance_t = 2.0 * (m_t - m_t**2) * max_var
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return BridgeSchedule(m_t=f32(m_t), variance_t=f32(variance_t))


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def q_sample(
  schedule: BridgeSchedule, x0: jax.Array, y: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
  """x_t ~ q(x_t | x0, y) with the given standard-normal noise; t has shape (B,)."""
  m = _per_example(schedule.m_t[t], x0)
  sigma = _per_example(jnp.sqrt(schedule.variance_t[t]), x0)
  return (1.0 - m) * x0 + m * y + sigma * noise


def training_target(
  objective: str,
  schedule: BridgeSchedule,
  x0: jax.Array,
  y: jax.Array,
  t: jax.Array,
  noise: jax.Array,
) -> jax.Array:
  """The regression target of a network trained with `objective`."""
  check_objective(objective)
  if objective == "noise":
    return noise
  if objective == "ysubx":
    return y - x0
  m = _per_example(schedule.m_t[t], x0)
  sigma = _per_example(jnp.sqrt(schedule.variance_t[t]), x0)
  return m * (y - x0) + sigma * noise


def predict_x0(
  objective: str,
  m_t: jax.Array,
  variance_t: jax.Array,
  x_t: jax.Array,
  y: jax.Array,
  prediction: jax.Array,
) -> jax.Array:
  """x0 recovered from a prediction of `objective`; m_t, variance_t broadcast against x_t."""
  check_objective(objective)
  if objective == "grad":
    return x_t - prediction
  if objective == "ysubx":
    return y - prediction
  return (x_t - m_t * y - jnp.sqrt(variance_t) * prediction) / (1.0 - m_t)


def bridge_loss(
  model_fn: ModelFn,
  schedule: BridgeSchedule,
  x0: jax.Array,
  y: jax.Array,
  rng: jax.Array,
  *,
  objective: str = "grad",
  loss_type: str = "l1",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The reference's `p_losses`: t ~ U{0..T-1}, mean |target - prediction| (or squared)."""
  check_objective(objective)
  check_loss_type(loss_type)
  t_rng, noise_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_timesteps)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  x_t = q_sample(schedule, x0, y, t, noise)
  target = training_target(objective, schedule, x0, y, t, noise)
  prediction = model_fn(x_t, t).astype(jnp.float32)
  error = target - prediction
  loss = jnp.mean(jnp.abs(error)) if loss_type == "l1" else jnp.mean(jnp.square(error))
  m = _per_example(schedule.m_t[t], x0)
  x0_recon = predict_x0(objective, m, _per_example(schedule.variance_t[t], x0), x_t, y, prediction)
  return loss, {"loss": loss, "x0_l1": jnp.mean(jnp.abs(x0_recon - x0))}


# -- sampling -------------------------------------------------------------------


def sampling_timesteps(
  num_timesteps: int, sample_step: int, skip_sample: bool = True
) -> np.ndarray:
  """The reference's timesteps, largest first, ending with 0 (its 'linear' sample_type).

  skip_sample: T - 1 down in strides of (T - 1) // (sample_step - 2) while > 1, then 1, 0.
  Otherwise every timestep T - 1 .. 0.
  """
  num_timesteps = _check_int("num_timesteps", num_timesteps, 2)
  if not skip_sample:
    return np.arange(num_timesteps - 1, -1, -1)
  sample_step = _check_int("sample_step", sample_step, 3)
  stride = (num_timesteps - 1) // (sample_step - 2)
  if stride < 1:
    raise BridgeConfigError(
      f"sample_step: expected at most num_timesteps + 1 = {num_timesteps + 1} (a stride of at "
      f"least 1), found {sample_step}"
    )
  mid = np.arange(num_timesteps - 1, 1, -stride)
  return np.concatenate([mid, [1, 0]]).astype(np.int64)


@flax.struct.dataclass
class BridgeStepTable:
  """One row per model call: t and the schedule at t and at the next timestep n.

  The last row (t = 0) has m_next = variance_next = 0, which makes the step
  return the recovered x0, as the reference's final step does.
  """

  t: jax.Array  # (S,) int32
  m_t: jax.Array
  variance_t: jax.Array
  m_next: jax.Array
  variance_next: jax.Array

  @property
  def num_steps(self) -> int:
    return self.t.shape[0]


def make_step_table(schedule: BridgeSchedule, timesteps: np.ndarray) -> BridgeStepTable:
  """The table of `bridge_sample` for `timesteps` (largest first, ending with 0)."""
  timesteps = np.asarray(timesteps)
  if timesteps.ndim != 1 or timesteps.size < 1 or timesteps[-1] != 0:
    raise BridgeConfigError(f"timesteps: expected a 1-D sequence ending with 0, found {timesteps}")
  t = jnp.asarray(timesteps, jnp.int32)
  zero = jnp.zeros((1,), jnp.float32)
  return BridgeStepTable(
    t=t,
    m_t=schedule.m_t[t],
    variance_t=schedule.variance_t[t],
    m_next=jnp.concatenate([schedule.m_t[t[1:]], zero]),
    variance_next=jnp.concatenate([schedule.variance_t[t[1:]], zero]),
  )


def bridge_step(
  objective: str,
  row: BridgeStepTable,
  x_t: jax.Array,
  y: jax.Array,
  prediction: jax.Array,
  noise: jax.Array,
  *,
  eta: float | jax.Array = 1.0,
  clip_denoised: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """One reference `p_sample` from a row of scalars: (x at the next timestep, recovered x0)."""
  m_t, var_t, m_nt, var_nt = row.m_t, row.variance_t, row.m_next, row.variance_next
  x0_recon = predict_x0(objective, m_t, var_t, x_t, y, prediction)
  if clip_denoised:
    x0_recon = jnp.clip(x0_recon, -1.0, 1.0)
  sigma2 = (var_t - var_nt * (1.0 - m_t) ** 2 / (1.0 - m_nt) ** 2) * var_nt / var_t
  # The reference's s2 keeps eta = 1 in the mean; eta only scales the noise.
  residual = x_t - (1.0 - m_t) * x0_recon - m_t * y
  mean = (1.0 - m_nt) * x0_recon + m_nt * y + jnp.sqrt((var_nt - sigma2) / var_t) * residual
  return mean + jnp.sqrt(sigma2) * eta * noise, x0_recon


def check_sampling(sample_step: int, eta: float, objective: str, num_timesteps: int) -> None:
  """Named errors for sampler options, before anything compiles."""
  check_objective(objective)
  sampling_timesteps(num_timesteps, sample_step)
  if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
    raise BridgeConfigError(f"eta: expected a number >= 0, found {eta!r}")


def bridge_sample(
  model_fn: ModelFn,
  schedule: BridgeSchedule,
  y: jax.Array,
  rng: jax.Array,
  *,
  objective: str = "grad",
  sample_step: int = 200,
  skip_sample: bool = True,
  eta: float | jax.Array = 1.0,
  clip_denoised: bool = True,
) -> jax.Array:
  """The reference's sampler from the source y to x0: one `jax.lax.scan` over the steps.

  Jittable; `objective`, `sample_step`, `skip_sample` and `clip_denoised` are static.
  """
  check_objective(objective)
  timesteps = sampling_timesteps(schedule.num_timesteps, sample_step, skip_sample)
  table = make_step_table(schedule, timesteps)
  batch = y.shape[0]

  def body(x, step):
    row, key = step
    prediction = model_fn(x, jnp.full((batch,), row.t, jnp.int32)).astype(x.dtype)
    noise = jax.random.normal(key, x.shape, x.dtype)
    x, _ = bridge_step(
      objective, row, x, y, prediction, noise, eta=eta, clip_denoised=clip_denoised
    )
    return x, None

  keys = jax.random.split(rng, table.num_steps)
  x, _ = jax.lax.scan(body, y, (table, keys))
  return x
