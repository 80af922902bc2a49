"""The `palette` task: conditional diffusion with the source concatenated to the noisy target.

Saharia et al. 2022, as Janspiry/Palette-Image-to-Image-Diffusion-Models
(`models/network.py`, `module_name: guided_diffusion`):

- The denoiser is the guided-diffusion U-Net (`jaxgen.models.adm_unet`) on
  [source, y_t] (source first), Palette's `unet` section and defaults
  (scale-shift norm, residual up/down blocks). It predicts the noise and is
  conditioned on the continuous noise level abar (the cumulative product of
  1 - beta, which the reference calls `gammas`), embedded by the same
  sinusoids ADM uses for timesteps.
- Training: the train schedule (linear, 2000 steps, 1e-6 -> 0.01); a level
  drawn uniformly between consecutive values of its abar
  (`jaxgen.diffusion.noise_level`); MSE on the noise.
- Sampling: the test schedule (linear, 1000 steps, 1e-4 -> 0.09), ancestral
  DDPM with the posterior variance and x0 clipped to [-1, 1]
  (`p_sample`), from noise, as one `jax.lax.scan`. `sample.num_steps` < the
  test schedule's steps takes every (T / num_steps)-th timestep of it
  (diffusers' DDPM "leading" grid; the skipped chain's posterior): the
  network knows levels, not steps, so any grid of the schedule works.

The source is `source_input(...)`: one-hot labels (NUM_LABELS channels), a
sketch or edge map (one channel) or a day photo (three), so `unet.in_channel`
is that plus 3; left None it is derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxgen.diffusion import noise_level, samplers
from jaxgen.diffusion import timesteps as timesteps_lib
from jaxgen.diffusion.schedules import NoiseSchedule, make_betas, schedule_from_betas
from jaxgen.models.adm_unet import ADMUNet, ADMUNetConfig
from jaxgen.nn import precision
from jaxgen.tasks.image_to_image.translation import ImageToImageTask
from jaxgen.training.task import SampleSpec

TARGET_CHANNELS = 3
# Palette's `make_beta_schedule` names -> jaxgen's (same formulas).
SCHEDULE_KINDS = {"linear": "linear", "quad": "scaled_linear", "cosine": "squaredcos_cap_v2"}
SAMPLING_OPTIONS = ("num_steps",)


class PaletteConfigError(ValueError):
  """A `unet`, `beta_schedule` or `sample` setting Palette cannot use."""


def make_palette_schedule(section: Mapping[str, Any], key: str) -> NoiseSchedule:
  """A NoiseSchedule from a Palette `beta_schedule.train` / `.test` section (`key` names it)."""
  kind = section.get("schedule")
  if kind not in SCHEDULE_KINDS:
    raise PaletteConfigError(
      f"{key}.schedule: expected one of {tuple(SCHEDULE_KINDS)}, found {kind!r}"
    )
  try:
    if kind == "cosine":
      betas = make_betas("squaredcos_cap_v2", section.get("n_timestep"))
    else:
      betas = make_betas(
        SCHEDULE_KINDS[kind],
        section.get("n_timestep"),
        section.get("linear_start", 1e-6),
        section.get("linear_end", 1e-2),
      )
  except ValueError as e:
    raise PaletteConfigError(f"{key}: {e}") from e
  return schedule_from_betas(betas)


class PaletteTask(ImageToImageTask):
  """The `palette` task (see module docstring). Config sections beyond `data`:

    unet: Palette's `unet` keys (in_channel, out_channel, inner_channel,
      channel_mults, attn_res, num_head_channels, res_blocks, dropout,
      image_size; use_scale_shift_norm, resblock_updown, ... as its UNet).
    beta_schedule: {"train": ..., "test": ...}, each {schedule, n_timestep,
      linear_start, linear_end} (the reference's keys).
    sample: num_steps (steps of the test schedule; its n_timestep = the reference).
    model: compute_dtype, remat.

  Params are the U-Net's; batches {"source", "target"} uint8.
  """

  sample_spec = SampleSpec("translation.png", (".png",), SAMPLING_OPTIONS, takes_images=True)

  def __init__(self, config):
    super().__init__(config)
    self.unet_config = self._unet_config(config.unet)
    schedules = config.beta_schedule
    self.train_schedule = make_palette_schedule(schedules.train, "beta_schedule.train")
    self.test_schedule = make_palette_schedule(schedules.test, "beta_schedule.test")
    self.check_options({})
    self.unet = ADMUNet(self.unet_config, **precision.model_policy(config.get("model")))

  def _unet_config(self, section) -> ADMUNetConfig:
    section = dict(section)
    channels = {
      "in_channel": self.source_channels + TARGET_CHANNELS,
      "out_channel": TARGET_CHANNELS,
    }
    for key, expected in channels.items():
      if section.get(key) is None:
        section[key] = expected
      elif section[key] != expected:
        raise PaletteConfigError(
          f"unet.{key}: expected {expected} for data.source={self.source!r} "
          f"({self.source_channels} source channels + {TARGET_CHANNELS} noisy target channels in, "
          f"the noise out), found {section[key]}"
        )
    try:
      cfg = ADMUNetConfig.from_palette(section)
    except (ValueError, TypeError) as e:
      raise PaletteConfigError(f"unet: {e}") from e
    factor = 2**cfg.num_downsamples
    if self.resolution % factor:
      raise PaletteConfigError(
        f"data.resolution: the U-Net's {cfg.num_downsamples} downsamplings (unet.channel_mults="
        f"{list(cfg.channel_mult)}) need a multiple of {factor}, found {self.resolution}"
      )
    return cfg

  # -- model -----------------------------------------------------------------

  def denoiser(self, params, source: jax.Array, train: bool = False, rng=None):
    """`(y_noisy, noise_levels) -> predicted noise` for model inputs `source`."""

    def model_fn(y_noisy, levels):
      x = jnp.concatenate([source, y_noisy.astype(source.dtype)], axis=-1)
      rngs = {"dropout": rng} if train else None
      return self.unet.apply({"params": params}, x, levels, train=train, rngs=rngs).astype(
        jnp.float32
      )

    return model_fn

  def init(self, rng, batch):
    b = batch["target"].shape[0]
    x = jnp.zeros((b, self.resolution, self.resolution, self.unet_config.in_channels), jnp.float32)
    return self.unet.init(rng, x, jnp.zeros((b,), jnp.float32))["params"]

  def loss(self, params, batch, rng):
    loss_rng, dropout_rng = jax.random.split(rng)
    source = self.source_input(batch["source"])
    target = self.target_input(batch["target"])
    model_fn = self.denoiser(params, source, train=True, rng=dropout_rng)
    loss, aux = noise_level.noise_level_loss(model_fn, target, loss_rng, self.train_schedule)
    return loss, dict(aux, loss=loss)

  # -- sampling --------------------------------------------------------------

  def check_options(self, options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(SAMPLING_OPTIONS))
    if unknown:
      raise samplers.SamplingOptionError(
        unknown[0], f"not a Palette sampling option; expected one of {SAMPLING_OPTIONS}"
      )
    num_steps = options.get("num_steps")
    num_steps = self.config.sample.num_steps if num_steps is None else num_steps
    try:
      timesteps_lib.check_num_steps(num_steps, self.test_schedule.num_train_timesteps)
    except ValueError as e:
      raise samplers.SamplingOptionError(
        "num_steps", f"{e} (steps of beta_schedule.test; sample.num_steps in the config)"
      ) from e

  def translate(self, params, source, rng, num_steps: int | None = None):
    """Targets for model inputs `source` by the reference's ancestral loop (one scan), in [-1, 1]."""
    num_steps = int(self.config.sample.num_steps if num_steps is None else num_steps)
    noise_rng, step_rng = jax.random.split(rng)
    y_T = jax.random.normal(noise_rng, source.shape[:3] + (TARGET_CHANNELS,), jnp.float32)
    model_fn = noise_level.noise_level_model(self.denoiser(params, source), self.test_schedule)
    y_0 = samplers.sample(
      model_fn,
      self.test_schedule,
      y_T,
      step_rng,
      sampler="ddpm",
      num_steps=num_steps,
      timestep_spacing="leading",
      clip_sample=True,
    )
    return jnp.clip(y_0, -1.0, 1.0)
