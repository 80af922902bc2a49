"""Fine-tuning a Stable Diffusion 1.x/2.x U-Net on image–caption data (task `sd_finetune`).

The recipe of diffusers' `examples/text_to_image/train_text_to_image.py`:
the three models start from a local diffusers folder (`pretrained=DIR`, read
by `jaxgen.convert.diffusers_pipeline.load_stable_diffusion`); the VAE and
the CLIP text encoder stay frozen (they are constants of the loss, so they
have no optimizer state and no EMA) and only the U-Net trains. Each step:

  uint8 images -> [-1, 1] (random flip) -> frozen VAE: posterior sample (or
  mean) × scaling_factor -> noise (+ noise offset) at uniform timesteps ->
  U-Net on the frozen CLIP states of the caption, which is the empty
  caption's with probability `finetune.cond_drop_prob` (for classifier-free
  guidance) -> MSE to the target of the folder's scheduler (epsilon, or
  v_prediction for SD 2.x 768), optionally min-SNR-γ weighted.

Images are decoded, cropped and tokenized by the grain input pipeline
(`train_dataset`; `data.loader="memory"` holds them in host arrays instead)
and their latents computed on the fly by the frozen VAE (nothing is cached). The
trainer keeps the EMA of the U-Net (`train.ema_decay`, with the 10-step
warm-up diffusers' `EMAModel` uses). `generate` samples through
`jaxgen.pipelines.stable_diffusion` with the run's U-Net; `export_diffusers`
(behind `jaxgen convert --from jaxgen RUN --to diffusers DST`) writes the
pipeline back as a diffusers folder with the EMA U-Net swapped in.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.convert import diffusers_pipeline
from jaxgen.diffusion import gaussian, samplers
from jaxgen.diffusion.guidance import drop_condition
from jaxgen.models.clip_text import CLIPTextModel
from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.nn.precision import model_policy
from jaxgen.pipelines import stable_diffusion
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder
from jaxgen.pipelines.stable_diffusion import StableDiffusion
from jaxgen.render.grid import make_grid
from jaxgen.tasks.image import captioned_images, sd_finetune_data


class PretrainedFolderError(ValueError):
  """`pretrained` does not name a local diffusers Stable Diffusion folder."""


def load_pretrained(path: Any) -> StableDiffusion:
  """The diffusers `StableDiffusionPipeline` folder at `path`, with errors naming `pretrained`."""
  wanted = "pretrained: expected a local diffusers StableDiffusionPipeline folder"
  if not isinstance(path, (str, os.PathLike)) or not str(path):
    raise PretrainedFolderError(f"{wanted} (pretrained=DIR), found {path!r}")
  if not os.path.isdir(path):
    raise PretrainedFolderError(f"{wanted}, found no folder at {str(path)!r}")
  try:
    return diffusers_pipeline.load_stable_diffusion(path)
  except diffusers_pipeline.PipelineFolderError as e:
    raise PretrainedFolderError(f"{wanted}, found {str(path)!r}: {e}") from e


def check_finetune_options(finetune: Any, prediction_type: str) -> None:
  """Named errors for `finetune.*` values out of range, before anything compiles."""
  p = finetune.cond_drop_prob
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"finetune.cond_drop_prob: expected a probability in [0, 1], found {p!r}")
  gamma = finetune.get("min_snr_gamma")
  if gamma is not None and not gamma > 0:
    raise ValueError(f"finetune.min_snr_gamma: expected None or a number > 0, found {gamma!r}")
  if not finetune.noise_offset >= 0:
    raise ValueError(
      f"finetune.noise_offset: expected a number >= 0, found {finetune.noise_offset}"
    )
  try:
    gaussian.check_prediction_type(prediction_type)
  except ValueError as e:
    raise ValueError(f"finetune.prediction_type: {e}") from e


def check_resolution(resolution: Any, sd: StableDiffusion) -> int:
  """`data.resolution` as an int; a named error unless the VAE and U-Net can halve it enough."""
  multiple = sd.latent_downsample_factor * 2**sd.unet_config.num_downsamples
  if (
    isinstance(resolution, bool)
    or not isinstance(resolution, int)
    or resolution <= 0
    or resolution % multiple
  ):
    raise ValueError(
      f"data.resolution: expected a positive multiple of {multiple} (VAE factor "
      f"{sd.latent_downsample_factor} × 2^{sd.unet_config.num_downsamples} U-Net "
      f"downsamplings), found {resolution!r}"
    )
  return resolution


def draw_noise(
  rng: jax.Array, latents: jax.Array, num_train_timesteps: int, noise_offset: float
) -> tuple[jax.Array, jax.Array]:
  """(timesteps, noise) of one training step: uniform t, Gaussian noise (+ noise offset).

  The noise offset adds `noise_offset` × N(0, 1) per example and channel, as
  diffusers' script does; it lets the model change an image's mean brightness.
  """
  t_rng, noise_rng, offset_rng = jax.random.split(rng, 3)
  batch, channels = latents.shape[0], latents.shape[-1]
  t = gaussian.sample_timesteps(t_rng, batch, num_train_timesteps)
  noise = jax.random.normal(noise_rng, latents.shape, latents.dtype)
  if noise_offset:
    noise += noise_offset * jax.random.normal(offset_rng, (batch, 1, 1, channels), latents.dtype)
  return t, noise


def denoising_loss(
  unet_fn,
  latents: jax.Array,
  t: jax.Array,
  noise: jax.Array,
  schedule,
  *,
  prediction_type: str,
  min_snr_gamma: float | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MSE of `unet_fn(x_t, t)` to the target of `prediction_type`, optionally min-SNR-γ weighted.

  Per example, as diffusers' train_text_to_image.py: the mean squared error
  times min(SNR, γ) / SNR (epsilon) or min(SNR, γ) / (SNR + 1) (v_prediction).
  """
  prediction = unet_fn(gaussian.q_sample(schedule, latents, t, noise), t)
  target = gaussian.training_target(prediction_type, latents, noise, schedule, t)
  mse = jnp.mean(jnp.square(prediction.astype(jnp.float32) - target), axis=(1, 2, 3))
  if min_snr_gamma is None:
    weight = jnp.ones_like(mse)
  else:
    weight = gaussian.min_snr_weight(schedule, t, min_snr_gamma, prediction_type)
  return jnp.mean(weight * mse), dict(mse=jnp.mean(mse), snr_weight=jnp.mean(weight))


def sampler_fn(
  sd: StableDiffusion,
  params: Mapping[str, Any],
  plan: samplers.SamplerPlan,
  guidance_scale: float,
  empty_tokens: np.ndarray,
  latent_side: int,
):
  """(tokens, _, rng) -> images in [-1, 1]: `stable_diffusion.generate` from fresh noise.

  Classifier-free guidance runs against the empty prompt, as diffusers' pipeline.
  """
  generate = functools.partial(
    stable_diffusion.generate,
    unet_config=sd.unet_config,
    vae_config=sd.vae_config,
    text_config=sd.text_config,
    guided=guidance_scale > 1,
  )
  shape = (latent_side, latent_side, sd.vae_config.latent_channels)

  def sample_fn(tokens, _, rng):
    noise_rng, step_rng = jax.random.split(rng)
    latents = jax.random.normal(noise_rng, (len(tokens),) + shape)
    uncond = np.repeat(empty_tokens, len(tokens), axis=0)
    step_rng = step_rng if plan.stochastic else None
    images = generate(params, plan, tokens, uncond, latents, step_rng, jnp.float32(guidance_scale))
    return images * 2.0 - 1.0

  return sample_fn


def with_values(boxed: Any, values: Any, name: str) -> Any:
  """`boxed` (abstract, logical axis names kept) holding `values`; named error on a shape change."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)

  def put(box, value):
    expected = nn.meta.unbox(box).shape
    if tuple(np.shape(value)) != tuple(expected):
      raise ValueError(f"{name}: expected a parameter of shape {expected}, found {np.shape(value)}")
    value = jnp.asarray(value, nn.meta.unbox(box).dtype)
    return box.replace_boxed(value) if is_box(box) else value

  return jax.tree.map(put, boxed, values, is_leaf=is_box)


class SDFinetuneTask(captioned_images.CaptionedImageTask):
  """The `sd_finetune` task (see the module docstring). Config sections:

  pretrained: the diffusers folder (made absolute, so the run samples from anywhere).
  data: kind, manual_dir, split, resolution, center_crop, random_flip, max_examples,
    loader ("grain": decoded on the fly by `worker_count` processes; "memory"), seed.
  finetune: cond_drop_prob, min_snr_gamma, noise_offset, sample_posterior,
    prediction_type (None: the folder's scheduler).
  model: compute_dtype, remat (`jaxgen.nn.precision`; the frozen VAE runs in float32).
  sample: sampler (None: the folder's scheduler), num_steps, guidance, eta, prompts.

  `pipeline=` injects a loaded `StableDiffusion` bundle (tests, notebooks).
  """

  generate_batch_size = 16  # prompts per compiled chunk of a full-size SD U-Net
  grid_scale = 1  # full-size images need no upscaling

  def __init__(self, config, pipeline: StableDiffusion | None = None):
    self.config = config
    if pipeline is None:
      path = config.get("pretrained")
      if isinstance(path, str) and path and "://" not in path:
        config.pretrained = path = os.path.abspath(path)
      pipeline = load_pretrained(path)
    self.sd = pipeline
    self.resolution = check_resolution(config.data.resolution, pipeline)
    self.latent_side = self.resolution // pipeline.latent_downsample_factor
    self.loader = sd_finetune_data.check_loader(config.data)
    # In memory every epoch sees the same pixels: flips are drawn on device.
    self.flip_on_device = self.loader == "memory" and config.data.get("random_flip", False)
    ft = config.finetune
    self.prediction_type = ft.get("prediction_type") or pipeline.scheduler.prediction_type
    check_finetune_options(ft, self.prediction_type)
    self.schedule = pipeline.scheduler.schedule()
    policy = model_policy(config.get("model"))  # compute dtype and remat of the U-Net
    self.unet = UNet2DConditionModel(pipeline.unet_config, **policy)
    self.text_model = CLIPTextModel(pipeline.text_config, dtype=policy["dtype"])
    frozen = jax.device_put({k: pipeline.params[k] for k in ("vae", "text_encoder")})
    self.autoencoder = FrozenAutoencoder(pipeline.vae_config, frozen["vae"])
    self.text_params = frozen["text_encoder"]
    self.empty_tokens = pipeline.tokenize([""])  # the dropped caption

  # -- data --------------------------------------------------------------

  def train_dataset(self):
    """`data.loader="grain"`: records decoded on the fly by grain workers (else None)."""
    if self.loader != "grain":
      return None
    return sd_finetune_data.train_dataset(self.config.data, self.resolution, self.sd.tokenizer)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """Every record decoded into memory (`data.loader="memory"`, and `jaxgen train --dry-run`)."""
    return sd_finetune_data.train_arrays(self.config.data, self.resolution, self.sd.tokenizer)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    r, length = self.resolution, self.sd.tokenizer.model_max_length
    return dict(
      image=jax.ShapeDtypeStruct((batch_size, r, r, 3), jnp.uint8),
      text_tokens=jax.ShapeDtypeStruct((batch_size, length), jnp.int32),
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    expected = self.abstract_batch(len(batch["image"]))
    for key, spec in expected.items():
      found = np.asarray(batch[key])
      if found.shape != spec.shape or found.dtype != spec.dtype:
        raise ValueError(
          f"batch[{key!r}]: expected {spec.dtype} {spec.shape} (data.resolution="
          f"{self.resolution}), found {found.dtype} {found.shape}"
        )

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    """The folder's U-Net weights, boxed with the U-Net's logical axis names (for sharding)."""
    cfg = self.sd.text_config
    x = jnp.zeros((1, self.latent_side, self.latent_side, self.sd.unet_config.in_channels))
    context = jnp.zeros((1, batch["text_tokens"].shape[1], cfg.hidden_size))
    boxed = jax.eval_shape(self.unet.init, rng, x, jnp.zeros((1,), jnp.int32), context)
    return {"unet": with_values(boxed["params"], self.sd.params["unet"], "pretrained unet")}

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    """Frozen CLIP states (B, L, D) of token ids, as the pipeline conditions on them."""
    states = self.text_model.apply({"params": self.text_params}, tokens).last_hidden_state
    return jax.lax.stop_gradient(states)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    ft = self.config.finetune
    flip_rng, latent_rng, drop_rng, diffusion_rng = jax.random.split(rng, 4)
    images = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    if self.flip_on_device:
      flip = jax.random.bernoulli(flip_rng, 0.5, (images.shape[0], 1, 1, 1))
      images = jnp.where(flip, images[:, :, ::-1], images)
    latents = self.autoencoder.encode(images, latent_rng if ft.sample_posterior else None)
    tokens = drop_condition(drop_rng, batch["text_tokens"], self.empty_tokens, ft.cond_drop_prob)
    context = self.encode_text(tokens)

    def unet_fn(x_t, t):
      return self.unet.apply({"params": params["unet"]}, x_t, t, context, train=True)

    t, noise = draw_noise(
      diffusion_rng, latents, self.schedule.num_train_timesteps, ft.noise_offset
    )
    loss, metrics = denoising_loss(
      unet_fn,
      latents,
      t,
      noise,
      self.schedule,
      prediction_type=self.prediction_type,
      min_snr_gamma=ft.get("min_snr_gamma"),
    )
    return loss, dict(metrics, latent_std=jnp.std(latents))

  # -- the trained pipeline --------------------------------------------------

  def pipeline(self, params) -> StableDiffusion:
    """The folder's pipeline with the run's U-Net (`params`, e.g. the restored EMA) swapped in."""
    unet = jax.tree.map(np.asarray, jax.device_get(nn.meta.unbox(params["unet"])))
    return dataclasses.replace(self.sd, params=dict(self.sd.params, unet=unet))

  def export_diffusers(self, params, folder: str) -> str:
    """Writes the pipeline with `params`' U-Net as a diffusers folder; returns `folder`."""
    diffusers_pipeline.save_stable_diffusion(self.pipeline(params), folder)
    return folder

  # -- generation (`CaptionedImageTask.generate` runs these) ------------------

  def sampling_options(self, sampler, num_steps, guidance_scale) -> tuple[str, int, float]:
    """Options with None replaced by `sample.*` (sampler: the folder's scheduler), checked."""
    s = self.config.sample
    sampler = sampler or s.get("sampler") or self.sd.scheduler.sampler
    num_steps = s.num_steps if num_steps is None else num_steps
    guidance_scale = s.guidance if guidance_scale is None else guidance_scale
    samplers.check_sampling_options(
      sampler, num_steps, guidance_scale, self.sd.scheduler.num_train_timesteps
    )
    return sampler, int(num_steps), float(guidance_scale)

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's tokens and an all-ones mask (`sampler_fn` reads no mask)."""
    tokens = self.sd.tokenize(captions)
    return tokens, np.ones_like(tokens)

  def caption_sampler(self, params, sampler: str, num_steps: int, guidance_scale: float):
    """`sampler_fn` over the run's U-Net, guided against the empty prompt."""
    plan = self.sd.scheduler.plan(num_steps, eta=self.config.sample.eta, sampler=sampler)
    model_params = dict(
      unet=nn.meta.unbox(params["unet"]), vae=self.autoencoder.params, text_encoder=self.text_params
    )
    return sampler_fn(
      self.sd, model_params, plan, guidance_scale, self.empty_tokens, self.latent_side
    )

  def preview(self, params, rng: jax.Array) -> np.ndarray:
    captions = list(self.config.sample.prompts)
    images = self.generate(params, self.conditions(captions), rng)["image"]
    return make_grid(images, captions, scale=1, ncols=min(4, len(captions)))
