"""Latent text-to-image diffusion: Stable Diffusion sampling, and training on shapes.

Two parts:
- `StableDiffusion` / `sample` (below): the sampling path of Stable
  Diffusion 1.x/2.x pipelines converted from diffusers.
- `LatentDiffusionTask` (task `latent_diffusion`, end of the module): trains
  the `text_to_image` task's text encoder + U-Net on the latents of a frozen
  autoencoder trained by the `autoencoder` task (`configs/latent_diffusion_shapes.py`),
  with image-to-image and inpainting (`jaxgen.diffusion.editing`).

A `StableDiffusion` bundle holds the three model configs, their params, the
CLIP tokenizer and the noise schedule of a pipeline. `sample` generates
images from prompts the way diffusers' `StableDiffusionPipeline` does:

  tokenize (host) -> CLIP text states of the prompt and of the negative
  ("" by default) prompt -> one-scan sampler over latents with
  classifier-free guidance (both branches in one batched U-Net call) ->
  `unscale_latents` -> VAE decode -> images in [0, 1].

Everything after tokenization is one jitted program. diffusers folders are
read and written by `jaxgen.convert.diffusers_pipeline`; `save_checkpoint` /
`load_checkpoint` keep a bundle in jaxgen's own layout:

  folder/
    stable_diffusion.json   {"format": "jaxgen.stable_diffusion", "version": 1,
                             "unet": UNetConfig, "vae": AutoencoderKLConfig,
                             "text_encoder": CLIPTextConfig, "scheduler": SchedulerConfig}
                            (each config as its diffusers / transformers dict)
    params.safetensors      float32 params, flattened with "/" separators:
                            "unet/down_blocks_0/resnets_0/conv1/kernel", "vae/...",
                            "text_encoder/..." (jaxgen names and layouts)
    tokenizer/              the transformers CLIPTokenizer files

Example:
  sd = diffusers_pipeline.load_stable_diffusion("stable-diffusion-v1-5")
  images = sample(sd, ["a red cube"], rng=jax.random.key(0), num_steps=50, guidance_scale=7.5)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import shapes
from jaxgen.diffusion import editing, gaussian, guidance, samplers, schedules
from jaxgen.diffusion.gaussian import check_prediction_type
from jaxgen.diffusion.timesteps import check_spacing
from jaxgen.models.autoencoder import (
  AutoencoderKL,
  AutoencoderKLConfig,
  DiagonalGaussian,
  scale_latents,
  unscale_latents,
)
from jaxgen.models.text_encoders import CLIPTextConfig, CLIPTextModel
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig
from jaxgen.render.grid import to_uint8
from jaxgen.tasks.image import text_to_image

PathLike = str | os.PathLike
Params = Mapping[str, Any]

COMPONENTS = ("unet", "vae", "text_encoder")
CHECKPOINT_FORMAT = "jaxgen.stable_diffusion"
CHECKPOINT_VERSION = 1
CHECKPOINT_CONFIG_NAME = "stable_diffusion.json"
CHECKPOINT_PARAMS_NAME = "params.safetensors"
CHECKPOINT_TOKENIZER_DIR = "tokenizer"

_LOG = logging.getLogger(__name__)


class CheckpointError(ValueError):
  """A jaxgen Stable Diffusion checkpoint folder is missing a file or does not match its configs."""


# ----------------------------------------------------------------------------
# The noise schedule and sampler of a pipeline.


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  """The training noise schedule and the default sampler of a pipeline.

  Field names and meanings are diffusers' scheduler config keys (see
  `jaxgen.diffusion`); `sampler` is one of `samplers.SAMPLERS`. Defaults are
  Stable Diffusion 1.x's (scaled-linear betas 0.00085..0.012, 'leading'
  spacing with steps_offset 1) sampled with DDIM.
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
    if sampler == "ddim":
      options["set_alpha_to_one"] = self.set_alpha_to_one
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
    latent = self.vae_config.latent_channels
    if self.unet_config.in_channels != latent or self.unet_config.out_channels != latent:
      raise ValueError(
        f"unet_config.in_channels/out_channels: expected the VAE's latent_channels {latent}, found "
        f"{self.unet_config.in_channels}/{self.unet_config.out_channels}"
      )
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
    size = self.unet_config.sample_size or 64
    height, width = (size, size) if isinstance(size, int) else size
    return height * self.latent_downsample_factor, width * self.latent_downsample_factor

  def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
    """Prompts -> (B, model_max_length) int32 ids, padded and truncated as diffusers does."""
    tokens = self.tokenizer(
      list(prompts),
      padding="max_length",
      max_length=self.tokenizer.model_max_length,
      truncation=True,
      return_tensors="np",
    )
    return np.asarray(tokens["input_ids"], np.int32)


# ----------------------------------------------------------------------------
# Sampling.


def _check_prompts(name: str, prompts: Any) -> list[str]:
  if isinstance(prompts, str):
    return [prompts]
  if (
    not isinstance(prompts, Sequence) or not prompts or not all(isinstance(p, str) for p in prompts)
  ):
    raise ValueError(
      f"{name}: expected a string or a non-empty sequence of strings, found {prompts!r}"
    )
  return list(prompts)


def _latent_shape(
  sd: StableDiffusion, batch: int, height: int | None, width: int | None
) -> tuple[int, ...]:
  default_height, default_width = sd.default_image_size()
  height, width = height or default_height, width or default_width
  multiple = sd.latent_downsample_factor * 2**sd.unet_config.num_downsamples
  if height % multiple or width % multiple:
    raise ValueError(f"height, width: expected multiples of {multiple}, found {height}, {width}")
  factor = sd.latent_downsample_factor
  return (batch, height // factor, width // factor, sd.vae_config.latent_channels)


def _check_latents(sd: StableDiffusion, latents: Any, batch: int) -> jax.Array:
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
  unet = UNet2DConditionModel(unet_config, dtype=dtype)
  vae = AutoencoderKL(vae_config, dtype=dtype)
  encode = lambda ids: text_model.apply({"params": params["text_encoder"]}, ids).last_hidden_state
  cond = encode(cond_ids)

  def denoise(x, t, context):
    return unet.apply({"params": params["unet"]}, x, t, context)

  if guided:
    model_fn = guidance.classifier_free_guidance(denoise, cond, encode(uncond_ids), guidance_scale)
  else:
    model_fn = lambda x, t: denoise(x, t, cond)
  final = samplers.run_sampler(model_fn, plan, latents, rng)
  images = vae.apply(
    {"params": params["vae"]}, unscale_latents(final, vae_config), method=AutoencoderKL.decode
  )
  return jnp.clip(images.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0)


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
      stochastic samplers (DDPM, DDIM with eta > 0).
    num_steps: number of U-Net evaluations (per branch).
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
  prompts = _check_prompts("prompts", prompts)
  batch = len(prompts)
  if negative_prompts is None:
    negative_prompts = [""] * batch
  negative_prompts = _check_prompts("negative_prompts", negative_prompts)
  if len(negative_prompts) != batch:
    raise ValueError(
      f"negative_prompts: expected {batch} prompts (one per prompt), found {len(negative_prompts)}"
    )
  if not isinstance(guidance_scale, numbers.Real) or guidance_scale < 0:
    raise ValueError(f"guidance_scale: expected a number >= 0, found {guidance_scale!r}")
  plan = sd.scheduler.plan(num_steps, eta=eta, sampler=sampler)
  if latents is None:
    if rng is None:
      raise ValueError(
        "rng: expected a PRNG key to draw the starting latents (latents=None), found None"
      )
    rng, noise_rng = jax.random.split(rng)
    latents = jax.random.normal(noise_rng, _latent_shape(sd, batch, height, width), jnp.float32)
  latents = _check_latents(sd, latents, batch)
  if plan.stochastic and rng is None:
    raise ValueError("rng: this sampler draws noise at every step and needs a PRNG key, found None")
  return generate(
    {name: sd.params[name] for name in COMPONENTS},
    plan,
    jnp.asarray(sd.tokenize(prompts)),
    jnp.asarray(sd.tokenize(negative_prompts)),
    latents,
    rng if plan.stochastic else None,
    jnp.float32(guidance_scale),
    unet_config=sd.unet_config,
    vae_config=sd.vae_config,
    text_config=sd.text_config,
    guided=guidance_scale > 1,
    dtype=dtype,
  )


# ----------------------------------------------------------------------------
# jaxgen's own checkpoint layout (see the module docstring).


def _flatten(tree: Mapping[str, Any], prefix: str, as_numpy: bool = True) -> dict[str, Any]:
  """Nested params -> {"prefix/a/b/kernel": leaf}; leaves unboxed, float32 numpy if as_numpy."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, name, as_numpy))
      continue
    value = value.unbox() if hasattr(value, "unbox") else value
    flat[name] = np.ascontiguousarray(np.asarray(value, np.float32)) if as_numpy else value
  return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def _check_param_shapes(name: str, params: Mapping[str, Any], template: Mapping[str, Any]) -> None:
  """Strict comparison of a loaded params tree with the model's abstract params."""
  got = {k: tuple(v.shape) for k, v in _flatten(params, name).items()}
  want = {k: tuple(v.shape) for k, v in _flatten(template, name, as_numpy=False).items()}
  missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  shapes = [
    f"{k}: expected {want[k]}, found {got[k]}"
    for k in sorted(set(want) & set(got))
    if want[k] != got[k]
  ]
  if missing or unexpected or shapes:
    raise CheckpointError(
      f"{CHECKPOINT_PARAMS_NAME}: {name} params do not match its config; missing {missing[:20]}, "
      f"unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}"
    )


def load_clip_tokenizer(folder: PathLike) -> Any:
  """A `transformers.CLIPTokenizer` from local files (vocab.json, merges.txt); never downloads."""
  from transformers import CLIPTokenizer  # Imported here: only folder I/O needs it.

  if not os.path.isdir(folder):
    raise FileNotFoundError(f"folder: expected a CLIP tokenizer folder at {folder}, found nothing")
  return CLIPTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)


def save_checkpoint(sd: StableDiffusion, folder: PathLike) -> None:
  """Writes `sd` in jaxgen's layout (see the module docstring)."""
  from safetensors.numpy import save_file  # Imported here: only checkpoint I/O needs it.

  os.makedirs(folder, exist_ok=True)
  config = {
    "format": CHECKPOINT_FORMAT,
    "version": CHECKPOINT_VERSION,
    "unet": sd.unet_config.to_diffusers(),
    "vae": sd.vae_config.to_diffusers(),
    "text_encoder": dataclasses.asdict(sd.text_config),
    "scheduler": sd.scheduler.to_dict(),
  }
  with open(os.path.join(folder, CHECKPOINT_CONFIG_NAME), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  flat = {}
  for name in COMPONENTS:
    flat.update(_flatten(sd.params[name], name))
  save_file(
    flat, os.path.join(folder, CHECKPOINT_PARAMS_NAME), metadata={"format": CHECKPOINT_FORMAT}
  )
  sd.tokenizer.save_pretrained(os.path.join(folder, CHECKPOINT_TOKENIZER_DIR))
  _LOG.info("wrote a Stable Diffusion checkpoint (%d tensors) to %s", len(flat), folder)


def load_checkpoint(folder: PathLike) -> StableDiffusion:
  """Reads a folder written by `save_checkpoint`; params are checked against the configs."""
  from safetensors.numpy import load_file  # Imported here: only checkpoint I/O needs it.

  from jaxgen.models import autoencoder, text_encoders, unet  # Abstract shapes for the check.

  for name in (CHECKPOINT_CONFIG_NAME, CHECKPOINT_PARAMS_NAME, CHECKPOINT_TOKENIZER_DIR):
    if not os.path.exists(os.path.join(folder, name)):
      raise CheckpointError(
        f"folder: expected {name} in the jaxgen Stable Diffusion checkpoint {folder}"
      )
  with open(os.path.join(folder, CHECKPOINT_CONFIG_NAME)) as f:
    config = json.load(f)
  if config.get("format") != CHECKPOINT_FORMAT or config.get("version") != CHECKPOINT_VERSION:
    raise CheckpointError(
      f"{CHECKPOINT_CONFIG_NAME}: expected format {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}, "
      f"found {config.get('format')!r} version {config.get('version')!r}"
    )
  unet_config = UNetConfig.from_diffusers(config["unet"])
  vae_config = AutoencoderKLConfig.from_diffusers(config["vae"])
  text_config = CLIPTextConfig(**config["text_encoder"])
  flat = load_file(os.path.join(folder, CHECKPOINT_PARAMS_NAME))
  tree = _unflatten(flat)
  unknown = sorted(set(tree) - set(COMPONENTS))
  if unknown:
    raise CheckpointError(f"{CHECKPOINT_PARAMS_NAME}: unexpected components {unknown}")
  params = {name: tree.get(name, {}) for name in COMPONENTS}
  templates = {
    "unet": unet.abstract_variables(unet_config)["params"],
    "vae": autoencoder.abstract_variables(vae_config)["params"],
    "text_encoder": text_encoders.abstract_variables(text_config)["params"],
  }
  for name in COMPONENTS:
    _check_param_shapes(name, params[name], templates[name])
  tokenizer = load_clip_tokenizer(os.path.join(folder, CHECKPOINT_TOKENIZER_DIR))
  return StableDiffusion(
    unet_config=unet_config,
    vae_config=vae_config,
    text_config=text_config,
    scheduler=SchedulerConfig.from_dict(config["scheduler"]),
    params=params,
    tokenizer=tokenizer,
  )


# ----------------------------------------------------------------------------
# Training a latent text-to-image model on the built-in captioned shapes.
#
# The second stage of latent diffusion: a frozen KL autoencoder trained by the
# `autoencoder` task maps images to latents on the fly, and the text encoder +
# U-Net of the `text_to_image` task (`TextConditionedUNet`) learns to denoise
# them. With `model.inpainting`, the U-Net also sees the mask and the masked
# image's latents as extra input channels (GLIDE / SD-inpainting) and trains
# on random masks.


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenAutoencoder:
  """A trained autoencoder used as a fixed map between images and diffusion latents.

  `config.scaling_factor` is the factor the latent model uses (1/std of the
  training latents unless set); params are the autoencoder's alone.
  """

  config: AutoencoderKLConfig
  params: Params

  @property
  def model(self) -> AutoencoderKL:
    return AutoencoderKL(self.config)

  def encode(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Images in [-1, 1] -> scaled latents: a posterior sample (rng) or its mean; no gradient."""
    params = jax.lax.stop_gradient(self.params)
    moments = self.model.apply({"params": params}, images, method=AutoencoderKL.encode)
    posterior = DiagonalGaussian.from_moments(moments)
    latents = posterior.mode() if rng is None else posterior.sample(rng)
    return jax.lax.stop_gradient(scale_latents(latents, self.config))

  def decode(self, latents: jax.Array) -> jax.Array:
    """Scaled latents -> images in [-1, 1] (clipped)."""
    images = self.model.apply(
      {"params": self.params}, unscale_latents(latents, self.config), method=AutoencoderKL.decode
    )
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


def latent_std(autoencoder: FrozenAutoencoder, images: np.ndarray, batch_size: int = 256) -> float:
  """Standard deviation of posterior samples of uint8 `images`, at scaling factor 1.

  Stable Diffusion's 0.18215 is 1/this on its training data, so that the
  diffusion model sees latents of unit variance.
  """
  unit = FrozenAutoencoder(dataclasses.replace(autoencoder.config, scaling_factor=1.0,
                                               shift_factor=None), autoencoder.params)
  encode = jax.jit(unit.encode)
  samples = []
  for i, start in enumerate(range(0, len(images), batch_size)):
    chunk = jnp.asarray(images[start:start + batch_size], jnp.float32) / 127.5 - 1.0
    samples.append(np.asarray(encode(chunk, jax.random.PRNGKey(i))))
  return float(np.std(np.concatenate(samples)))


def load_autoencoder(workdir: str, step: int | None = None) -> FrozenAutoencoder:
  """The EMA autoencoder of a run directory written by `jaxgen train` with task `autoencoder`."""
  from jaxgen.tasks.image.autoencoder import AutoencoderTask  # Imported here: no import cycle.
  from jaxgen.tasks.registry import load_run

  if not workdir:
    raise ValueError("autoencoder.workdir: expected the run directory of a trained autoencoder "
                     "(`jaxgen train --config configs/autoencoder_shapes.py`), found nothing")
  task, params = load_run(workdir, step)
  if not isinstance(task, AutoencoderTask):
    raise ValueError(f"autoencoder.workdir: expected a run of task 'autoencoder', found task "
                     f"{task.config.task!r} in {workdir!r}")
  return FrozenAutoencoder(task.vae_config, jax.device_put(params["autoencoder"]))


def random_box_masks(rng: jax.Array, batch: int, height: int, width: int,
                     full_mask_prob: float) -> jax.Array:
  """(B, H, W, 1) training masks, 1 = generate: one random box each, or all ones with full_mask_prob.

  Box sides are uniform in [1, side]; all-ones masks keep the model a plain
  text-to-image model too (SD-inpainting masks everything for a share of
  its batches).
  """
  size_rng, pos_rng, full_rng = jax.random.split(rng, 3)
  sides = jnp.array([height, width])
  size = jax.random.randint(size_rng, (batch, 2), 1, sides + 1)
  corner = jnp.floor(jax.random.uniform(pos_rng, (batch, 2)) * (sides - size + 1)).astype(jnp.int32)
  ys = jnp.arange(height)[None, :, None]
  xs = jnp.arange(width)[None, None, :]
  inside = ((ys >= corner[:, 0, None, None]) & (ys < (corner[:, 0] + size[:, 0])[:, None, None])
            & (xs >= corner[:, 1, None, None]) & (xs < (corner[:, 1] + size[:, 1])[:, None, None]))
  full = jax.random.bernoulli(full_rng, full_mask_prob, (batch, 1, 1))
  return (inside | full).astype(jnp.float32)[..., None]


class LatentDiffusionTask(text_to_image.TextToImageTask):
  """The `latent_diffusion` task: text-to-image diffusion on frozen autoencoder latents.

  It is the `text_to_image` task with images replaced by latents: the same
  data, tokenizer, text encoder + U-Net (`TextConditionedUNet`), conditioning
  dropout, samplers, judge and preview grid; `sample` decodes the final
  latents. Config keys beyond `text_to_image`'s:
    autoencoder.workdir / step: the trained autoencoder run (newest step by default).
    autoencoder.scaling_factor: None measures 1/std of the training latents.
    autoencoder.num_stat_examples: training images used for that measurement.
    autoencoder.sample_posterior: train on posterior samples (True) or means.
    model.inpainting: U-Net input = [noisy latents, mask, masked-image latents].
    inpainting.full_mask_prob: share of all-ones training masks.

  `autoencoder=` injects a FrozenAutoencoder (tests, notebooks) instead of
  loading `autoencoder.workdir`.
  """

  def __init__(self, config, autoencoder: FrozenAutoencoder | None = None):
    self.config = config
    self.resolution = config.data.resolution
    self.max_text_length = config.text.max_length
    self.tokenizer = text_to_image.build_caption_tokenizer()
    ae_cfg = config.autoencoder
    if autoencoder is None:
      autoencoder = load_autoencoder(ae_cfg.workdir, ae_cfg.get("step"))
    self._check_autoencoder(autoencoder.config)
    scaling = ae_cfg.get("scaling_factor")
    if scaling is None:
      images = self._train_images(ae_cfg.num_stat_examples)
      scaling = 1.0 / latent_std(autoencoder, images)
      _LOG.info("latent scaling factor 1/std = %.5f (from %d training images)", scaling,
                len(images))
    if not scaling > 0:
      raise ValueError(f"autoencoder.scaling_factor: expected a positive number, found {scaling}")
    self.autoencoder = FrozenAutoencoder(
      dataclasses.replace(autoencoder.config, scaling_factor=float(scaling), shift_factor=None),
      autoencoder.params,
    )
    self.latent_factor = autoencoder.config.downsample_factor
    self.latent_resolution = self.resolution // self.latent_factor
    self.latent_channels = autoencoder.config.latent_channels
    self.inpainting = bool(config.model.get("inpainting", False))
    self.coord_channels = config.model.coord_channels
    self.patch_size = config.model.get("patch_size", 1)
    if self.patch_size != 1:
      raise ValueError(f"model.patch_size: latent diffusion works on latents, expected 1, found "
                       f"{self.patch_size}")
    unet = UNetConfig(**config.unet.to_dict())
    self._check_unet(unet)
    text_cfg = dict(config.text.to_dict(), vocab_size=self.tokenizer.vocab_size)
    self.model = text_to_image.TextConditionedUNet(text=text_cfg, unet=unet,
                                         coord_channels=self.coord_channels, patch_size=1)
    d = config.diffusion
    self.schedule = schedules.make_schedule(d.schedule, num_train_timesteps=d.num_train_timesteps,
                                            beta_start=d.beta_start, beta_end=d.beta_end)

  def _train_images(self, num: int) -> np.ndarray:
    num = min(num, self.config.data.num_train_examples)
    return shapes.make_split("train", num, resolution=self.resolution,
                             seed=self.config.data.seed)["image"]

  def _check_autoencoder(self, vae: AutoencoderKLConfig) -> None:
    if vae.in_channels != 3 or vae.out_channels != 3:
      raise ValueError(f"autoencoder: expected an RGB autoencoder (in/out_channels 3), found "
                       f"{vae.in_channels}/{vae.out_channels}")
    if self.resolution % vae.downsample_factor:
      raise ValueError(f"data.resolution must be a multiple of the autoencoder's downsample "
                       f"factor {vae.downsample_factor}, got {self.resolution}")

  @property
  def unet_input_channels(self) -> int:
    """Latents [+ mask + masked-image latents], before the coordinate channels."""
    c = self.latent_channels
    return c + (1 + c if self.inpainting else 0)

  def _check_unet(self, unet: UNetConfig) -> None:
    expected_in = self.unet_input_channels + (2 if self.coord_channels else 0)
    if unet.in_channels != expected_in or unet.out_channels != self.latent_channels:
      parts = [f"{self.latent_channels} latent"]
      if self.inpainting:
        parts.append(f"1 mask + {self.latent_channels} masked-image latent")
      if self.coord_channels:
        parts.append("2 coordinate")
      raise ValueError(
        f"unet.in_channels/out_channels must be {expected_in}/{self.latent_channels} "
        f"({' + '.join(parts)} channels in), got {unet.in_channels}/{unet.out_channels}"
      )
    factor = 2**unet.num_downsamples
    if self.latent_resolution % factor:
      raise ValueError(
        f"data.resolution / {self.latent_factor} (latent side {self.latent_resolution}) must be "
        f"a multiple of 2^{unet.num_downsamples} (the U-Net's downsamplings)"
      )

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    b = batch["image"].shape[0]
    r = self.latent_resolution
    x = jnp.zeros((b, r, r, self.unet_input_channels), jnp.float32)
    t = jnp.zeros((b,), jnp.int32)
    return self.model.init(rng, x, t, batch["text_tokens"], batch["text_mask"])["params"]

  def inpainting_condition(self, images: jax.Array, pixel_mask: jax.Array) -> jax.Array:
    """The extra U-Net channels for images in [-1, 1] and a (B, H, W, 1) mask (1 = generate)."""
    masked = self.autoencoder.encode(editing.masked_image(images, pixel_mask))
    return editing.inpainting_inputs(editing.downsample_mask(pixel_mask, self.latent_factor), masked)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.config.diffusion
    images = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    latent_rng, drop_rng, mask_rng, diff_rng = jax.random.split(rng, 4)
    sample_posterior = self.config.autoencoder.get("sample_posterior", True)
    z0 = self.autoencoder.encode(images, latent_rng if sample_posterior else None)
    tokens, mask = guidance.drop_condition(
      drop_rng, (batch["text_tokens"], batch["text_mask"]), self.null_text(z0.shape[0]),
      d.cond_drop_prob,
    )
    extra = None
    if self.inpainting:
      b, h, w, _ = images.shape
      pixel_mask = random_box_masks(mask_rng, b, h, w, self.config.inpainting.full_mask_prob)
      extra = self.inpainting_condition(images, pixel_mask)

    def model_fn(z_t, t):
      x = z_t if extra is None else jnp.concatenate([z_t, extra], axis=-1)
      return self.model.apply({"params": params}, x, t, tokens, mask, train=True)

    loss, aux = gaussian.diffusion_loss(model_fn, z0, diff_rng, self.schedule,
                                        prediction_type=d.prediction_type,
                                        min_snr_gamma=d.min_snr_gamma)
    return loss, dict(mse=aux["mse"], snr_weight=aux["weight"], latent_std=jnp.std(z0))

  def _guided_model_fn(self, params, tokens, mask, extra, guidance_scale):
    """model_fn(z, t) with classifier-free guidance; `extra` channels go to both branches."""
    variables = {"params": params}
    encode = functools.partial(self.model.apply, variables,
                               method=text_to_image.TextConditionedUNet.encode_text)
    null_tokens, null_mask = self.null_text(tokens.shape[0])
    cond = (*encode(tokens, mask), mask, extra)
    uncond = (*encode(null_tokens, null_mask), null_mask, extra)

    def model_fn(z, t, c):
      states, pooled, context_mask, extra_channels = c
      x = z if extra_channels is None else jnp.concatenate([z, extra_channels], axis=-1)
      return self.model.apply(variables, x, t, states, context_mask, pooled,
                              method=text_to_image.TextConditionedUNet.denoise)

    return guidance.classifier_free_guidance(model_fn, cond, uncond, guidance_scale)

  def _plan(self, sampler: str, num_steps: int, eta) -> samplers.SamplerPlan:
    return samplers.make_plan(self.schedule, sampler, num_steps,
                              eta=eta if sampler == "ddim" else 0.0,
                              prediction_type=self.config.diffusion.prediction_type)

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps", "resolution"))
  def sample(self, params, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
             sampler: str, num_steps: int, guidance_scale: float | jax.Array,
             eta: float | jax.Array = 0.0, resolution: int | None = None) -> jax.Array:
    """Images in [-1, 1], (B, H, W, 3): text -> one-scan latent sampler -> decode, one program."""
    resolution = resolution or self.resolution
    batch = tokens.shape[0]
    extra = None
    if self.inpainting:  # everything to generate: the model's text-to-image mode
      shape = (batch, resolution, resolution, 1)
      extra = self.inpainting_condition(jnp.zeros(shape[:3] + (3,)), jnp.ones(shape))
    model_fn = self._guided_model_fn(params, tokens, mask, extra, guidance_scale)
    noise_rng, sample_rng = jax.random.split(rng)
    side = resolution // self.latent_factor
    z_T = jax.random.normal(noise_rng, (batch, side, side, self.latent_channels))
    plan = self._plan(sampler, num_steps, eta)
    z0 = samplers.run_sampler(model_fn, plan, z_T, sample_rng if plan.stochastic else None)
    return self.autoencoder.decode(z0)

  # -- editing ---------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps", "strength",
                                               "paste_pixels"))
  def edit_images(self, params, images: jax.Array, tokens: jax.Array, mask: jax.Array,
                  pixel_mask: jax.Array | None, rng: jax.Array, *, sampler: str,
                  num_steps: int, strength: float, guidance_scale: float | jax.Array,
                  eta: float | jax.Array = 0.0, paste_pixels: bool = True) -> jax.Array:
    """Image-to-image (pixel_mask None) or inpainting, one compiled program.

    images: (B, H, W, 3) in [-1, 1]. pixel_mask: (B, H, W, 1), 1 = generate.
    The plain model inpaints by replacing the known latents at every step;
    the inpainting model is conditioned on mask + masked image instead. With
    paste_pixels the known pixels are pasted back after decoding, so the
    unmasked region equals the input exactly. Returns images in [-1, 1].
    """
    z0 = self.autoencoder.encode(images)
    extra, keep_mask = None, None
    if self.inpainting:
      full = jnp.ones(images.shape[:3] + (1,)) if pixel_mask is None else pixel_mask
      extra = self.inpainting_condition(images, full)
    elif pixel_mask is not None:
      keep_mask = editing.downsample_mask(pixel_mask, self.latent_factor)
    model_fn = self._guided_model_fn(params, tokens, mask, extra, guidance_scale)
    noise_rng, sample_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, z0.shape)
    plan = self._plan(sampler, num_steps, eta)
    z = editing.edit(model_fn, plan, self.schedule, z0, noise,
                     sample_rng if plan.stochastic else None, strength=strength,
                     keep_mask=keep_mask)
    out = self.autoencoder.decode(z)
    if pixel_mask is not None and paste_pixels:
      out = editing.composite(out, images, pixel_mask)
    return out

  def edit(self, params, images: np.ndarray, captions: Sequence[str], rng: jax.Array, *,
           strength: float = 1.0, mask: np.ndarray | None = None, sampler: str | None = None,
           num_steps: int | None = None, guidance_scale: float | None = None,
           paste_pixels: bool = True) -> np.ndarray:
    """uint8 images edited towards `captions`: img2img (`strength`) or inpainting (`mask`).

    images: uint8 (B, H, W, 3) at data.resolution; mask: (B, H, W) or
    (B, H, W, 1), 1 = generate, 0 = keep. Named errors before compiling.
    """
    editing.check_strength(strength)
    images = np.asarray(images)
    expected = (self.resolution, self.resolution, 3)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
      raise ValueError(f"images: expected uint8 (B, {expected[0]}, {expected[1]}, 3), found "
                       f"{images.dtype} {images.shape}")
    captions = _check_prompts("captions", captions)
    if len(captions) != len(images):
      raise ValueError(f"captions: expected one per image ({len(images)}), found {len(captions)}")
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    pixel_mask = None if mask is None else editing.check_mask(jnp.asarray(mask), x)
    s = self.config.sample
    tokens, text_mask = self.tokenize(captions)
    out = self.edit_images(
      params, x, jnp.asarray(tokens), jnp.asarray(text_mask), pixel_mask, rng,
      sampler=sampler or s.sampler, num_steps=num_steps or s.num_steps, strength=float(strength),
      guidance_scale=jnp.float32(s.guidance if guidance_scale is None else guidance_scale),
      eta=jnp.float32(s.eta), paste_pixels=paste_pixels,
    )
    return to_uint8(np.asarray(out))
