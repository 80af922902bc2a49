"""Samplers for Gaussian diffusion: DDPM, DDIM, DPM-Solver++ 2M and Euler.

Every sampler here is the same program: one `jax.lax.scan` of `sampler_step`
over a per-step coefficient table. The four samplers differ only in the
table (and a few static flags), built once from the schedule:

  pred    = model_fn(input_scale * x, timestep)
  x0      = x0_from_x * x + x0_from_pred * pred        (optionally clipped)
  eps     = eps_from_x * x + eps_from_pred * pred
  x_next  = next_from_x * x + next_from_x0 * x0 + next_from_eps * eps
            + next_from_prev_x0 * prev_x0 + noise_std * z

so the scanned body has no branch on the step index: first/second-order
switches of DPM-Solver and DDPM's noiseless last step are zeros in the table.
The tables reproduce diffusers' `DDPMScheduler`, `DDIMScheduler`,
`DPMSolverMultistepScheduler` (dpmsolver++, order 2, midpoint,
lower_order_final) and `EulerDiscreteScheduler` step by step.

All functions are traceable: call them under `jax.jit`, with `model_fn`
closing over (traced) parameters, e.g.

  @jax.jit
  def generate(params, x_T, rng):
    return sample(lambda x, t: unet.apply(params, x, t), schedule, x_T, rng,
                  sampler="dpm_solver_pp_2m", num_steps=20)

`x_T` is standard-normal noise; samplers that work in sigma space (Euler)
scale it by their initial sigma themselves. The sampler state is float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion import timesteps as timesteps_lib
from jaxgen.diffusion.gaussian import check_prediction_type, prediction_coefficients
from jaxgen.diffusion.schedules import NoiseSchedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp_2m", "euler")
# diffusers' default `timestep_spacing` of the corresponding scheduler.
DEFAULT_SPACING = {
  "ddpm": "leading",
  "ddim": "leading",
  "dpm_solver_pp_2m": "linspace",
  "euler": "linspace",
}


@flax.struct.dataclass
class SamplerState:
  """What one step hands to the next.

  x: current sample (float32); rng: key for the next stochastic step (None
  for deterministic samplers); prev_x0: previous x0 prediction (multistep
  solvers only, else None).
  """

  x: jax.Array
  rng: jax.Array | None = None
  prev_x0: jax.Array | None = None


@flax.struct.dataclass
class StepTable:
  """Per-step coefficients, each of shape (num_steps,) (one row per scan step)."""

  timestep: jax.Array  # what model_fn receives (int32, or float32 for Euler)
  input_scale: jax.Array
  x0_from_x: jax.Array
  x0_from_pred: jax.Array
  eps_from_x: jax.Array
  eps_from_pred: jax.Array
  next_from_x: jax.Array
  next_from_x0: jax.Array
  next_from_eps: jax.Array
  next_from_prev_x0: jax.Array
  noise_std: jax.Array


@flax.struct.dataclass
class SamplerPlan:
  """A sampler: its step table, its initial noise scale and static switches."""

  table: StepTable
  init_noise_sigma: jax.Array
  clip_sample_range: float | None = flax.struct.field(pytree_node=False, default=None)
  stochastic: bool = flax.struct.field(pytree_node=False, default=False)
  uses_eps: bool = flax.struct.field(pytree_node=False, default=False)
  uses_prev_x0: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def num_steps(self) -> int:
    return self.table.timestep.shape[0]


def _make_table(num_steps: int, **columns: Any) -> StepTable:
  """Fills unspecified columns with zeros (input_scale with ones); float32."""
  names = [f.name for f in dataclasses.fields(StepTable)]
  unknown = set(columns) - set(names)
  if unknown:
    raise TypeError(f"unknown StepTable columns {sorted(unknown)}")
  defaults = {"input_scale": 1.0}
  filled = {}
  for name in names:
    value = columns.get(name, defaults.get(name, 0.0))
    dtype = None if name == "timestep" else jnp.float32
    filled[name] = jnp.broadcast_to(jnp.asarray(value, dtype), (num_steps,))
  return StepTable(**filled)


def _check_static_flag(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}: expected a Python bool, found {type(value).__name__} {value!r}.")


def _is_python_zero(value: Any) -> bool:
  return isinstance(value, numbers.Real) and value == 0


def _check_clip(clip_sample: bool, clip_sample_range: float) -> float | None:
  _check_static_flag("clip_sample", clip_sample)
  if not clip_sample:
    return None
  if not float(clip_sample_range) > 0:
    raise ValueError(f"clip_sample_range: expected a positive number, found {clip_sample_range!r}.")
  return float(clip_sample_range)


# ---------------------------------------------------------------------------
# Step tables.
# ---------------------------------------------------------------------------


def ddpm_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "leading",
  steps_offset: int = 0,
  clip_sample: bool = False,
  clip_sample_range: float = 1.0,
) -> SamplerPlan:
  """Ancestral DDPM sampling (Ho et al. 2020) with variance_type 'fixed_small'.

  Steps between consecutive grid timesteps t > s use the posterior
  q(x_s | x_t, x0) of the skipped chain, as diffusers does.
  """
  check_prediction_type(prediction_type)
  clip_range = _check_clip(clip_sample, clip_sample_range)
  grid = timesteps_lib.discrete_timesteps(
    schedule.num_train_timesteps, num_steps, timestep_spacing, steps_offset
  )
  prev = np.append(grid[1:], -1)
  abar = schedule.alphas_cumprod
  abar_t = abar[grid]
  abar_prev = jnp.where(prev >= 0, abar[np.maximum(prev, 0)], 1.0)
  beta_prod_t, beta_prod_prev = 1.0 - abar_t, 1.0 - abar_prev
  step_alpha = abar_t / abar_prev
  step_beta = 1.0 - step_alpha
  x0_from_x, x0_from_pred, _, _ = prediction_coefficients(
    prediction_type, jnp.sqrt(abar_t), jnp.sqrt(beta_prod_t)
  )
  # Posterior variance (eq. 7 of Ho et al.), floored as diffusers does; no noise at t = 0.
  variance = jnp.maximum(beta_prod_prev / beta_prod_t * step_beta, 1e-20)
  table = _make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.int32),
    x0_from_x=x0_from_x,
    x0_from_pred=x0_from_pred,
    next_from_x0=jnp.sqrt(abar_prev) * step_beta / beta_prod_t,
    next_from_x=jnp.sqrt(step_alpha) * beta_prod_prev / beta_prod_t,
    noise_std=jnp.where(grid > 0, jnp.sqrt(variance), 0.0),
  )
  return SamplerPlan(table, jnp.float32(1.0), clip_sample_range=clip_range, stochastic=True)


def ddim_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  eta: float | jax.Array = 0.0,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "leading",
  steps_offset: int = 0,
  set_alpha_to_one: bool = True,
  clip_sample: bool = False,
  clip_sample_range: float = 1.0,
) -> SamplerPlan:
  """DDIM (Song et al. 2021), eq. 12 with sigma_t(eta) of eq. 16.

  As in diffusers, the previous timestep is t - num_train_timesteps //
  num_steps for every spacing, and the last step goes to abar = 1
  (set_alpha_to_one) or abar_0. A Python `eta == 0` compiles no noise.
  """
  check_prediction_type(prediction_type)
  clip_range = _check_clip(clip_sample, clip_sample_range)
  _check_static_flag("set_alpha_to_one", set_alpha_to_one)
  stochastic = not _is_python_zero(eta)
  if isinstance(eta, numbers.Real) and eta < 0:
    raise ValueError(f"eta: expected a number >= 0, found {eta}.")
  num_train = schedule.num_train_timesteps
  grid = timesteps_lib.discrete_timesteps(num_train, num_steps, timestep_spacing, steps_offset)
  prev = grid - num_train // num_steps
  abar = schedule.alphas_cumprod
  final_abar = 1.0 if set_alpha_to_one else abar[0]
  abar_t = abar[grid]
  abar_prev = jnp.where(prev >= 0, abar[np.maximum(prev, 0)], final_abar)
  variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
  std = jnp.asarray(eta, jnp.float32) * jnp.sqrt(variance)
  coefficients = prediction_coefficients(prediction_type, jnp.sqrt(abar_t), jnp.sqrt(1.0 - abar_t))
  table = _make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.int32),
    x0_from_x=coefficients[0],
    x0_from_pred=coefficients[1],
    eps_from_x=coefficients[2],
    eps_from_pred=coefficients[3],
    next_from_x0=jnp.sqrt(abar_prev),
    # "direction pointing to x_t"; the floor only guards rounding at eta = 1.
    next_from_eps=jnp.sqrt(jnp.maximum(1.0 - abar_prev - std**2, 0.0)),
    noise_std=std,
  )
  return SamplerPlan(
    table, jnp.float32(1.0), clip_sample_range=clip_range, stochastic=stochastic, uses_eps=True
  )


def _discrete_sigmas(schedule: NoiseSchedule) -> jax.Array:
  """sigma_t = sqrt((1 - abar_t) / abar_t): the noise level in x / alpha_t space."""
  abar = schedule.alphas_cumprod
  return jnp.sqrt((1.0 - abar) / abar)


def _interpolate(values: jax.Array, positions: np.ndarray) -> jax.Array:
  """Linear interpolation of values[0..T-1] at static fractional positions (like np.interp)."""
  low = np.clip(np.floor(positions).astype(np.int64), 0, values.shape[0] - 2)
  weight = jnp.asarray(positions.astype(np.float64) - low, jnp.float32)
  return (1.0 - weight) * values[low] + weight * values[low + 1]


def dpm_solver_pp_2m_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """DPM-Solver++(2M) (Lu et al. 2022), midpoint form, data prediction.

  First order on the first step (no history) and on the last (it lands on
  sigma = 0, diffusers' final_sigmas_type 'zero'); second order otherwise.
  """
  check_prediction_type(prediction_type)
  grid = timesteps_lib.multistep_timesteps(
    schedule.num_train_timesteps, num_steps, timestep_spacing, steps_offset
  )
  n = len(grid)
  sigmas = jnp.concatenate([_discrete_sigmas(schedule)[grid], jnp.zeros((1,), jnp.float32)])
  alpha = 1.0 / jnp.sqrt(sigmas**2 + 1.0)
  sigma = sigmas * alpha
  # log-SNR / 2; +inf at the final sigma = 0, where exp(-h) = 0 below.
  lam = jnp.log(alpha) - jnp.log(sigma)
  h = lam[1:] - lam[:-1]
  h_prev = jnp.concatenate([jnp.ones((1,), jnp.float32), lam[1:-1] - lam[:-2]])
  step = np.arange(n)
  second_order = (step > 0) & (step < n - 1)
  # alpha_t (exp(-h) - 1): the weight of the data prediction D0.
  d0_weight = alpha[1:] * (jnp.exp(-h) - 1.0)
  half_inv_r = jnp.where(second_order, 0.5 * h / h_prev, 0.0)  # 0.5 / r0
  x0_from_x, x0_from_pred, _, _ = prediction_coefficients(prediction_type, alpha[:-1], sigma[:-1])
  table = _make_table(
    n,
    timestep=jnp.asarray(grid, jnp.int32),
    x0_from_x=x0_from_x,
    x0_from_pred=x0_from_pred,
    next_from_x=sigma[1:] / sigma[:-1],
    # x_t = (s_t/s_s) x - A (D0 + 0.5 D1), D1 = (m0 - m1) / r0.
    next_from_x0=jnp.where(second_order, -d0_weight * (1.0 + half_inv_r), -d0_weight),
    next_from_prev_x0=jnp.where(second_order, d0_weight * half_inv_r, 0.0),
  )
  return SamplerPlan(table, jnp.float32(1.0), uses_prev_x0=True)


def euler_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """Euler on the probability-flow ODE in sigma space (Karras et al. 2022).

  The state is x / alpha_t; the model sees x / sqrt(sigma^2 + 1) and the
  (possibly fractional) timestep, with sigma linearly interpolated between
  training timesteps as diffusers does.
  """
  check_prediction_type(prediction_type)
  num_train = schedule.num_train_timesteps
  grid = timesteps_lib.continuous_timesteps(num_train, num_steps, timestep_spacing, steps_offset)
  sigma_now = _interpolate(_discrete_sigmas(schedule), grid)
  sigma_next = jnp.concatenate([sigma_now[1:], jnp.zeros((1,), jnp.float32)])
  input_scale = 1.0 / jnp.sqrt(sigma_now**2 + 1.0)
  # Prediction coefficients in VP space, where x_vp = input_scale * x.
  vp_x, vp_pred, _, _ = prediction_coefficients(
    prediction_type, input_scale, sigma_now * input_scale
  )
  ratio = sigma_next / sigma_now
  max_sigma = jnp.max(sigma_now)
  init_sigma = (
    max_sigma if timestep_spacing in ("linspace", "trailing") else jnp.sqrt(max_sigma**2 + 1.0)
  )
  table = _make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.float32),
    input_scale=input_scale,
    x0_from_x=vp_x * input_scale,
    x0_from_pred=vp_pred,
    # x + (x - x0) / sigma * (sigma_next - sigma)
    next_from_x=ratio,
    next_from_x0=1.0 - ratio,
  )
  return SamplerPlan(table, init_sigma)


# ---------------------------------------------------------------------------
# The step and the loop.
# ---------------------------------------------------------------------------


def draw_step_noise(rng: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """(next rng, standard-normal float32 noise): how every stochastic step draws."""
  rng, key = jax.random.split(rng)
  return rng, jax.random.normal(key, shape, jnp.float32)


def sampler_step(
  model_fn: ModelFn, plan: SamplerPlan, state: SamplerState, row: StepTable
) -> tuple[SamplerState, jax.Array]:
  """One step of any sampler; `row` is one row of `plan.table`. Returns (state, x0 prediction)."""
  x = state.x
  timestep = jnp.broadcast_to(row.timestep, (x.shape[0],))
  prediction = model_fn(row.input_scale * x, timestep).astype(jnp.float32)
  x0 = row.x0_from_x * x + row.x0_from_pred * prediction
  if plan.clip_sample_range is not None:
    x0 = jnp.clip(x0, -plan.clip_sample_range, plan.clip_sample_range)
  x_next = row.next_from_x * x + row.next_from_x0 * x0
  if plan.uses_eps:
    # From the unclipped prediction, as diffusers' DDIM does by default.
    x_next = x_next + row.next_from_eps * (row.eps_from_x * x + row.eps_from_pred * prediction)
  if plan.uses_prev_x0:
    x_next = x_next + row.next_from_prev_x0 * state.prev_x0
  rng = state.rng
  if plan.stochastic:
    rng, noise = draw_step_noise(rng, x.shape)
    x_next = x_next + row.noise_std * noise
  new_state = SamplerState(x=x_next, rng=rng, prev_x0=x0 if plan.uses_prev_x0 else None)
  return new_state, x0


def run_sampler(
  model_fn: ModelFn,
  plan: SamplerPlan,
  x_T: jax.Array,
  rng: jax.Array | None = None,
  *,
  return_trajectory: bool = False,
  debug_python_loop: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Runs `plan` from standard-normal noise x_T (B, ...).

  Returns the final sample, and with return_trajectory the (num_steps, B,
  ...) stack of the state after each step (sigma-space state for Euler).
  debug_python_loop runs the same step in a Python loop (eager, inspectable).
  """
  _check_static_flag("return_trajectory", return_trajectory)
  _check_static_flag("debug_python_loop", debug_python_loop)
  x_T = jnp.asarray(x_T)
  if x_T.ndim < 1 or x_T.shape[0] < 1:
    raise ValueError(f"x_T: expected an array with a leading batch axis, found shape {x_T.shape}.")
  if plan.stochastic and rng is None:
    raise ValueError(
      "rng: this sampler draws noise at every step and needs a PRNG key, found None."
    )
  x = x_T.astype(jnp.float32) * plan.init_noise_sigma
  state = SamplerState(
    x=x,
    rng=rng if plan.stochastic else None,
    prev_x0=jnp.zeros_like(x) if plan.uses_prev_x0 else None,
  )

  def body(state, row):
    state, _ = sampler_step(model_fn, plan, state, row)
    return state, (state.x if return_trajectory else None)

  if debug_python_loop:
    trajectory = []
    for i in range(plan.num_steps):
      state, x_i = body(state, jax.tree.map(lambda column: column[i], plan.table))
      trajectory.append(x_i)
    trajectory = jnp.stack(trajectory) if return_trajectory else None
  else:
    state, trajectory = jax.lax.scan(body, state, plan.table)
  return (state.x, trajectory) if return_trajectory else state.x


# ---------------------------------------------------------------------------
# Public samplers.
# ---------------------------------------------------------------------------


_PLANS = {
  "ddpm": ddpm_plan,
  "ddim": ddim_plan,
  "dpm_solver_pp_2m": dpm_solver_pp_2m_plan,
  "euler": euler_plan,
}


def make_plan(
  schedule: NoiseSchedule,
  sampler: str = "ddim",
  num_steps: int = 50,
  *,
  eta: float | jax.Array = 0.0,
  prediction_type: str = "epsilon",
  timestep_spacing: str | None = None,
  **options: Any,
) -> SamplerPlan:
  """The SamplerPlan of a named sampler; timestep_spacing=None takes diffusers' default for it."""
  if sampler not in _PLANS:
    raise ValueError(f"sampler: expected one of {SAMPLERS}, found {sampler!r}.")
  timesteps_lib.check_num_steps(num_steps, schedule.num_train_timesteps)
  if sampler == "ddim":
    options["eta"] = eta
  elif not _is_python_zero(eta):
    raise ValueError(
      f"eta: only the 'ddim' sampler takes eta, found eta={eta!r} for sampler {sampler!r}."
    )
  spacing = DEFAULT_SPACING[sampler] if timestep_spacing is None else timestep_spacing
  return _PLANS[sampler](
    schedule, num_steps, prediction_type=prediction_type, timestep_spacing=spacing, **options
  )


def sample(
  model_fn: ModelFn,
  schedule: NoiseSchedule,
  x_T: jax.Array,
  rng: jax.Array | None = None,
  *,
  sampler: str = "ddim",
  num_steps: int = 50,
  eta: float | jax.Array = 0.0,
  prediction_type: str = "epsilon",
  timestep_spacing: str | None = None,
  return_trajectory: bool = False,
  debug_python_loop: bool = False,
  **options: Any,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Generates samples from noise x_T with a named sampler.

  Args:
    model_fn: `model_fn(x, t) -> prediction`, t a (B,) array of timesteps
      (int32; float32 for 'euler', whose timesteps are interpolated).
    schedule: the training noise schedule.
    x_T: standard-normal noise (B, ...).
    rng: key for stochastic samplers ('ddpm', 'ddim' with eta > 0); split
      once per step inside the scan.
    sampler: one of 'ddpm', 'ddim', 'dpm_solver_pp_2m', 'euler'.
    num_steps: number of model evaluations, in [1, num_train_timesteps].
    eta: DDIM's noise scale (0: deterministic DDIM, 1: DDPM-like).
    prediction_type: 'epsilon', 'sample' or 'v_prediction'.
    timestep_spacing: 'leading', 'trailing' or 'linspace'; None uses
      diffusers' default of the sampler.
    return_trajectory: also return the state after every step.
    debug_python_loop: run the steps in a Python loop instead of a scan.
    **options: sampler-specific options (steps_offset, clip_sample,
      clip_sample_range, set_alpha_to_one).
  """
  plan = make_plan(
    schedule,
    sampler,
    num_steps,
    eta=eta,
    prediction_type=prediction_type,
    timestep_spacing=timestep_spacing,
    **options,
  )
  return run_sampler(
    model_fn,
    plan,
    x_T,
    rng,
    return_trajectory=return_trajectory,
    debug_python_loop=debug_python_loop,
  )


# One name per sampler for code that fixes its sampler: `sample` with `sampler` (and, for
# DPM-Solver++, diffusers' usual 20 steps) bound, so every sampler has one code path.
ddpm_sample = functools.partial(sample, sampler="ddpm")
ddim_sample = functools.partial(sample, sampler="ddim")
dpm_solver_pp_2m_sample = functools.partial(sample, sampler="dpm_solver_pp_2m", num_steps=20)
euler_sample = functools.partial(sample, sampler="euler")


class SamplingOptionError(ValueError):
  """A sampling option is out of range; `option` names the keyword (for a CLI to name its flag)."""

  def __init__(self, option: str, message: str):
    super().__init__(f"{option}: {message}")
    self.option = option


def check_sampling_options(
  sampler: Any, num_steps: Any, guidance_scale: Any, num_train_timesteps: int
) -> None:
  """SamplingOptionErrors for options the samplers would reject, before anything compiles."""
  if sampler not in SAMPLERS:
    raise SamplingOptionError("sampler", f"expected one of {SAMPLERS}, found {sampler!r}")
  if (
    isinstance(num_steps, bool)
    or not isinstance(num_steps, numbers.Integral)
    or not 0 < num_steps <= num_train_timesteps
  ):
    raise SamplingOptionError(
      "num_steps",
      f"expected a positive number of steps at most {num_train_timesteps} (the "
      f"training timesteps, diffusion.num_train_timesteps), found {num_steps!r}",
    )
  if (
    isinstance(guidance_scale, bool)
    or not isinstance(guidance_scale, numbers.Real)
    or not math.isfinite(guidance_scale)
    or guidance_scale < 0
  ):
    raise SamplingOptionError(
      "guidance_scale", f"expected a finite scale >= 0, found {guidance_scale!r}"
    )
