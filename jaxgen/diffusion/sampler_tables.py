"""The per-step coefficient table every sampler is, and the plan that wraps it.

One row of a `StepTable` holds the coefficients of one scanned step (see
`samplers.sampler_step`); a row is a model evaluation, so samplers that
evaluate the model twice per step (Heun) or repeat a timestep (PLMS) simply
have more rows. Multistep samplers keep a small history of past model
outputs (newest first) and an "anchor" sample; which of those a step reads,
and with which weights, is data in the table, so the scanned body never
branches on the step index.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion.gaussian import prediction_coefficients
from jaxgen.diffusion.schedules import NoiseSchedule

# Columns of shape (num_steps, history_size): one weight per history entry.
HISTORY_COLUMNS = ("corrected_from_history", "next_from_history")
# Columns that default to one instead of zero.
ONE_COLUMNS = ("input_scale", "corrected_from_x")


@flax.struct.dataclass
class SamplerState:
  """What one step hands to the next.

  x: current sample (float32); rng: key for the next stochastic step (None
  for deterministic samplers); prev_x0: previous x0 prediction (DPM-Solver++
  only, else None); history: (history_size, *x.shape) past model outputs,
  newest first (multistep samplers, else None); anchor: a saved sample
  (Heun, PLMS, UniPC, else None).
  """

  x: jax.Array
  rng: jax.Array | None = None
  prev_x0: jax.Array | None = None
  history: jax.Array | None = None
  anchor: jax.Array | None = None


@flax.struct.dataclass
class StepTable:
  """Per-step coefficients, each of shape (num_steps,) or (num_steps, history_size)."""

  timestep: jax.Array  # what model_fn receives (int32, or float32 in sigma space)
  input_scale: jax.Array
  x0_from_x: jax.Array
  x0_from_pred: jax.Array
  eps_from_x: jax.Array
  eps_from_pred: jax.Array
  # The history entry this step computes, and whether it enters the history (1) or not (0).
  item_from_x: jax.Array
  item_from_x0: jax.Array
  item_from_pred: jax.Array
  push_item: jax.Array
  # A corrected current sample (UniPC's corrector; x itself elsewhere), what `next_from_x` scales.
  corrected_from_x: jax.Array
  corrected_from_anchor: jax.Array
  corrected_from_history: jax.Array
  next_from_x: jax.Array
  next_from_x0: jax.Array
  next_from_eps: jax.Array
  next_from_prev_x0: jax.Array
  next_from_anchor: jax.Array
  next_from_item: jax.Array
  next_from_history: jax.Array
  set_anchor: jax.Array  # 1: the anchor becomes the (corrected) current sample
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
  history_size: int = flax.struct.field(pytree_node=False, default=0)
  uses_anchor: bool = flax.struct.field(pytree_node=False, default=False)
  corrects: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def num_steps(self) -> int:
    return self.table.timestep.shape[0]


def make_table(num_steps: int, history_size: int = 0, **columns: Any) -> StepTable:
  """Fills unspecified columns with zeros (ONE_COLUMNS with ones); float32."""
  names = [f.name for f in dataclasses.fields(StepTable)]
  unknown = set(columns) - set(names)
  if unknown:
    raise TypeError(f"unknown StepTable columns {sorted(unknown)}")
  filled = {}
  for name in names:
    value = columns.get(name, 1.0 if name in ONE_COLUMNS else 0.0)
    dtype = None if name == "timestep" else jnp.float32
    shape = (num_steps, history_size) if name in HISTORY_COLUMNS else (num_steps,)
    filled[name] = jnp.broadcast_to(jnp.asarray(value, dtype), shape)
  return StepTable(**filled)


def prediction_columns(
  prediction_type: str, alpha: Any, sigma: Any, *, with_eps: bool = False
) -> dict[str, Any]:
  """The x0 columns (and the eps columns, with_eps) of a table at noise levels (alpha_t, sigma_t).

  x0 = x0_from_x * x + x0_from_pred * pred, eps likewise; as `make_table` keywords.
  """
  x0_from_x, x0_from_pred, eps_from_x, eps_from_pred = prediction_coefficients(
    prediction_type, alpha, sigma
  )
  columns = dict(x0_from_x=x0_from_x, x0_from_pred=x0_from_pred)
  if with_eps:
    columns.update(eps_from_x=eps_from_x, eps_from_pred=eps_from_pred)
  return columns


def init_noise_sigma(sigmas: Any, timestep_spacing: str) -> jax.Array:
  """diffusers' init_noise_sigma of a sigma-space sampler, from numpy or traced sigmas.

  The largest sigma, or sqrt(sigma^2 + 1) of it for 'leading' spacing.
  """
  xp = jnp if isinstance(sigmas, jax.Array) else np
  max_sigma = sigmas.max()
  if timestep_spacing in ("linspace", "trailing"):
    return jnp.float32(max_sigma)
  return jnp.float32(xp.sqrt(max_sigma**2 + 1.0))


def check_static_flag(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name}: expected a Python bool, found {type(value).__name__} {value!r}.")


def is_python_zero(value: Any) -> bool:
  return isinstance(value, numbers.Real) and value == 0


def check_clip(clip_sample: bool, clip_sample_range: float) -> float | None:
  check_static_flag("clip_sample", clip_sample)
  if not clip_sample:
    return None
  if not float(clip_sample_range) > 0:
    raise ValueError(f"clip_sample_range: expected a positive number, found {clip_sample_range!r}.")
  return float(clip_sample_range)


def host_alphas_cumprod(schedule: NoiseSchedule, sampler: str) -> np.ndarray:
  """abar per training timestep as float32 numpy, for plans built on the host.

  Samplers whose grids depend on sigma values (Karras sigmas), whose weights
  are integrals (LMS) or whose rows follow a counter (PLMS) build their
  tables with numpy, so their schedule must be concrete.
  """
  try:
    return np.asarray(schedule.alphas_cumprod, np.float32)
  except jax.errors.TracerArrayConversionError:
    raise ValueError(
      f"schedule: the {sampler!r} plan is built on the host and needs a concrete schedule, "
      "found a traced one; build the plan outside jit (make_plan) and run it with run_sampler."
    ) from None


def host_sigmas(schedule: NoiseSchedule, sampler: str) -> np.ndarray:
  """sqrt((1 - abar) / abar) per training timestep, float32 on the host (diffusers' `sigmas`)."""
  abar = host_alphas_cumprod(schedule, sampler)
  return np.sqrt((1.0 - abar) / abar)
