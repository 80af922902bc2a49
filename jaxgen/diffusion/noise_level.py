"""Diffusion conditioned on a continuous noise level (WaveGrad, SR3, Palette).

The network sees the noise level itself, abar = prod(1 - beta), instead of
an integer timestep. Training draws abar uniformly between two consecutive
values of the schedule's cumulative product,

  t ~ U{1, ..., T-1},  abar ~ U(abar_t, abar_{t-1}),
  x = sqrt(abar) x0 + sqrt(1 - abar) eps,

so the network learns a continuum of levels and can be sampled with another
schedule than it was trained on (Palette trains with 2000 steps and samples
with 1000 of a different schedule). This is `Network.forward` of
Janspiry/Palette-Image-to-Image-Diffusion-Models, which hands abar (not its
square root) to the U-Net; sampling is ordinary ancestral DDPM
(`jaxgen.diffusion.samplers`, sampler "ddpm") with the model called on
`alphas_cumprod[t]` (`noise_level_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgen.diffusion.schedules import NoiseSchedule

# model_fn(x_noisy, noise_levels (B,)) -> predicted noise
NoiseLevelModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def sample_noise_levels(rng: jax.Array, schedule: NoiseSchedule, batch: int) -> jax.Array:
  """(batch,) float32 levels abar, each uniform between abar_{t-1} and abar_t for t ~ U{1..T-1}."""
  t_rng, u_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (batch,), 1, schedule.num_train_timesteps)
  high, low = schedule.alphas_cumprod[t - 1], schedule.alphas_cumprod[t]
  # From abar_{t-1} towards abar_t, as the reference maps its uniform draw.
  return high + (low - high) * jax.random.uniform(u_rng, (batch,), jnp.float32)


def noise_at_level(x0: jax.Array, noise_levels: jax.Array, noise: jax.Array) -> jax.Array:
  """sqrt(abar) x0 + sqrt(1 - abar) eps, with one level per example (B,)."""
  level = noise_levels.reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(level) * x0 + jnp.sqrt(1.0 - level) * noise


def noise_level_loss(
  model_fn: NoiseLevelModelFn, x0: jax.Array, rng: jax.Array, schedule: NoiseSchedule
) -> tuple[jax.Array, dict[str, Any]]:
  """The MSE between the noise and its prediction at a random continuous level (Palette's loss).

  `rng` is split into (level key, noise key). Returns (loss, aux) with the
  mean of the levels drawn.
  """
  level_rng, noise_rng = jax.random.split(rng)
  levels = sample_noise_levels(level_rng, schedule, x0.shape[0])
  noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
  prediction = model_fn(noise_at_level(x0, levels, noise), levels)
  if prediction.shape != x0.shape:
    raise ValueError(
      f"model_fn: expected a prediction of shape {x0.shape}, found {prediction.shape}"
    )
  loss = jnp.mean(jnp.square(prediction.astype(jnp.float32) - noise))
  return loss, {"mse": loss, "mean_noise_level": jnp.mean(levels)}


def noise_level_model(model_fn: NoiseLevelModelFn, schedule: NoiseSchedule):
  """`model_fn` as a sampler's `(x, t) -> eps`: integer timesteps t become the levels abar_t."""
  return lambda x, t: model_fn(x, schedule.alphas_cumprod[t])
