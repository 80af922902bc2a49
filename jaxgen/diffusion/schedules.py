"""Noise schedules of discrete-time Gaussian diffusion (DDPM, Ho et al. 2020).

Betas are computed in float64 numpy with the same formulas as diffusers'
schedulers (``beta_schedule`` = ``linear``, ``scaled_linear``,
``squaredcos_cap_v2``) and cast to float32 once, so a model trained here
samples with diffusers' schedulers and vice versa.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULE_KINDS = ("linear", "scaled_linear", "squaredcos_cap_v2")
# diffusers' names first; "cosine" is accepted as an alias of the GLIDE schedule.
_ALIASES = {"cosine": "squaredcos_cap_v2"}
# diffusers' defaults for every beta_schedule.
DEFAULT_BETA_START = 0.0001
DEFAULT_BETA_END = 0.02
COSINE_MAX_BETA = 0.999


@flax.struct.dataclass
class NoiseSchedule:
  """Per-timestep quantities of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).

  All fields are float32 arrays of shape (num_train_timesteps,), indexed by
  the integer training timestep t in [0, num_train_timesteps).
  """

  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array

  @property
  def num_train_timesteps(self) -> int:
    return self.betas.shape[0]


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """Betas evenly spaced from beta_start to beta_end (DDPM), float64."""
  return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)


def scaled_linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
  """sqrt(beta) evenly spaced (latent diffusion / Stable Diffusion), float64."""
  return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_train_timesteps: int, max_beta: float = COSINE_MAX_BETA) -> np.ndarray:
  """GLIDE / improved-DDPM cosine schedule (diffusers' ``squaredcos_cap_v2``), float64."""

  def alpha_bar(s: float) -> float:
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

  steps = np.arange(num_train_timesteps, dtype=np.float64)
  t1 = steps / num_train_timesteps
  t2 = (steps + 1) / num_train_timesteps
  ratios = np.array([alpha_bar(b) / alpha_bar(a) for a, b in zip(t1, t2)])
  return np.minimum(1.0 - ratios, max_beta)


def schedule_from_betas(betas: np.ndarray | jax.Array) -> NoiseSchedule:
  """Builds a NoiseSchedule from betas; derived quantities are computed in float64."""
  betas = np.asarray(betas, dtype=np.float32)
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas: expected a non-empty 1-D array, found shape {betas.shape}.")
  if not np.all((betas > 0) & (betas < 1)):
    raise ValueError(
      f"betas: expected every value in (0, 1), found min {betas.min()} and max {betas.max()}."
    )
  # Derive from the float32 betas (the ones diffusers holds), in float64.
  alphas = 1.0 - betas.astype(np.float64)
  alphas_cumprod = np.cumprod(alphas)
  f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
  return NoiseSchedule(
    betas=f32(betas),
    alphas=f32(alphas),
    alphas_cumprod=f32(alphas_cumprod),
    sqrt_alphas_cumprod=f32(np.sqrt(alphas_cumprod)),
    sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - alphas_cumprod)),
  )


def make_betas(
  kind: str,
  num_train_timesteps: int = 1000,
  beta_start: float | None = None,
  beta_end: float | None = None,
) -> np.ndarray:
  """Betas of a named schedule as float64 numpy (diffusers' formulas)."""
  kind = _ALIASES.get(kind, kind)
  if kind not in SCHEDULE_KINDS:
    raise ValueError(f"kind: expected one of {SCHEDULE_KINDS} (or 'cosine'), found {kind!r}.")
  if isinstance(num_train_timesteps, bool) or not isinstance(
    num_train_timesteps, (int, np.integer)
  ):
    raise ValueError(
      f"num_train_timesteps: expected a positive int, found {num_train_timesteps!r}."
    )
  if num_train_timesteps < 2:
    raise ValueError(f"num_train_timesteps: expected an int >= 2, found {num_train_timesteps}.")
  if kind == "squaredcos_cap_v2":
    if beta_start is not None or beta_end is not None:
      raise ValueError(
        "beta_start/beta_end: the cosine schedule ('squaredcos_cap_v2') takes neither, found "
        f"beta_start={beta_start!r}, beta_end={beta_end!r}."
      )
    return cosine_betas(num_train_timesteps)
  beta_start = DEFAULT_BETA_START if beta_start is None else float(beta_start)
  beta_end = DEFAULT_BETA_END if beta_end is None else float(beta_end)
  if not 0.0 < beta_start < 1.0:
    raise ValueError(f"beta_start: expected a value in (0, 1), found {beta_start}.")
  if not beta_start <= beta_end < 1.0:
    raise ValueError(
      f"beta_end: expected a value in [beta_start={beta_start}, 1), found {beta_end}."
    )
  if kind == "linear":
    return linear_betas(num_train_timesteps, beta_start, beta_end)
  return scaled_linear_betas(num_train_timesteps, beta_start, beta_end)


def make_schedule(
  kind: str,
  num_train_timesteps: int = 1000,
  beta_start: float | None = None,
  beta_end: float | None = None,
) -> NoiseSchedule:
  """Returns the NoiseSchedule of `kind` in {'linear', 'scaled_linear', 'squaredcos_cap_v2'}.

  beta_start/beta_end default to diffusers' defaults (1e-4, 0.02); Stable
  Diffusion uses make_schedule('scaled_linear', beta_start=0.00085, beta_end=0.012).
  """
  return schedule_from_betas(make_betas(kind, num_train_timesteps, beta_start, beta_end))
