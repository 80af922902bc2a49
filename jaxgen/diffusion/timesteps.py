"""Inference timestep grids, computed exactly as diffusers' `set_timesteps`.

`timestep_spacing` follows Lin et al. 2023 ("Common Diffusion Noise Schedules
and Sample Steps are Flawed", Table 2): 'linspace', 'leading' or 'trailing'.
The grids are static numpy arrays (they fix the number of scan steps), in
descending order.
"""

from __future__ import annotations

import numpy as np

TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


def check_num_steps(num_steps: int, num_train_timesteps: int) -> None:
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
    raise ValueError(
      f"num_steps: expected a Python int, found {type(num_steps).__name__} {num_steps!r}."
    )
  if not 1 <= num_steps <= num_train_timesteps:
    raise ValueError(
      f"num_steps: expected an int in [1, num_train_timesteps={num_train_timesteps}], found {num_steps}."
    )


def check_spacing(timestep_spacing: str, steps_offset: int = 0) -> None:
  if timestep_spacing not in TIMESTEP_SPACINGS:
    raise ValueError(
      f"timestep_spacing: expected one of {TIMESTEP_SPACINGS}, found {timestep_spacing!r}."
    )
  if (
    isinstance(steps_offset, bool)
    or not isinstance(steps_offset, (int, np.integer))
    or steps_offset < 0
  ):
    raise ValueError(f"steps_offset: expected an int >= 0, found {steps_offset!r}.")


def _check_grid(
  timesteps: np.ndarray, num_train_timesteps: int, num_steps: int, spacing: str
) -> np.ndarray:
  """Rejects grids that leave [0, T) or repeat a timestep (a zero-length step)."""
  if timesteps.max() >= num_train_timesteps or timesteps.min() < 0:
    raise ValueError(
      f"steps_offset: timestep_spacing={spacing!r} with num_steps={num_steps} gives timesteps "
      f"outside [0, {num_train_timesteps}): {timesteps.min()}..{timesteps.max()}."
    )
  if len(timesteps) > 1 and not np.all(np.diff(timesteps) < 0):
    raise ValueError(
      f"num_steps: timestep_spacing={spacing!r} with num_steps={num_steps} and "
      f"num_train_timesteps={num_train_timesteps} repeats timesteps; use fewer steps or another spacing."
    )
  return timesteps


def discrete_timesteps(
  num_train_timesteps: int, num_steps: int, timestep_spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """Integer grid of DDPMScheduler / DDIMScheduler (int64, descending)."""
  check_num_steps(num_steps, num_train_timesteps)
  check_spacing(timestep_spacing, steps_offset)
  t_max = num_train_timesteps
  if timestep_spacing == "linspace":
    grid = np.linspace(0, t_max - 1, num_steps).round()[::-1].astype(np.int64)
  elif timestep_spacing == "leading":
    ratio = t_max // num_steps
    grid = (np.arange(0, num_steps) * ratio).round()[::-1].astype(np.int64) + steps_offset
  else:
    ratio = t_max / num_steps
    grid = np.round(np.arange(t_max, 0, -ratio)).astype(np.int64) - 1
  return _check_grid(grid, t_max, num_steps, timestep_spacing)


def multistep_timesteps(
  num_train_timesteps: int, num_steps: int, timestep_spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """Integer grid of DPMSolverMultistepScheduler (int64, descending).

  'linspace' and 'leading' space num_steps + 1 points and drop the last, so
  the final step lands on sigma = 0 from a timestep above 0.
  """
  check_num_steps(num_steps, num_train_timesteps)
  check_spacing(timestep_spacing, steps_offset)
  t_max = num_train_timesteps
  if timestep_spacing == "linspace":
    grid = np.linspace(0, t_max - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
  elif timestep_spacing == "leading":
    ratio = t_max // (num_steps + 1)
    grid = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + steps_offset
  else:
    ratio = t_max / num_steps
    grid = np.arange(t_max, 0, -ratio).round().astype(np.int64) - 1
  return _check_grid(grid, t_max, num_steps, timestep_spacing)


def continuous_timesteps(
  num_train_timesteps: int, num_steps: int, timestep_spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """Float32 grid of EulerDiscreteScheduler (descending); 'linspace' gives fractional timesteps."""
  check_num_steps(num_steps, num_train_timesteps)
  check_spacing(timestep_spacing, steps_offset)
  t_max = num_train_timesteps
  if timestep_spacing == "linspace":
    grid = np.linspace(0, t_max - 1, num_steps, dtype=np.float32)[::-1].copy()
  elif timestep_spacing == "leading":
    ratio = t_max // num_steps
    grid = (np.arange(0, num_steps) * ratio).round()[::-1].astype(np.float32) + steps_offset
  else:
    ratio = t_max / num_steps
    grid = np.arange(t_max, 0, -ratio).round().astype(np.float32) - 1
  return _check_grid(grid, t_max, num_steps, timestep_spacing)
