"""Samplers for Gaussian diffusion: the diffusers schedulers Stable Diffusion users expect.

Every sampler here is the same program: one `jax.lax.scan` of `sampler_step`
over a per-step coefficient table (`sampler_tables.StepTable`). The samplers
differ only in the table (and a few static flags), built once from the
schedule (`sampler_plans` holds the multistep ones):

  pred    = model_fn(input_scale * x, timestep)
  x0      = x0_from_x * x + x0_from_pred * pred        (optionally clipped)
  eps     = eps_from_x * x + eps_from_pred * pred
  item    = item_from_x * x + item_from_x0 * x0 + item_from_pred * pred
  H       = [item, H[:-1]] if push_item else H          (history, newest first)
  x'      = corrected_from_x * x + corrected_from_anchor * anchor + sum_k corrected_from_history[k] H[k]
  x_next  = next_from_x * x' + next_from_x0 * x0 + next_from_eps * eps
            + next_from_prev_x0 * prev_x0 + next_from_anchor * anchor
            + next_from_item * item + sum_k next_from_history[k] H[k] + noise_std * z
  anchor  = x' if set_anchor else anchor

so the scanned body has no branch on the step index: warm-up orders,
PLMS's restart, Heun's two evaluations per step and DDPM's noiseless last
step are numbers in the table; terms a sampler never uses are not traced.
The tables reproduce diffusers' schedulers step by step (SAMPLER_SCHEDULERS).

All functions are traceable: call them under `jax.jit`, with `model_fn`
closing over (traced) parameters, e.g.

  @jax.jit
  def generate(params, x_T, rng):
    return sample(lambda x, t: unet.apply(params, x, t), schedule, x_T, rng,
                  sampler="dpm_solver_pp_2m", num_steps=20)

(the plans of 'pndm', 'euler_ancestral', 'heun', 'lms', 'unipc' and
'dpm_solver_pp_2m_karras' are computed on the host: their schedule must not be
a traced argument). `x_T` is standard-normal noise; samplers that work in
sigma space scale it by their initial sigma themselves. The state is float32.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion import sampler_plans
from jaxgen.diffusion import timesteps as timesteps_lib
from jaxgen.diffusion.gaussian import check_prediction_type, prediction_coefficients
from jaxgen.diffusion.sampler_tables import (
  SamplerPlan,
  SamplerState,
  StepTable,
  check_clip,
  check_static_flag,
  init_noise_sigma,
  is_python_zero,
  make_table,
  prediction_columns,
)
from jaxgen.diffusion.schedules import NoiseSchedule

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

# Sampler -> the diffusers scheduler (and options) whose steps it reproduces.
SAMPLER_SCHEDULERS = {
  "ddpm": "DDPMScheduler (variance_type='fixed_small')",
  "ddim": "DDIMScheduler",
  "dpm_solver_pp_2m": "DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint)",
  "euler": "EulerDiscreteScheduler",
  "pndm": "PNDMScheduler (skip_prk_steps=True: PLMS)",
  "euler_ancestral": "EulerAncestralDiscreteScheduler",
  "dpm_solver_pp_2m_karras": "DPMSolverMultistepScheduler (use_karras_sigmas=True)",
  "heun": "HeunDiscreteScheduler",
  "lms": "LMSDiscreteScheduler (order 4)",
  "unipc": "UniPCMultistepScheduler (bh2, order 2, predict_x0)",
}
SAMPLERS = tuple(SAMPLER_SCHEDULERS)
# diffusers' default `timestep_spacing` of the corresponding scheduler.
DEFAULT_SPACING = {
  name: "leading" if name in ("ddpm", "ddim", "pndm") else "linspace" for name in SAMPLERS
}


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
  clip_range = check_clip(clip_sample, clip_sample_range)
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
  # Posterior variance (eq. 7 of Ho et al.), floored as diffusers does; no noise at t = 0.
  variance = jnp.maximum(beta_prod_prev / beta_prod_t * step_beta, 1e-20)
  table = make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.int32),
    **prediction_columns(prediction_type, jnp.sqrt(abar_t), jnp.sqrt(beta_prod_t)),
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
  clip_range = check_clip(clip_sample, clip_sample_range)
  check_static_flag("set_alpha_to_one", set_alpha_to_one)
  stochastic = not is_python_zero(eta)
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
  table = make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.int32),
    **prediction_columns(prediction_type, jnp.sqrt(abar_t), jnp.sqrt(1.0 - abar_t), with_eps=True),
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
  """DPM-Solver++(2M) (Lu et al. 2022), midpoint form, data prediction, on the timestep grid."""
  check_prediction_type(prediction_type)
  grid = timesteps_lib.multistep_timesteps(
    schedule.num_train_timesteps, num_steps, timestep_spacing, steps_offset
  )
  sigmas = jnp.concatenate([_discrete_sigmas(schedule)[grid], jnp.zeros((1,), jnp.float32)])
  return sampler_plans.dpm_solver_pp_2m_table(sigmas, grid, prediction_type)


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
  table = make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.float32),
    input_scale=input_scale,
    x0_from_x=vp_x * input_scale,
    x0_from_pred=vp_pred,
    # x + (x - x0) / sigma * (sigma_next - sigma)
    next_from_x=ratio,
    next_from_x0=1.0 - ratio,
  )
  return SamplerPlan(table, init_noise_sigma(sigma_now, timestep_spacing))


# ---------------------------------------------------------------------------
# The step and the loop.
# ---------------------------------------------------------------------------


def draw_step_noise(rng: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """(next rng, standard-normal float32 noise): how every stochastic step draws."""
  rng, key = jax.random.split(rng)
  return rng, jax.random.normal(key, shape, jnp.float32)


def _weighted_sum(weights: jax.Array, history: jax.Array) -> jax.Array:
  """sum_k weights[k] * history[k], unrolled (elementwise, so no reduced-precision matmul)."""
  return functools.reduce(jnp.add, [weights[k] * history[k] for k in range(history.shape[0])])


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
  history = state.history
  if plan.history_size:
    item = row.item_from_x * x + row.item_from_x0 * x0 + row.item_from_pred * prediction
    pushed = jnp.concatenate([item[None], history[:-1]])
    history = jnp.where(row.push_item > 0, pushed, history)
  current = x  # UniPC corrects the sample it evaluated the model at before stepping from it.
  if plan.corrects:
    current = row.corrected_from_x * x + row.corrected_from_anchor * state.anchor
    current = current + _weighted_sum(row.corrected_from_history, history)
  x_next = row.next_from_x * current + row.next_from_x0 * x0
  if plan.uses_eps:
    # From the unclipped prediction, as diffusers' DDIM does by default.
    x_next = x_next + row.next_from_eps * (row.eps_from_x * x + row.eps_from_pred * prediction)
  if plan.uses_prev_x0:
    x_next = x_next + row.next_from_prev_x0 * state.prev_x0
  if plan.history_size:
    x_next = x_next + row.next_from_item * item + _weighted_sum(row.next_from_history, history)
  anchor = state.anchor
  if plan.uses_anchor:
    x_next = x_next + row.next_from_anchor * anchor
    anchor = jnp.where(row.set_anchor > 0, current, anchor)
  rng = state.rng
  if plan.stochastic:
    rng, noise = draw_step_noise(rng, x.shape)
    x_next = x_next + row.noise_std * noise
  new_state = SamplerState(
    x=x_next, rng=rng, prev_x0=x0 if plan.uses_prev_x0 else None, history=history, anchor=anchor
  )
  return new_state, x0


def init_state(plan: SamplerPlan, x: jax.Array, rng: jax.Array | None = None) -> SamplerState:
  """The state before the first row of `plan` at sample x (float32), with empty history."""
  zeros = jnp.zeros_like(x)
  return SamplerState(
    x=x,
    rng=rng if plan.stochastic else None,
    prev_x0=zeros if plan.uses_prev_x0 else None,
    history=jnp.zeros((plan.history_size,) + x.shape, x.dtype) if plan.history_size else None,
    anchor=zeros if plan.uses_anchor else None,
  )


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
  ...) stack of the state after each row of the table (sigma-space state
  for Euler, Heun, LMS; Heun and PLMS have more rows than num_steps).
  debug_python_loop runs the same step in a Python loop (eager, inspectable).
  """
  check_static_flag("return_trajectory", return_trajectory)
  check_static_flag("debug_python_loop", debug_python_loop)
  x_T = jnp.asarray(x_T)
  if x_T.ndim < 1 or x_T.shape[0] < 1:
    raise ValueError(f"x_T: expected an array with a leading batch axis, found shape {x_T.shape}.")
  if plan.stochastic and rng is None:
    raise ValueError(
      "rng: this sampler draws noise at every step and needs a PRNG key, found None."
    )
  state = init_state(plan, x_T.astype(jnp.float32) * plan.init_noise_sigma, rng)

  def body(state, row):
    state, _ = sampler_step(model_fn, plan, state, row)
    return state, (state.x if return_trajectory else None)

  if debug_python_loop:
    trajectory = []
    for i in range(plan.num_steps):
      state, x_i = body(state, jax.tree.map(lambda column, i=i: column[i], plan.table))
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
  "pndm": sampler_plans.pndm_plan,
  "euler_ancestral": sampler_plans.euler_ancestral_plan,
  "dpm_solver_pp_2m_karras": sampler_plans.dpm_solver_pp_2m_karras_plan,
  "heun": sampler_plans.heun_plan,
  "lms": sampler_plans.lms_plan,
  "unipc": sampler_plans.unipc_plan,
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
  elif not is_python_zero(eta):
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
      (int32; float32 for 'euler', 'euler_ancestral', 'heun' and 'lms',
      whose timesteps are interpolated).
    schedule: the training noise schedule.
    x_T: standard-normal noise (B, ...).
    rng: key for stochastic samplers ('ddpm', 'euler_ancestral', 'ddim'
      with eta > 0); split once per step inside the scan.
    sampler: one of SAMPLERS (see SAMPLER_SCHEDULERS).
    num_steps: diffusers' num_inference_steps, in [1, num_train_timesteps]:
      the model evaluations, except 'pndm' (num_steps + 1) and 'heun'
      (2 num_steps - 1).
    eta: DDIM's noise scale (0: deterministic DDIM, 1: DDPM-like).
    prediction_type: 'epsilon', 'sample' or 'v_prediction'.
    timestep_spacing: 'leading', 'trailing' or 'linspace'; None uses
      diffusers' default of the sampler.
    return_trajectory: also return the state after every step.
    debug_python_loop: run the steps in a Python loop instead of a scan.
    **options: sampler-specific options (steps_offset; clip_sample and
      clip_sample_range for ddpm/ddim; set_alpha_to_one for ddim/pndm;
      truncate_timesteps for dpm_solver_pp_2m_karras).
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
