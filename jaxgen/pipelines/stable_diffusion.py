"""The Stable Diffusion 1.x/2.x inference bundle and its text-to-image sampler.

A `StableDiffusion` bundle holds the three model configs, their params, the
CLIP tokenizer and the noise schedule of a pipeline. `sample` generates
images from prompts the way diffusers' `StableDiffusionPipeline` does:

  tokenize (host) -> CLIP text states of the prompt and of the negative
  ("" by default) prompt -> one-scan sampler over latents with
  classifier-free guidance (both branches in one batched U-Net call) ->
  `unscale_latents` -> VAE decode -> images in [0, 1].

Everything after tokenization is one jitted program. diffusers folders are
read and written by `jaxgen.convert.diffusers_pipeline`; jaxgen's own folder
layout by `jaxgen.pipelines.stable_diffusion_checkpoint`.

Example:
  sd = diffusers_pipeline.load_stable_diffusion("stable-diffusion-v1-5")
  images = sample(sd, ["a red cube"], rng=jax.random.key(0), num_steps=50, guidance_scale=7.5)
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion import guidance, samplers, schedules
from jaxgen.diffusion.gaussian import check_prediction_type
from jaxgen.diffusion.timesteps import check_spacing
from jaxgen.models.autoencoder import AutoencoderKL, AutoencoderKLConfig, unscale_latents
from jaxgen.models.clip_text import CLIPTextConfig, CLIPTextModel
from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.models.unet_config import UNetConfig

Params = Mapping[str, Any]

COMPONENTS = ("unet", "vae", "text_encoder")


# ----------------------------------------------------------------------------
# The noise schedule and sampler of a pipeline.


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  """The training noise schedule and the default sampler of a pipeline.

  Field names and meanings are diffusers' scheduler config keys (see
  `jaxgen.diffusion`); `sampler` is one of `samplers.SAMPLERS` (each the
  diffusers scheduler named in `samplers.SAMPLER_SCHEDULERS`). Defaults are
  Stable Diffusion 1.x's (scaled-linear betas 0.00085..0.012, 'leading'
  spacing with steps_offset 1) sampled with DDIM (SD 1.x folders ship PLMS,
  sampler 'pndm'). Options a sampler does not take are not passed to it.
  """

  sampler: str = "ddim"
  num_train_timesteps: int = 1000
  beta_schedule: str = "scaled_linear"
  beta_start: float = 0.00085
  beta_end: float = 0.012
  trained_betas: tuple[float, ...] | None = None
  prediction_type: str = "epsilon"
  timestep_spacing: str = "leading"
  steps_offset: int = 1
  set_alpha_to_one: bool = False
  clip_sample: bool = False
  clip_sample_range: float = 1.0

  def __post_init__(self):
    if self.trained_betas is not None:
      object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))
    if self.sampler not in samplers.SAMPLERS:
      raise ValueError(f"sampler: expected one of {samplers.SAMPLERS}, found {self.sampler!r}")
    check_prediction_type(self.prediction_type)
    check_spacing(self.timestep_spacing, self.steps_offset)
    self.schedule()  # Validates the betas now rather than at the first sample.

  def schedule(self) -> schedules.NoiseSchedule:
    """The training NoiseSchedule (trained_betas, if given, win over beta_schedule)."""
    if self.trained_betas is not None:
      return schedules.schedule_from_betas(np.asarray(self.trained_betas, np.float64))
    cosine = self.beta_schedule in ("squaredcos_cap_v2", "cosine")
    return schedules.make_schedule(
      self.beta_schedule,
      self.num_train_timesteps,
      None if cosine else self.beta_start,
      None if cosine else self.beta_end,
    )

  def plan(
    self, num_steps: int, eta: float = 0.0, sampler: str | None = None
  ) -> samplers.SamplerPlan:
    """The sampler's step table for `num_steps` (sampler=None: this config's default sampler)."""
    sampler = self.sampler if sampler is None else sampler
    options: dict[str, Any] = {"steps_offset": self.steps_offset}
    if sampler in ("ddim", "ddpm"):
      options.update(clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range)
    if sampler in ("ddim", "pndm"):
      options["set_alpha_to_one"] = self.set_alpha_to_one
    if sampler == "dpm_solver_pp_2m_karras":  # diffusers truncates the cosine schedule's timesteps
      options["truncate_timesteps"] = self.beta_schedule in ("squaredcos_cap_v2", "cosine")
    return samplers.make_plan(
      self.schedule(),
      sampler,
      num_steps,
      eta=eta,
      prediction_type=self.prediction_type,
      timestep_spacing=self.timestep_spacing,
      **options,
    )

  def to_dict(self) -> dict[str, Any]:
    config = dataclasses.asdict(self)
    if self.trained_betas is not None:
      config["trained_betas"] = list(self.trained_betas)
    return config

  @classmethod
  def from_dict(cls, config: Mapping[str, Any]) -> SchedulerConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
      raise ValueError(
        f"scheduler: unknown SchedulerConfig keys {unknown}; expected a subset of {sorted(fields)}"
      )
    return cls(**config)


# ----------------------------------------------------------------------------
# The bundle.


@dataclasses.dataclass(frozen=True, eq=False)
class StableDiffusion:
  """A text-to-image latent diffusion pipeline: configs, params, tokenizer and schedule.

  Attributes:
    unet_config, vae_config, text_config: the architectures.
    scheduler: noise schedule and default sampler.
    params: {"unet": ..., "vae": ..., "text_encoder": ...}, each an unboxed
      "params" collection (numpy or JAX arrays, float32).
    tokenizer: a `transformers.CLIPTokenizer` (or any callable tokenizer with
      `model_max_length` and `save_pretrained`).
  """

  unet_config: UNetConfig
  vae_config: AutoencoderKLConfig
  text_config: CLIPTextConfig
  scheduler: SchedulerConfig
  params: Params
  tokenizer: Any

  def __post_init__(self):
    if set(self.params) != set(COMPONENTS):
      raise ValueError(f"params: expected the keys {list(COMPONENTS)}, found {sorted(self.params)}")
    if self.unet_config.cross_attention_dim != self.text_config.hidden_size:
      raise ValueError(
        f"unet_config.cross_attention_dim: expected the text encoder's hidden_size "
        f"{self.text_config.hidden_size}, found {self.unet_config.cross_attention_dim}"
      )
    check_latent_channels(self.unet_config, self.vae_config)
    max_length = self.tokenizer.model_max_length
    if max_length > self.text_config.max_position_embeddings:
      raise ValueError(
        f"tokenizer.model_max_length: expected at most the text encoder's max_position_embeddings "
        f"{self.text_config.max_position_embeddings}, found {max_length}"
      )

  @property
  def latent_downsample_factor(self) -> int:
    return self.vae_config.downsample_factor

  def default_image_size(self) -> tuple[int, int]:
    """(height, width) of the U-Net's training resolution in pixels (diffusers' default)."""
    return training_image_size(self.unet_config, self.vae_config, default_sample_size=64)

  def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
    """Prompts -> (B, model_max_length) int32 ids, padded and truncated as diffusers does."""
    return tokenize_prompts(self.tokenizer, prompts)


# The pieces below serve every latent text-to-image bundle (`StableDiffusion`,
# `stable_diffusion_xl.StableDiffusionXL`): anything with unet_config,
# vae_config, latent_downsample_factor and default_image_size().


def check_latent_channels(unet_config: UNetConfig, vae_config: AutoencoderKLConfig) -> None:
  """A named error unless the U-Net reads and writes the VAE's latents."""
  latent = vae_config.latent_channels
  if unet_config.in_channels != latent or unet_config.out_channels != latent:
    raise ValueError(
      f"unet_config.in_channels/out_channels: expected the VAE's latent_channels {latent}, found "
      f"{unet_config.in_channels}/{unet_config.out_channels}"
    )


def training_image_size(
  unet_config: UNetConfig, vae_config: AutoencoderKLConfig, default_sample_size: int
) -> tuple[int, int]:
  """(height, width) in pixels of the U-Net's sample_size (default_sample_size when unset)."""
  size = unet_config.sample_size or default_sample_size
  height, width = (size, size) if isinstance(size, int) else size
  return height * vae_config.downsample_factor, width * vae_config.downsample_factor


def tokenize_prompts(tokenizer: Any, prompts: Sequence[str]) -> np.ndarray:
  """Prompts -> (B, model_max_length) int32 ids, padded and truncated as diffusers does."""
  tokens = tokenizer(
    list(prompts),
    padding="max_length",
    max_length=tokenizer.model_max_length,
    truncation=True,
    return_tensors="np",
  )
  return np.asarray(tokens["input_ids"], np.int32)


# ----------------------------------------------------------------------------
# Sampling.


def check_prompts(name: str, prompts: Any) -> list[str]:
  """A prompt or a non-empty sequence of prompts -> a list of prompts."""
  if isinstance(prompts, str):
    return [prompts]
  if (
    not isinstance(prompts, Sequence) or not prompts or not all(isinstance(p, str) for p in prompts)
  ):
    raise ValueError(
      f"{name}: expected a string or a non-empty sequence of strings, found {prompts!r}"
    )
  return list(prompts)


def latent_shape(sd: Any, batch: int, height: int | None, width: int | None) -> tuple[int, ...]:
  """The (B, h, w, latent_channels) noise shape of height x width images (None: the default)."""
  default_height, default_width = sd.default_image_size()
  height, width = height or default_height, width or default_width
  multiple = sd.latent_downsample_factor * 2**sd.unet_config.num_downsamples
  if height % multiple or width % multiple:
    raise ValueError(f"height, width: expected multiples of {multiple}, found {height}, {width}")
  factor = sd.latent_downsample_factor
  return (batch, height // factor, width // factor, sd.vae_config.latent_channels)


def check_latents(sd: Any, latents: Any, batch: int) -> jax.Array:
  """`latents` as float32, or a named error unless (batch, h, w, latent_channels) the U-Net takes."""
  latents = jnp.asarray(latents, jnp.float32)
  multiple = 2**sd.unet_config.num_downsamples
  channels = sd.vae_config.latent_channels
  if (
    latents.ndim != 4
    or latents.shape[0] != batch
    or latents.shape[3] != channels
    or latents.shape[1] % multiple
    or latents.shape[2] % multiple
  ):
    raise ValueError(
      f"latents: expected NHWC noise of shape ({batch}, h, w, {channels}) with h, w multiples of "
      f"{multiple}, found {latents.shape}"
    )
  return latents


def check_prompt_batch(
  prompts: Any, negative_prompts: Any, guidance_scale: Any
) -> tuple[list[str], list[str]]:
  """`sample`'s prompts and negative prompts (default "" each) as lists; checks guidance_scale."""
  prompts = check_prompts("prompts", prompts)
  batch = len(prompts)
  if negative_prompts is None:
    negative_prompts = [""] * batch
  negative_prompts = check_prompts("negative_prompts", negative_prompts)
  if len(negative_prompts) != batch:
    raise ValueError(
      f"negative_prompts: expected {batch} prompts (one per prompt), found {len(negative_prompts)}"
    )
  if not isinstance(guidance_scale, numbers.Real) or guidance_scale < 0:
    raise ValueError(f"guidance_scale: expected a number >= 0, found {guidance_scale!r}")
  return prompts, negative_prompts


def starting_latents(
  sd: Any,
  plan: samplers.SamplerPlan,
  latents: Any,
  rng: jax.Array | None,
  batch: int,
  height: int | None,
  width: int | None,
) -> tuple[jax.Array, jax.Array | None]:
  """(checked starting noise, drawn from `rng` when `latents` is None; the sampler's key).

  The sampler's key is None unless `plan` is stochastic, so deterministic
  samplers compile one program whether or not a key was given.
  """
  if latents is None:
    if rng is None:
      raise ValueError(
        "rng: expected a PRNG key to draw the starting latents (latents=None), found None"
      )
    rng, noise_rng = jax.random.split(rng)
    latents = jax.random.normal(noise_rng, latent_shape(sd, batch, height, width), jnp.float32)
  latents = check_latents(sd, latents, batch)
  if plan.stochastic and rng is None:
    raise ValueError("rng: this sampler draws noise at every step and needs a PRNG key, found None")
  return latents, rng if plan.stochastic else None


def sample_and_decode(
  params: Params,
  plan: samplers.SamplerPlan,
  cond: Mapping[str, jax.Array],
  uncond: Mapping[str, jax.Array] | None,
  latents: jax.Array,
  rng: jax.Array | None,
  guidance_scale: jax.Array,
  *,
  unet_config: UNetConfig,
  vae_config: AutoencoderKLConfig,
  dtype: Any = jnp.float32,
  denoise: Callable[[jax.Array, jax.Array, Mapping[str, jax.Array]], jax.Array] | None = None,
) -> jax.Array:
  """Encoded text conditions and noise -> (B, H, W, 3) images in [0, 1] (traced, not jitted).

  cond, uncond: the U-Net's keyword conditions of each branch
  (encoder_hidden_states, and SDXL's text_embeds and time_ids). uncond=None
  runs the conditional U-Net alone; otherwise both branches run in one
  batched call with classifier-free guidance. denoise(x, t, branch): the
  model prediction for one branch's conditions (default: the U-Net on
  params["unet"]); a ControlNet pipeline passes its controlled U-Net.
  """
  unet = UNet2DConditionModel(unet_config, dtype=dtype)
  vae = AutoencoderKL(vae_config, dtype=dtype)

  def unet_denoise(x, t, branch):
    return unet.apply({"params": params["unet"]}, x, t, **branch)

  denoise = unet_denoise if denoise is None else denoise

  if uncond is None:
    model_fn = lambda x, t: denoise(x, t, cond)
  else:
    model_fn = guidance.classifier_free_guidance(denoise, cond, uncond, guidance_scale)
  final = samplers.run_sampler(model_fn, plan, latents, rng)
  images = vae.apply(
    {"params": params["vae"]}, unscale_latents(final, vae_config), method=AutoencoderKL.decode
  )
  return jnp.clip(images.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0)


@functools.partial(
  jax.jit, static_argnames=("unet_config", "vae_config", "text_config", "guided", "dtype")
)
def generate(
  params: Params,
  plan: samplers.SamplerPlan,
  cond_ids: jax.Array,
  uncond_ids: jax.Array,
  latents: jax.Array,
  rng: jax.Array | None,
  guidance_scale: jax.Array,
  *,
  unet_config: UNetConfig,
  vae_config: AutoencoderKLConfig,
  text_config: CLIPTextConfig,
  guided: bool,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """The compiled part of `sample`: token ids and noise -> (B, H, W, 3) images in [0, 1].

  guided=False runs the conditional U-Net alone (diffusers does so for
  guidance_scale <= 1); guided=True runs both branches in one batched call.
  """
  text_model = CLIPTextModel(text_config, dtype=dtype)

  def condition(ids):
    states = text_model.apply({"params": params["text_encoder"]}, ids).last_hidden_state
    return {"encoder_hidden_states": states}

  return sample_and_decode(
    params,
    plan,
    condition(cond_ids),
    condition(uncond_ids) if guided else None,
    latents,
    rng,
    guidance_scale,
    unet_config=unet_config,
    vae_config=vae_config,
    dtype=dtype,
  )


def sample(
  sd: StableDiffusion,
  prompts: str | Sequence[str],
  latents: jax.Array | np.ndarray | None = None,
  *,
  rng: jax.Array | None = None,
  num_steps: int = 50,
  guidance_scale: float = 7.5,
  negative_prompts: str | Sequence[str] | None = None,
  sampler: str | None = None,
  eta: float = 0.0,
  height: int | None = None,
  width: int | None = None,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """Generates one image per prompt, as diffusers' `StableDiffusionPipeline` does.

  Args:
    sd: the pipeline bundle.
    prompts: a prompt or a list of B prompts.
    latents: standard-normal starting noise (B, h, w, latent_channels), NHWC;
      the sampler scales it by its initial sigma (diffusers' pipeline does
      the same with `scheduler.init_noise_sigma`). None: drawn from `rng`.
    rng: key for the starting noise (when `latents` is None) and for
      stochastic samplers (DDPM, Euler ancestral, DDIM with eta > 0).
    num_steps: diffusers' num_inference_steps (U-Net evaluations per branch,
      but num_steps + 1 for PLMS and 2 num_steps - 1 for Heun).
    guidance_scale: classifier-free guidance scale; <= 1 runs the
      conditional model alone (diffusers' rule).
    negative_prompts: the unconditional branch's prompts (default "").
    sampler: overrides `sd.scheduler.sampler`.
    eta: DDIM noise scale.
    height, width: image size when `latents` is None (default: the U-Net's
      sample_size times the VAE factor).
    dtype: compute dtype of the three models.

  Returns:
    (B, H, W, 3) float32 images in [0, 1] (diffusers' `output_type="np"`).
  """
  prompts, negative_prompts = check_prompt_batch(prompts, negative_prompts, guidance_scale)
  plan = sd.scheduler.plan(num_steps, eta=eta, sampler=sampler)
  latents, rng = starting_latents(sd, plan, latents, rng, len(prompts), height, width)
  return generate(
    {name: sd.params[name] for name in COMPONENTS},
    plan,
    jnp.asarray(sd.tokenize(prompts)),
    jnp.asarray(sd.tokenize(negative_prompts)),
    latents,
    rng,
    jnp.float32(guidance_scale),
    unet_config=sd.unet_config,
    vae_config=sd.vae_config,
    text_config=sd.text_config,
    guided=guidance_scale > 1,
    dtype=dtype,
  )
