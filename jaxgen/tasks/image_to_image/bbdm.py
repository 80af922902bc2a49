"""The `bbdm` task: Brownian-bridge diffusion from a source picture to its target (BBDM, LBBDM).

Li et al. 2023, reference xuekt98/BBDM. The bridge (`jaxgen.diffusion.bridge`)
runs from the target x0 to the source y, so y must live where x0 lives:

- Pixel space (`model.space = "pixel"`, the reference's `BBDM`): x0 is the
  target image and y the source as an RGB image in [-1, 1]. The reference
  loads every picture with PIL's `convert('RGB')`, so a label map enters as
  its palette colours and a grey sketch as grey copied to three channels;
  here labels become their display colours (`scenes.LABEL_COLOURS`), a
  sketch or edge map its grey value in all three channels, a day photo
  itself (`source_image`). The U-Net sees [x_t, y] (the reference's
  `condition_key` concatenation, `in_channels` = 2 x 3).
- Latent space (`model.space = "latent"`, `LBBDM`): a trained jaxgen
  autoencoder run (`autoencoder.workdir`, frozen) encodes both x0 and y; the
  U-Net sees [z_t, SpatialRescaler(y)], the source image bilinearly halved
  log2(f) times (a 2x2 mean, which is what a 0.5 bilinear resize computes)
  then mapped by a trainable bias-free 1x1 conv (the reference's
  `CondStageParams`), and samples are decoded. The reference's VQGAN latents
  are used unscaled (`normalize_latent: False`); a KL autoencoder's latents
  have no fixed scale, so `autoencoder.scaling_factor` None scales them by
  1/std of the training targets' latents (1.0 keeps them raw).

The denoiser is the guided-diffusion U-Net (`jaxgen.models.adm_unet`) with the
reference's arguments; its `attention_resolutions` are compared with the
downsample rate as in the reference, so BBDM's (32, 16, 8) with
channel_mult (1, 4, 8) gives attention only in the middle block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.data import scenes
from jaxgen.diffusion import bridge
from jaxgen.models.adm_unet import ADMUNet, ADMUNetConfig
from jaxgen.nn import partitioning as pt
from jaxgen.nn import precision
from jaxgen.pipelines.frozen_autoencoder import FrozenAutoencoder, latent_std
from jaxgen.tasks.image.latent_diffusion import check_autoencoder, load_autoencoder
from jaxgen.tasks.image_to_image.translation import ImageToImageTask
from jaxgen.tasks.registry import absolute_dependent_runs

_LOG = logging.getLogger(__name__)

SPACES = ("pixel", "latent")
IMAGE_CHANNELS = 3
# BBDM's `UNetParams` keys that are not guided-diffusion `UNetModel` arguments
# (the concatenation is this task's; no cross-attention transformer).
_BBDM_ONLY_KEYS = ("use_spatial_transformer", "context_dim", "condition_key")


def label_colours() -> jax.Array:
  """(NUM_LABELS, 3) display colours of the labels in [-1, 1]."""
  return jnp.asarray(scenes.LABEL_COLOURS, jnp.float32) / 127.5 - 1.0


def source_image(kind: str, source: jax.Array) -> jax.Array:
  """The model input of a source (`source_input`) as an RGB image in [-1, 1], like PIL's convert('RGB').

  label: one-hot (B, H, W, NUM_LABELS) -> display colours; sketch/edges:
  (B, H, W, 1) grey -> three equal channels; day: the image itself.
  """
  if kind == "label":
    return jnp.einsum("bhwl,lc->bhwc", source, label_colours())
  if source.shape[-1] == 1:
    return jnp.repeat(source, IMAGE_CHANNELS, axis=-1)
  return source


def unet_config(section: Mapping[str, Any]) -> ADMUNetConfig:
  """An ADMUNetConfig from a `unet` section with BBDM's `UNetParams` keys."""
  values = {k: v for k, v in dict(section).items() if k not in _BBDM_ONLY_KEYS}
  if section.get("use_spatial_transformer") or section.get("context_dim") is not None:
    raise ValueError(
      "unet.use_spatial_transformer / unet.context_dim: BBDM conditions by concatenation; "
      "expected False / None, found "
      f"{section.get('use_spatial_transformer')!r} / {section.get('context_dim')!r}"
    )
  return ADMUNetConfig.from_reference(values)


class SpatialRescaler(nn.Module):
  """LBBDM's condition stage: `n_stages` bilinear halvings, then a bias-free 1x1 conv."""

  n_stages: int
  out_channels: int = IMAGE_CHANNELS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.n_stages):  # a 0.5 bilinear resize averages each 2x2 block
      b, h, w, c = x.shape
      x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return nn.Conv(
      self.out_channels,
      (1, 1),
      use_bias=False,
      param_dtype=jnp.float32,
      kernel_init=pt.annotated(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
      name="channel_mapper",
    )(x)


class BridgeDenoiser(nn.Module):
  """The U-Net on [x_t, condition]; the condition is y (pixel) or the rescaled source image (latent)."""

  unet: ADMUNetConfig
  rescale_stages: int | None = None  # None: pixel space, no condition stage
  dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, condition: jax.Array) -> jax.Array:
    if self.rescale_stages is not None:
      condition = SpatialRescaler(self.rescale_stages, name="cond_stage_model")(condition)
    model = ADMUNet(self.unet, dtype=self.dtype, remat=self.remat, name="denoise_fn")
    x = jnp.concatenate([x_t, condition.astype(x_t.dtype)], axis=-1)
    return model(x, t.astype(jnp.float32)).astype(jnp.float32)


class BBDMTask(ImageToImageTask):
  """The `bbdm` task (see module docstring). Config sections beyond `data`:

    model.space: "pixel" or "latent"; model.compute_dtype, model.remat.
    bridge: num_timesteps, mt_type, max_var, objective, loss_type, sample_step,
      skip_sample, eta, clip_denoised (the reference's `BB.params`).
    unet: BBDM's `UNetParams` (guided-diffusion `UNetModel` arguments).
    autoencoder (latent): workdir, step, scaling_factor, num_stat_examples.

  `autoencoder=` injects a FrozenAutoencoder (tests) instead of loading
  `autoencoder.workdir`.
  """

  dependent_runs = ("autoencoder.workdir",)

  def __init__(self, config, autoencoder: FrozenAutoencoder | None = None):
    super().__init__(config)
    self.space = config.model.get("space", "pixel")
    if self.space not in SPACES:
      raise ValueError(f"model.space: expected one of {SPACES}, found {self.space!r}")
    b = config.bridge
    self.schedule = bridge.make_bridge_schedule(b.num_timesteps, b.mt_type, b.max_var)
    bridge.check_loss_type(b.loss_type)
    bridge.check_sampling(b.sample_step, b.eta, b.objective, b.num_timesteps)
    self.autoencoder, self.latent_factor = None, 1
    if self.space == "latent":
      section = config.get("autoencoder") or {}
      if section:
        absolute_dependent_runs(config, type(self))
      if autoencoder is None:
        autoencoder = load_autoencoder(section.get("workdir"), section.get("step"))
      check_autoencoder(autoencoder.config, self.resolution)
      self.latent_factor = autoencoder.config.downsample_factor
      self.autoencoder = self._scaled(autoencoder)
    self.unet = unet_config(config.unet)
    self._check_unet()
    stages = int(math.log2(self.latent_factor)) if self.space == "latent" else None
    self.denoiser = BridgeDenoiser(self.unet, stages, **precision.model_policy(config.model))

  @property
  def sample_channels(self) -> int:
    """Channels of x0 and y: RGB, or the autoencoder's latent channels."""
    return IMAGE_CHANNELS if self.autoencoder is None else self.autoencoder.config.latent_channels

  def _check_unet(self) -> None:
    c = self.sample_channels
    if self.unet.in_channels != c + IMAGE_CHANNELS or self.unet.out_channels != c:
      raise ValueError(
        f"unet.in_channels/out_channels: expected {c + IMAGE_CHANNELS}/{c} ({c} "
        f"{self.space} channels of x_t + {IMAGE_CHANNELS} condition channels in), found "
        f"{self.unet.in_channels}/{self.unet.out_channels}"
      )
    side = self.resolution // self.latent_factor
    factor = 2**self.unet.num_downsamples
    if side % factor:
      raise ValueError(
        f"data.resolution: the U-Net's {self.unet.num_downsamples} downsamplings need a "
        f"{self.space} side that is a multiple of {factor}, found {side}"
      )

  def _scaled(self, autoencoder: FrozenAutoencoder) -> FrozenAutoencoder:
    scaling = self.config.autoencoder.get("scaling_factor")
    if scaling is None:
      num = min(self.config.autoencoder.num_stat_examples, self.config.data.num_train_examples)
      targets = self.train_arrays()["target"][:num]
      scaling = 1.0 / latent_std(autoencoder, targets)
      _LOG.info("latent scaling factor 1/std = %.5f (from %d training targets)", scaling, num)
    if not scaling > 0:
      raise ValueError(f"autoencoder.scaling_factor: expected a number > 0, found {scaling}")
    return autoencoder.with_scaling_factor(scaling)

  # -- model ---------------------------------------------------------------

  def endpoints(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x0, y, condition image) of a uint8 batch, in the bridge's space."""
    x0 = self.target_input(batch["target"])
    y = source_image(self.source, self.source_input(batch["source"]))
    if self.autoencoder is None:
      return x0, y, y
    return self.autoencoder.encode(x0), self.autoencoder.encode(y), y

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    b, side = batch["target"].shape[0], self.resolution // self.latent_factor
    x = jnp.zeros((b, side, side, self.sample_channels), jnp.float32)
    condition = jnp.zeros((b, self.resolution, self.resolution, IMAGE_CHANNELS), jnp.float32)
    if self.autoencoder is None:
      condition = x
    return self.denoiser.init(rng, x, jnp.zeros((b,), jnp.int32), condition)["params"]

  def model_fn(self, params, condition: jax.Array) -> bridge.ModelFn:
    return lambda x_t, t: self.denoiser.apply({"params": params}, x_t, t, condition)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    b = self.config.bridge
    x0, y, condition = self.endpoints(batch)
    return bridge.bridge_loss(
      self.model_fn(params, condition),
      self.schedule,
      x0,
      y,
      rng,
      objective=b.objective,
      loss_type=b.loss_type,
    )

  # -- sampling --------------------------------------------------------------

  def sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
    """sample_step, eta, clip_denoised: the options given, else the config's `bridge` values."""
    b = self.config.bridge
    unknown = sorted(set(options) - {"sample_step", "eta", "clip_denoised"})
    if unknown:
      raise ValueError(
        f"{unknown[0]}: not a BBDM sampling option; expected sample_step, eta, clip_denoised"
      )
    values = {"sample_step": b.sample_step, "eta": b.eta, "clip_denoised": b.clip_denoised}
    values.update({k: v for k, v in options.items() if v is not None})
    bridge.check_sampling(values["sample_step"], values["eta"], b.objective, b.num_timesteps)
    return values

  def check_options(self, options: Mapping[str, Any]) -> None:
    self.sampling_options(options)

  def translate(self, params, source: jax.Array, rng: jax.Array, **options) -> jax.Array:
    """Targets for `source_input(...)` sources by the reference's skip-step sampler, in [-1, 1].

    Jittable (options are Python values): y (or its latents) is the start,
    the bridge runs in one scan, latents are decoded.
    """
    b, values = self.config.bridge, self.sampling_options(options)
    y = source_image(self.source, source)
    start = y if self.autoencoder is None else self.autoencoder.encode(y)
    x0 = bridge.bridge_sample(
      self.model_fn(params, y),
      self.schedule,
      start,
      rng,
      objective=b.objective,
      sample_step=int(values["sample_step"]),
      skip_sample=b.get("skip_sample", True),
      eta=float(values["eta"]),
      clip_denoised=bool(values["clip_denoised"]),
    )
    images = x0 if self.autoencoder is None else self.autoencoder.decode(x0)
    return jnp.clip(images, -1.0, 1.0)
