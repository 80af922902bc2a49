"""Step tables of the multistep and sigma-space samplers Stable Diffusion users expect.

Each builder reproduces one diffusers scheduler (0.42) row by row, as a
`sampler_tables.StepTable` for the one scanned step of `samplers`:

  pndm_plan                     PNDMScheduler, skip_prk_steps=True (PLMS)
  euler_ancestral_plan          EulerAncestralDiscreteScheduler
  dpm_solver_pp_2m_karras_plan  DPMSolverMultistepScheduler, use_karras_sigmas=True
  heun_plan                     HeunDiscreteScheduler
  lms_plan                      LMSDiscreteScheduler (order 4)
  unipc_plan                    UniPCMultistepScheduler (bh2, order 2, predict_x0)

Coefficients are computed on the host in float64 from diffusers' float32
sigmas and stored as float32. Samplers in sigma space (Euler ancestral,
Heun, LMS) keep the state x / alpha_t and feed the model x / sqrt(sigma^2 + 1)
at fractional timesteps, like `samplers.euler_plan`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion import timesteps as timesteps_lib
from jaxgen.diffusion.gaussian import check_prediction_type
from jaxgen.diffusion.sampler_tables import (
  SamplerPlan,
  host_alphas_cumprod,
  host_sigmas,
  init_noise_sigma,
  make_table,
  prediction_columns,
)
from jaxgen.diffusion.schedules import NoiseSchedule

# Adams-Bashforth weights of PLMS for 1..4 stored model outputs, newest first.
PLMS_WEIGHTS = (
  (1.0,),
  (1.5, -0.5),
  (23 / 12, -16 / 12, 5 / 12),
  (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
LMS_ORDER = 4
KARRAS_RHO = 7.0


def _sigma_space_columns(prediction_type: str, sigma: np.ndarray) -> dict[str, np.ndarray]:
  """The model's input scale and x0 = a * x + b * pred for the sigma-space state x.

  diffusers' formulas, as `make_table` keywords (input_scale, x0_from_x, x0_from_pred).
  """
  check_prediction_type(prediction_type)
  if prediction_type == "epsilon":
    a, b = np.ones_like(sigma), -sigma
  elif prediction_type == "sample":
    a, b = np.zeros_like(sigma), np.ones_like(sigma)
  else:
    a, b = 1.0 / (sigma**2 + 1.0), -sigma / np.sqrt(sigma**2 + 1.0)
  return dict(input_scale=1.0 / np.sqrt(sigma**2 + 1.0), x0_from_x=a, x0_from_pred=b)


def _derivative_item(sigma: np.ndarray) -> dict[str, np.ndarray]:
  """History item d = (x - x0) / sigma, pushed every row (Heun, LMS); `make_table` keywords."""
  return dict(item_from_x=1.0 / sigma, item_from_x0=-1.0 / sigma, push_item=1.0)


def _interpolated_sigmas(schedule: NoiseSchedule, grid: np.ndarray, sampler: str) -> np.ndarray:
  """Sigmas at (fractional) timesteps with a final 0 appended, float64 of float32 values."""
  table = host_sigmas(schedule, sampler)
  sigmas = np.interp(grid, np.arange(len(table)), table)
  return np.append(sigmas, 0.0).astype(np.float32).astype(np.float64)


def _sigma_grid(
  schedule: NoiseSchedule, num_steps: int, timestep_spacing: str, steps_offset: int, sampler: str
) -> tuple[np.ndarray, np.ndarray]:
  """A sigma-space sampler's (fractional) timesteps and their sigmas, a final 0 appended."""
  grid = timesteps_lib.continuous_timesteps(
    schedule.num_train_timesteps, num_steps, timestep_spacing, steps_offset
  )
  return grid, _interpolated_sigmas(schedule, grid, sampler)


# ---------------------------------------------------------------------------
# PLMS.
# ---------------------------------------------------------------------------


def pndm_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "leading",
  steps_offset: int = 0,
  set_alpha_to_one: bool = False,
) -> SamplerPlan:
  """Pseudo linear multistep (PLMS, Liu et al. 2022) as diffusers' PNDM with skip_prk_steps.

  num_steps + 1 model evaluations: the second grid timestep is evaluated
  twice. Row 0 takes a first-order step and saves its sample; row 1
  averages its model output with row 0's and restarts from the saved
  sample (a second-order step, its output is not kept); later rows combine
  up to 4 kept outputs with Adams-Bashforth weights. Each step is formula
  (9) of the PNDM paper from t to t - num_train_timesteps // num_steps.
  """
  if prediction_type not in ("epsilon", "v_prediction"):
    raise ValueError(
      f"prediction_type: the 'pndm' sampler takes 'epsilon' or 'v_prediction', found "
      f"{prediction_type!r}."
    )
  num_train = schedule.num_train_timesteps
  grid = timesteps_lib.discrete_timesteps(num_train, num_steps, timestep_spacing, steps_offset)
  rows = np.concatenate([grid[:1], grid[1:2], grid[1:]]) if num_steps > 1 else grid
  abar = host_alphas_cumprod(schedule, "pndm").astype(np.float64)
  final_abar = 1.0 if set_alpha_to_one else abar[0]
  ratio = num_train // num_steps
  columns = {name: np.zeros(len(rows)) for name in ("from_x", "from_anchor", "from_item")}
  history = np.zeros((len(rows), 4))
  stored = 0
  for row, t in enumerate(rows):
    t, t_prev = (t + ratio, t) if row == 1 else (t, t - ratio)
    if t >= num_train:
      raise ValueError(
        f"timestep_spacing: PLMS with {timestep_spacing!r} spacing and num_steps={num_steps} "
        f"restarts from timestep {t} >= num_train_timesteps={num_train}."
      )
    a_t, a_prev = abar[t], abar[t_prev] if t_prev >= 0 else final_abar
    sample_weight = np.sqrt(a_prev / a_t)
    output_weight = -(a_prev - a_t) / (
      a_t * np.sqrt(1 - a_prev) + np.sqrt(a_t * (1 - a_t) * a_prev)
    )
    if prediction_type == "v_prediction":  # eps = sqrt(abar) v + sqrt(1 - abar) x, at this t.
      sample_weight = sample_weight + output_weight * np.sqrt(1 - a_t)
      output_weight = output_weight * np.sqrt(a_t)
    if row == 1:  # (this output + the stored one) / 2, from the saved sample.
      columns["from_anchor"][row] = sample_weight
      columns["from_item"][row] = 0.5 * output_weight
      history[row, 0] = 0.5 * output_weight
    else:
      stored = min(stored + 1, 4)
      columns["from_x"][row] = sample_weight
      history[row, :stored] = output_weight * np.asarray(PLMS_WEIGHTS[stored - 1])
  abar_rows = abar[np.asarray(rows, np.int64)]
  table = make_table(
    len(rows),
    history_size=4,
    timestep=jnp.asarray(rows, jnp.int32),
    **prediction_columns(prediction_type, jnp.sqrt(abar_rows), jnp.sqrt(1 - abar_rows)),
    item_from_pred=1.0,
    push_item=np.arange(len(rows)) != 1,
    next_from_x=columns["from_x"],
    next_from_anchor=columns["from_anchor"],
    next_from_item=columns["from_item"],
    next_from_history=history,
    set_anchor=np.arange(len(rows)) == 0,
  )
  return SamplerPlan(table, jnp.float32(1.0), history_size=4, uses_anchor=True)


# ---------------------------------------------------------------------------
# Sigma-space samplers: Euler ancestral, Heun, LMS.
# ---------------------------------------------------------------------------


def euler_ancestral_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """Euler ancestral (k-diffusion): an Euler step down to sigma_down, then fresh noise sigma_up.

  sigma_up^2 + sigma_down^2 = sigma_next^2, so the state lands at the next
  noise level with part of its noise resampled at every step.
  """
  grid, sigmas = _sigma_grid(schedule, num_steps, timestep_spacing, steps_offset, "euler_ancestral")
  sigma, sigma_next = sigmas[:-1], sigmas[1:]
  sigma_up = np.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
  sigma_down = np.sqrt(sigma_next**2 - sigma_up**2)
  ratio = sigma_down / sigma
  table = make_table(
    len(grid),
    timestep=jnp.asarray(grid, jnp.float32),
    **_sigma_space_columns(prediction_type, sigma),
    # x + (x - x0) / sigma * (sigma_down - sigma)
    next_from_x=ratio,
    next_from_x0=1.0 - ratio,
    noise_std=sigma_up,
  )
  return SamplerPlan(table, init_noise_sigma(sigmas, timestep_spacing), stochastic=True)


def heun_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """Heun's method (Karras et al. 2022, Algorithm 1 without churn): 2 * num_steps - 1 rows.

  A first-order row saves its sample and derivative d1 and takes an Euler
  step; the next row evaluates the model there (derivative d2) and steps
  from the saved sample with (d1 + d2) / 2. The last step, to sigma = 0, is
  a plain Euler step, as in diffusers.
  """
  grid, sigmas = _sigma_grid(schedule, num_steps, timestep_spacing, steps_offset, "heun")
  # Rows (timestep, sigma the model sees, first order?, weights of d1 and d2 / of d1 alone).
  rows = []
  for i in range(num_steps):
    dt = sigmas[i + 1] - sigmas[i]
    rows.append((grid[i], sigmas[i], True, (dt, 0.0)))  # x + dt * d1
    if i < num_steps - 1:  # anchor + dt * (d2 + d1) / 2, d2 at the Euler point
      rows.append((grid[i + 1], sigmas[i + 1], False, (dt / 2, dt / 2)))
  timestep, sigma, first, history = (np.asarray(column) for column in zip(*rows))
  table = make_table(
    len(rows),
    history_size=2,
    timestep=jnp.asarray(timestep, jnp.float32),
    **_sigma_space_columns(prediction_type, sigma),
    **_derivative_item(sigma),
    next_from_x=first,
    next_from_anchor=~first,
    next_from_history=history,
    set_anchor=first,
  )
  return SamplerPlan(
    table, init_noise_sigma(sigmas, timestep_spacing), history_size=2, uses_anchor=True
  )


def _lms_weights(sigmas: np.ndarray, step: int, order: int) -> np.ndarray:
  """Integrals over [sigma_step, sigma_step+1] of the Lagrange basis on the last `order` sigmas."""
  nodes = sigmas[step - np.arange(order)]
  weights = np.zeros(order)
  for j in range(order):
    basis = np.polynomial.Polynomial([1.0])
    for k in range(order):
      if k != j:
        basis = basis * np.polynomial.Polynomial([-nodes[k], 1.0]) / (nodes[j] - nodes[k])
    antiderivative = basis.integ()
    weights[j] = antiderivative(sigmas[step + 1]) - antiderivative(sigmas[step])
  return weights


def lms_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """Linear multistep (Karras et al. 2022's LMS) of order 4 on the derivatives (x - x0) / sigma.

  The weights integrate the Lagrange polynomial through the last (up to 4)
  derivatives over the step exactly (diffusers integrates numerically).
  """
  grid, sigmas = _sigma_grid(schedule, num_steps, timestep_spacing, steps_offset, "lms")
  sigma = sigmas[:-1]
  history = np.zeros((num_steps, LMS_ORDER))
  for i in range(num_steps):
    order = min(i + 1, LMS_ORDER)
    history[i, :order] = _lms_weights(sigmas, i, order)
  table = make_table(
    num_steps,
    history_size=LMS_ORDER,
    timestep=jnp.asarray(grid, jnp.float32),
    **_sigma_space_columns(prediction_type, sigma),
    **_derivative_item(sigma),
    next_from_x=1.0,
    next_from_history=history,
  )
  return SamplerPlan(table, init_noise_sigma(sigmas, timestep_spacing), history_size=LMS_ORDER)


# ---------------------------------------------------------------------------
# Multistep solvers in (alpha_t, sigma_t) space: DPM-Solver++ 2M, UniPC.
# ---------------------------------------------------------------------------


def _vp_from_sigmas(sigmas):
  """alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) (+inf at sigma = 0)."""
  xp = jnp if isinstance(sigmas, jax.Array) else np
  alpha = 1.0 / xp.sqrt(sigmas**2 + 1.0)
  sigma = sigmas * alpha
  with np.errstate(divide="ignore"):
    lam = xp.log(alpha) - xp.log(sigma)
  return alpha, sigma, lam


def dpm_solver_pp_2m_table(sigmas: jax.Array, timestep, prediction_type: str) -> SamplerPlan:
  """DPM-Solver++(2M) over sigmas (len(timestep) + 1 of them, the last 0); traceable in sigmas.

  First order on the first step (no history) and on the last (it lands on
  sigma = 0, diffusers' final_sigmas_type 'zero'); second order otherwise.
  """
  n = len(timestep)
  alpha, sigma, lam = _vp_from_sigmas(sigmas)
  h = lam[1:] - lam[:-1]
  h_prev = jnp.concatenate([jnp.ones((1,), jnp.float32), lam[1:-1] - lam[:-2]])
  step = np.arange(n)
  second_order = (step > 0) & (step < n - 1)
  # alpha_t (exp(-h) - 1): the weight of the data prediction D0.
  d0_weight = alpha[1:] * (jnp.exp(-h) - 1.0)
  half_inv_r = jnp.where(second_order, 0.5 * h / h_prev, 0.0)  # 0.5 / r0
  table = make_table(
    n,
    timestep=jnp.asarray(timestep, jnp.int32),
    **prediction_columns(prediction_type, alpha[:-1], sigma[:-1]),
    next_from_x=sigma[1:] / sigma[:-1],
    # x_t = (s_t/s_s) x - A (D0 + 0.5 D1), D1 = (m0 - m1) / r0.
    next_from_x0=jnp.where(second_order, -d0_weight * (1.0 + half_inv_r), -d0_weight),
    next_from_prev_x0=jnp.where(second_order, d0_weight * half_inv_r, 0.0),
  )
  return SamplerPlan(table, jnp.float32(1.0), uses_prev_x0=True)


def _sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
  """Fractional training timestep of each sigma, interpolating log sigma (diffusers' rule)."""
  log_sigma = np.log(np.maximum(sigma, 1e-10))
  dists = log_sigma - log_sigmas[:, None]
  low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
  w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
  return (1 - w) * low + w * (low + 1)


def dpm_solver_pp_2m_karras_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
  truncate_timesteps: bool = False,
) -> SamplerPlan:
  """DPM-Solver++(2M) on Karras et al.'s sigmas (rho = 7) between the schedule's extremes.

  The model sees each sigma's interpolated timestep, rounded (truncated
  with truncate_timesteps, as diffusers does for 'squaredcos_cap_v2');
  timestep_spacing and steps_offset do not apply and are only validated.
  """
  check_prediction_type(prediction_type)
  timesteps_lib.check_num_steps(num_steps, schedule.num_train_timesteps)
  timesteps_lib.check_spacing(timestep_spacing, steps_offset)
  train_sigmas = host_sigmas(schedule, "dpm_solver_pp_2m_karras")
  ramp = np.linspace(0, 1, num_steps)
  max_inv, min_inv = (float(s) ** (1 / KARRAS_RHO) for s in (train_sigmas[-1], train_sigmas[0]))
  sigmas = (max_inv + ramp * (min_inv - max_inv)) ** KARRAS_RHO
  timestep = _sigma_to_t(sigmas, np.log(train_sigmas))
  timestep = np.trunc(timestep) if truncate_timesteps else np.round(timestep)
  sigmas = jnp.asarray(np.append(sigmas, 0.0), jnp.float32)
  return dpm_solver_pp_2m_table(sigmas, timestep.astype(np.int64), prediction_type)


def _unipc_rhos(h: float, order: int, r1: float | None) -> tuple[float, np.ndarray]:
  """B(h) = expm1(-h) (bh2) and UniPC's weights: rhos_p (predictor) or rhos_c (corrector) solve."""
  hh = -h
  h_phi_1 = np.expm1(hh)
  b, h_phi_k, factorial = [], h_phi_1 / hh - 1.0, 1
  for i in range(1, order + 1):
    b.append(h_phi_k * factorial / h_phi_1)
    factorial *= i + 1
    h_phi_k = h_phi_k / hh - 1.0 / factorial
  if order == 1:
    return h_phi_1, np.array([0.5])
  return h_phi_1, np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), np.array(b))


def unipc_plan(
  schedule: NoiseSchedule,
  num_steps: int,
  *,
  prediction_type: str = "epsilon",
  timestep_spacing: str = "linspace",
  steps_offset: int = 0,
) -> SamplerPlan:
  """UniPC (Zhao et al. 2023): bh2, order 2, data prediction, corrector at every step.

  Row i corrects the sample it was evaluated at with its own x0 prediction
  (UniC, from the anchor = the previous corrected sample), then predicts
  the next sample from the corrected one (UniP). History: x0 predictions of
  this row and the two before. Orders warm up (1, 2, ...) and the last
  step is first order, as diffusers' lower_order_final.
  """
  check_prediction_type(prediction_type)
  grid = timesteps_lib.multistep_timesteps(
    schedule.num_train_timesteps, num_steps, timestep_spacing, steps_offset
  )
  n = len(grid)
  sigmas = _interpolated_sigmas(schedule, grid, "unipc")
  alpha, sigma, lam = _vp_from_sigmas(sigmas)
  order = np.minimum(np.minimum(2, n - np.arange(n)), np.arange(n) + 1)
  corrected_from_anchor = np.zeros(n)
  corrected_history = np.zeros((n, 3))  # weights of H0 = this x0, H1 = previous x0, H2
  next_history = np.zeros((n, 3))
  next_from_x = np.zeros(n)
  with np.errstate(divide="ignore", invalid="ignore"):
    for i in range(n):
      if i > 0:  # UniC from the anchor (the corrected sample of row i - 1) to sigma_i.
        h = lam[i] - lam[i - 1]
        r1 = (lam[i - 2] - lam[i - 1]) / h if order[i - 1] == 2 else None
        b_h, rhos = _unipc_rhos(h, order[i - 1], r1)
        a = alpha[i]
        corrected_from_anchor[i] = sigma[i] / sigma[i - 1]
        weights = [-a * b_h * rhos[-1], -a * b_h + a * b_h * rhos[-1], 0.0]
        if r1 is not None:  # D1 = (x0_{i-2} - x0_{i-1}) / r1
          weights[1] += a * b_h * rhos[0] / r1
          weights[2] -= a * b_h * rhos[0] / r1
        corrected_history[i] = weights
      h = lam[i + 1] - lam[i]  # UniP from the corrected sample to sigma_{i+1}.
      a = alpha[i + 1]
      b_h = np.expm1(-h)
      next_from_x[i] = sigma[i + 1] / sigma[i]
      next_history[i, 0] = -a * b_h
      if order[i] == 2:  # rhos_p = 0.5, D1 = (x0_{i-1} - x0_i) / r1
        r1 = (lam[i - 1] - lam[i]) / h
        next_history[i, 0] += a * b_h * 0.5 / r1
        next_history[i, 1] = -a * b_h * 0.5 / r1
  table = make_table(
    n,
    history_size=3,
    timestep=jnp.asarray(grid, jnp.int32),
    **prediction_columns(prediction_type, alpha[:-1], sigma[:-1]),
    item_from_x0=1.0,
    push_item=1.0,
    corrected_from_x=np.arange(n) == 0,
    corrected_from_anchor=corrected_from_anchor,
    corrected_from_history=corrected_history,
    next_from_x=next_from_x,
    next_from_history=next_history,
    set_anchor=1.0,
  )
  return SamplerPlan(table, jnp.float32(1.0), history_size=3, uses_anchor=True, corrects=True)
