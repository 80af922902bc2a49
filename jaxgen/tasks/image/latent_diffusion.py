"""Training a latent text-to-image model on the built-in captioned shapes.

The second stage of latent diffusion (task `latent_diffusion`,
`configs/latent_diffusion_shapes.py`): a frozen KL autoencoder trained by the
`autoencoder` task maps images to latents on the fly, and the text encoder +
U-Net of the `text_to_image` task (`TextConditionedUNet`) learns to denoise
them. With `model.inpainting`, the U-Net also sees the mask and the masked
image's latents as extra input channels (GLIDE / SD-inpainting) and trains on
random masks. `LatentDiffusionTask.edit` does image-to-image and inpainting
(`jaxgen.diffusion.editing`).

Stable Diffusion pipelines converted from diffusers are sampled with
`jaxgen.pipelines.stable_diffusion`, not with this task.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.data import shapes
from jaxgen.data.images import to_uint8
from jaxgen.diffusion import editing
from jaxgen.models.autoencoder import AutoencoderKLConfig
from jaxgen.models.unet_config import UNetConfig
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder, latent_std
from jaxgen.tasks.image import text_to_image
from jaxgen.tasks.image.autoencoder import AutoencoderTask
from jaxgen.tasks.image.text_to_image import guided_model_fn, sampling_plan
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of
from jaxgen.training.task import check_prompts

_LOG = logging.getLogger(__name__)


def load_autoencoder(workdir: str, step: int | None = None) -> FrozenAutoencoder:
  """The EMA autoencoder of a run directory written by `jaxgen train` with task `autoencoder`."""
  if not workdir:
    raise ValueError(
      "autoencoder.workdir: expected the run directory of a trained autoencoder "
      "(`jaxgen train --config configs/autoencoder_shapes.py`), found nothing"
    )
  task, params = load_run_of(AutoencoderTask, workdir, flag="autoencoder.workdir", step=step)
  return FrozenAutoencoder(task.vae_config, jax.device_put(params["autoencoder"]))


def check_autoencoder(vae: AutoencoderKLConfig, resolution: int) -> None:
  """Named errors for an autoencoder that cannot encode the task's RGB images."""
  if vae.in_channels != 3 or vae.out_channels != 3:
    raise ValueError(
      f"autoencoder: expected an RGB autoencoder (in/out_channels 3), found "
      f"{vae.in_channels}/{vae.out_channels}"
    )
  if resolution % vae.downsample_factor:
    raise ValueError(
      f"data.resolution must be a multiple of the autoencoder's downsample "
      f"factor {vae.downsample_factor}, got {resolution}"
    )


def check_latent_patch_size(patch_size: int) -> None:
  """Named error for a patch size other than 1 (latents are not patchified)."""
  if patch_size != 1:
    raise ValueError(
      f"model.patch_size: latent diffusion works on latents, expected 1, found {patch_size}"
    )


def latent_unet_input_channels(latent_channels: int, inpainting: bool) -> int:
  """Latents [+ mask + masked-image latents], before the coordinate channels."""
  return latent_channels + (1 + latent_channels if inpainting else 0)


def check_latent_unet(
  unet: UNetConfig,
  *,
  latent_channels: int,
  inpainting: bool,
  coord_channels: bool,
  latent_factor: int,
  latent_resolution: int,
) -> None:
  """Named errors when the U-Net's channels or depth do not fit the latents."""
  expected_in = latent_unet_input_channels(latent_channels, inpainting)
  expected_in += 2 if coord_channels else 0
  if unet.in_channels != expected_in or unet.out_channels != latent_channels:
    parts = [f"{latent_channels} latent"]
    if inpainting:
      parts.append(f"1 mask + {latent_channels} masked-image latent")
    if coord_channels:
      parts.append("2 coordinate")
    raise ValueError(
      f"unet.in_channels/out_channels must be {expected_in}/{latent_channels} "
      f"({' + '.join(parts)} channels in), got {unet.in_channels}/{unet.out_channels}"
    )
  factor = 2**unet.num_downsamples
  if latent_resolution % factor:
    raise ValueError(
      f"data.resolution / {latent_factor} (latent side {latent_resolution}) must be "
      f"a multiple of 2^{unet.num_downsamples} (the U-Net's downsamplings)"
    )


def scaled_autoencoder(autoencoder: FrozenAutoencoder, config) -> FrozenAutoencoder:
  """`autoencoder` with `config.autoencoder.scaling_factor`, or 1/std of training latents."""
  ae_cfg = config.autoencoder
  scaling = ae_cfg.get("scaling_factor")
  if scaling is None:
    num = min(ae_cfg.num_stat_examples, config.data.num_train_examples)
    images = train_images(config, num)
    scaling = 1.0 / latent_std(autoencoder, images)
    _LOG.info("latent scaling factor 1/std = %.5f (from %d training images)", scaling, num)
  if not scaling > 0:
    raise ValueError(f"autoencoder.scaling_factor: expected a positive number, found {scaling}")
  return autoencoder.with_scaling_factor(scaling)


def train_images(config, num: int) -> np.ndarray:
  """The first `num` uint8 training images."""
  return shapes.make_split("train", num, resolution=config.data.resolution, seed=config.data.seed)[
    "image"
  ]


def random_box_masks(
  rng: jax.Array, batch: int, height: int, width: int, full_mask_prob: float
) -> jax.Array:
  """(B, H, W, 1) training masks, 1 = generate: one random box each, or all ones.

  A mask is all ones with probability `full_mask_prob`. Box sides are
  uniform in [1, side]; all-ones masks keep the model a plain text-to-image
  model too (SD-inpainting masks everything for a share of its batches).
  """
  size_rng, pos_rng, full_rng = jax.random.split(rng, 3)
  sides = jnp.array([height, width])
  size = jax.random.randint(size_rng, (batch, 2), 1, sides + 1)
  corner = jnp.floor(jax.random.uniform(pos_rng, (batch, 2)) * (sides - size + 1)).astype(jnp.int32)
  ys = jnp.arange(height)[None, :, None]
  xs = jnp.arange(width)[None, None, :]
  inside = (
    (ys >= corner[:, 0, None, None])
    & (ys < (corner[:, 0] + size[:, 0])[:, None, None])
    & (xs >= corner[:, 1, None, None])
    & (xs < (corner[:, 1] + size[:, 1])[:, None, None])
  )
  full = jax.random.bernoulli(full_rng, full_mask_prob, (batch, 1, 1))
  return (inside | full).astype(jnp.float32)[..., None]


def check_edit_images(images: np.ndarray, resolution: int) -> np.ndarray:
  """Named error unless `images` is uint8 (B, resolution, resolution, 3)."""
  images = np.asarray(images)
  expected = (resolution, resolution, 3)
  if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
    raise ValueError(
      f"images: expected uint8 (B, {expected[0]}, {expected[1]}, 3), found "
      f"{images.dtype} {images.shape}"
    )
  return images


def check_edit_inputs(
  images: np.ndarray, captions: Sequence[str], strength: float, resolution: int
) -> tuple[np.ndarray, list[str]]:
  """(images, captions) checked for `LatentDiffusionTask.edit`: named errors before compiling."""
  editing.check_strength(strength)
  images = check_edit_images(images, resolution)
  captions = check_prompts(captions, "captions")
  if len(captions) != len(images):
    raise ValueError(f"captions: expected one per image ({len(images)}), found {len(captions)}")
  return images, captions


class LatentDiffusionTask(text_to_image.TextToImageTask):
  """The `latent_diffusion` task: text-to-image diffusion on frozen autoencoder latents.

  It is the `text_to_image` task with images replaced by latents: the same
  data, tokenizer, text encoder + U-Net (`TextConditionedUNet`), conditioning
  dropout, samplers, generation signature, judge and preview grid; sampling
  decodes the final latents. Config keys beyond `text_to_image`'s:
    autoencoder.workdir / step: the trained autoencoder run (newest step by default).
    autoencoder.scaling_factor: None measures 1/std of the training latents.
    autoencoder.num_stat_examples: training images used for that measurement.
    autoencoder.sample_posterior: train on posterior samples (True) or means.
    model.inpainting: U-Net input = [noisy latents, mask, masked-image latents].
    inpainting.full_mask_prob: share of all-ones training masks.

  `autoencoder=` injects a FrozenAutoencoder (tests, notebooks) instead of
  loading `autoencoder.workdir`. A relative `autoencoder.workdir` is made
  absolute in `config` (so the run's config.json finds it from anywhere).
  """

  dependent_runs = ("autoencoder.workdir",)

  def __init__(self, config, autoencoder: FrozenAutoencoder | None = None):
    absolute_dependent_runs(config, type(self))
    if autoencoder is None:
      autoencoder = load_autoencoder(config.autoencoder.workdir, config.autoencoder.get("step"))
    check_autoencoder(autoencoder.config, config.data.resolution)
    self.autoencoder = scaled_autoencoder(autoencoder, config)
    self.latent_factor = autoencoder.config.downsample_factor
    self.latent_resolution = config.data.resolution // self.latent_factor
    self.latent_channels = autoencoder.config.latent_channels
    self.inpainting = bool(config.model.get("inpainting", False))
    check_latent_patch_size(config.model.get("patch_size", 1))
    super().__init__(config)

  def check_unet(self, unet: UNetConfig) -> None:
    check_latent_unet(
      unet,
      latent_channels=self.latent_channels,
      inpainting=self.inpainting,
      coord_channels=self.coord_channels,
      latent_factor=self.latent_factor,
      latent_resolution=self.latent_resolution,
    )

  @property
  def unet_input_channels(self) -> int:
    """Latents [+ mask + masked-image latents], before the coordinate channels."""
    return latent_unet_input_channels(self.latent_channels, self.inpainting)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    b, r = batch["image"].shape[0], self.latent_resolution
    shape = (b, r, r, self.unet_input_channels)
    return text_to_image.init_params(self.model, rng, shape, batch)

  def inpainting_condition(self, images: jax.Array, pixel_mask: jax.Array) -> jax.Array:
    """The extra U-Net channels for images in [-1, 1] and a (B, H, W, 1) mask (1 = generate)."""
    masked = self.autoencoder.encode(editing.masked_image(images, pixel_mask))
    latent_mask = editing.downsample_mask(pixel_mask, self.latent_factor)
    return editing.inpainting_inputs(latent_mask, masked)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.config.diffusion
    images = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    latent_rng, drop_rng, mask_rng, diffusion_rng = jax.random.split(rng, 4)
    sample_posterior = self.config.autoencoder.get("sample_posterior", True)
    z0 = self.autoencoder.encode(images, latent_rng if sample_posterior else None)
    text, null_text = (batch["text_tokens"], batch["text_mask"]), self.null_text(z0.shape[0])
    extra = None
    if self.inpainting:
      b, h, w, _ = images.shape
      pixel_mask = random_box_masks(mask_rng, b, h, w, self.config.inpainting.full_mask_prob)
      extra = self.inpainting_condition(images, pixel_mask)
    loss, metrics = text_to_image.text_diffusion_loss(
      self.model, params, z0, text, null_text, (drop_rng, diffusion_rng), self.schedule, d, extra
    )
    return loss, dict(metrics, latent_std=jnp.std(z0))

  # -- sampling: latents, decoded (`TextToImageTask.sample` runs the sampler) --

  def sample_shape(self, batch: int, resolution: int) -> tuple[int, ...]:
    side = resolution // self.latent_factor
    return (batch, side, side, self.latent_channels)

  def sample_channels(self, batch: int, resolution: int) -> jax.Array | None:
    """The inpainting model generates from text alone with everything masked."""
    if not self.inpainting:
      return None
    mask = jnp.ones((batch, resolution, resolution, 1))
    return self.inpainting_condition(jnp.zeros(mask.shape[:3] + (3,)), mask)

  def to_images(self, x: jax.Array) -> jax.Array:
    return self.autoencoder.decode(x)

  # -- editing ---------------------------------------------------------------

  @functools.partial(
    jax.jit, static_argnames=("self", "sampler", "num_steps", "strength", "paste_pixels")
  )
  def edit_images(
    self,
    params,
    images: jax.Array,
    tokens: jax.Array,
    mask: jax.Array,
    pixel_mask: jax.Array | None,
    rng: jax.Array,
    *,
    sampler: str,
    num_steps: int,
    strength: float,
    guidance_scale: float | jax.Array,
    eta: float | jax.Array = 0.0,
    paste_pixels: bool = True,
  ) -> jax.Array:
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
    null_text = self.null_text(tokens.shape[0])
    model_fn = guided_model_fn(self.model, params, (tokens, mask), null_text, guidance_scale, extra)
    plan = sampling_plan(self.schedule, self.config.diffusion, sampler, num_steps, eta)
    noise_rng, sample_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, z0.shape)
    step_rng = sample_rng if plan.stochastic else None
    z = editing.edit(
      model_fn, plan, self.schedule, z0, noise, step_rng, strength=strength, keep_mask=keep_mask
    )
    out = self.autoencoder.decode(z)
    if pixel_mask is not None and paste_pixels:
      out = editing.composite(out, images, pixel_mask)
    return out

  def edit(
    self,
    params,
    images: np.ndarray,
    captions: Sequence[str],
    rng: jax.Array,
    *,
    strength: float = 1.0,
    mask: np.ndarray | None = None,
    sampler: str | None = None,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    paste_pixels: bool = True,
  ) -> np.ndarray:
    """uint8 images edited towards `captions`: img2img (`strength`) or inpainting (`mask`).

    images: uint8 (B, H, W, 3) at data.resolution; mask: (B, H, W) or
    (B, H, W, 1), 1 = generate, 0 = keep. Options left None take the
    config's `sample.*` values. Named errors before compiling.
    """
    images, captions = check_edit_inputs(images, captions, strength, self.resolution)
    sampler, num_steps, guidance_scale = text_to_image.sampling_options(
      self.config, sampler, num_steps, guidance_scale
    )
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    pixel_mask = None if mask is None else editing.check_mask(jnp.asarray(mask), x)
    tokens, text_mask = self.tokenize(captions)
    out = self.edit_images(
      params,
      x,
      jnp.asarray(tokens),
      jnp.asarray(text_mask),
      pixel_mask,
      rng,
      sampler=sampler,
      num_steps=num_steps,
      strength=float(strength),
      guidance_scale=jnp.float32(guidance_scale),
      eta=jnp.float32(self.config.sample.eta),
      paste_pixels=paste_pixels,
    )
    return to_uint8(np.asarray(out))
