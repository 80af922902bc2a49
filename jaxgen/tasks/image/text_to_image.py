"""Text-conditioned pixel-space diffusion on the built-in captioned-shapes data.

Model: a small Transformer text encoder trained from scratch, whose token
states condition a diffusers-compatible U-Net through cross-attention
(`jaxgen.models.text_conditioned_unet`). Training: Gaussian diffusion with
conditioning dropout (for classifier-free guidance). Sampling: tokenize ->
encode text once -> one-scan sampler with guidance. Evaluation: the
analytic shapes judge on held-out captions.

Generation follows `GenerativeTask`: `conditions(prompts)` ->
{"caption": str array}; `generate(params, conditions, rng, sampler=,
num_steps=, guidance_scale=)` -> {"image": uint8 (N, H, W, 3)};
`save_samples` writes a captioned PNG grid.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import shapes
from jaxgen.data.tokenizer import build_caption_tokenizer
from jaxgen.diffusion import gaussian, guidance, samplers, schedules
from jaxgen.diffusion.samplers import check_sampling_options
from jaxgen.models.text_conditioned_unet import TextConditionedUNet
from jaxgen.models.unet_config import UNetConfig
from jaxgen.nn import precision
from jaxgen.tasks.image import captioned_images
from jaxgen.tasks.image.captioned_data import (
  IMAGE_CHANNELS,
  abstract_captioned_batch,
  captioned_shapes_arrays,
  data_kind,
  scene_caption_words,
)


def sampling_options(
  config: ml_collections.ConfigDict,
  sampler: str | None,
  num_steps: int | None,
  guidance_scale: float | None,
) -> tuple[str, int, float]:
  """Options with None replaced by the config's `sample.*` defaults, checked."""
  s = config.sample
  sampler = s.sampler if sampler is None else sampler
  num_steps = s.num_steps if num_steps is None else num_steps
  guidance_scale = s.guidance if guidance_scale is None else guidance_scale
  check_sampling_options(sampler, num_steps, guidance_scale, config.diffusion.num_train_timesteps)
  return sampler, int(num_steps), float(guidance_scale)


def sampling_plan(
  schedule: schedules.NoiseSchedule,
  diffusion: ml_collections.ConfigDict,
  sampler: str,
  num_steps: int,
  eta,
) -> samplers.SamplerPlan:
  """The sampler's step table for a `diffusion.*` config (eta is DDIM's alone)."""
  return samplers.make_plan(
    schedule,
    sampler,
    num_steps,
    eta=eta if sampler == "ddim" else 0.0,
    prediction_type=diffusion.prediction_type,
  )


def guided_model_fn(
  model: TextConditionedUNet,
  params,
  text: tuple[jax.Array, jax.Array],
  null_text: tuple[jax.Array, jax.Array],
  guidance_scale,
  extra: jax.Array | None = None,
):
  """model_fn(x, t) with classifier-free guidance of (tokens, mask) `text` against `null_text`.

  Both prompts are encoded once, not at every sampler step. `extra`
  channels (e.g. an inpainting mask) are concatenated to the model input in
  both branches.
  """
  variables = {"params": params}
  encode = functools.partial(model.apply, variables, method=TextConditionedUNet.encode_text)
  cond = (*encode(*text), text[1], extra)
  uncond = (*encode(*null_text), null_text[1], extra)

  def model_fn(x, t, c):
    states, pooled, context_mask, extra_channels = c
    if extra_channels is not None:
      x = jnp.concatenate([x, extra_channels], axis=-1)
    return model.apply(
      variables, x, t, states, context_mask, pooled, method=TextConditionedUNet.denoise
    )

  return guidance.classifier_free_guidance(model_fn, cond, uncond, guidance_scale)


def text_diffusion_loss(
  model: TextConditionedUNet,
  params,
  x0: jax.Array,
  text: tuple[jax.Array, jax.Array],
  null_text: tuple[jax.Array, jax.Array],
  rngs: tuple[jax.Array, jax.Array],
  schedule: schedules.NoiseSchedule,
  diffusion: ml_collections.ConfigDict,
  extra: jax.Array | None = None,
  dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Diffusion loss of `model` on clean samples `x0` given (tokens, mask) `text`.

  Each example's text is replaced by `null_text` with probability
  `diffusion.cond_drop_prob` (for classifier-free guidance). `rngs` is
  (condition-dropout rng, diffusion rng). `extra` channels are concatenated
  to the noisy input. `dropout_rng` feeds the model's dropout layers (a video
  U-Net's temporal dropout). Returns (loss, {"mse", "snr_weight"}).
  """
  drop_rng, diffusion_rng = rngs
  tokens, mask = guidance.drop_condition(drop_rng, text, null_text, diffusion.cond_drop_prob)

  def model_fn(x_t, t):
    x = x_t if extra is None else jnp.concatenate([x_t, extra], axis=-1)
    rngs = None if dropout_rng is None else {"dropout": dropout_rng}
    return model.apply({"params": params}, x, t, tokens, mask, train=True, rngs=rngs)

  loss, aux = gaussian.diffusion_loss(
    model_fn,
    x0,
    diffusion_rng,
    schedule,
    prediction_type=diffusion.prediction_type,
    min_snr_gamma=diffusion.min_snr_gamma,
  )
  return loss, dict(mse=aux["mse"], snr_weight=aux["weight"])


def check_unet_fits(unet: UNetConfig, resolution: int, patch: int, coords: bool) -> None:
  """Named errors when the image size or channels do not fit the U-Net config."""
  patched = IMAGE_CHANNELS * patch * patch
  expected_in = patched + (2 if coords else 0)
  if unet.in_channels != expected_in or unet.out_channels != patched:
    raise ValueError(
      f"unet.in_channels/out_channels must be {expected_in}/{patched} for RGB images in "
      f"{patch}×{patch} patches{' with 2 coordinate channels' if coords else ''}, got "
      f"{unet.in_channels}/{unet.out_channels}"
    )
  factor = patch * 2**unet.num_downsamples
  if resolution % factor:
    raise ValueError(
      f"data.resolution must be a multiple of {factor} (patch size {patch} × "
      f"2^{unet.num_downsamples} downsamplings), got {resolution}"
    )


def make_schedule(diffusion: ml_collections.ConfigDict) -> schedules.NoiseSchedule:
  """The training noise schedule of a `diffusion.*` config."""
  return schedules.make_schedule(
    diffusion.schedule,
    num_train_timesteps=diffusion.num_train_timesteps,
    beta_start=diffusion.beta_start,
    beta_end=diffusion.beta_end,
  )


def build_model(
  config: ml_collections.ConfigDict, unet: UNetConfig, vocab_size: int
) -> TextConditionedUNet:
  """The text encoder + U-Net of a `text_to_image` config, for a tokenizer's vocabulary."""
  return TextConditionedUNet(
    text=dict(config.text.to_dict(), vocab_size=vocab_size),
    unet=unet,
    coord_channels=config.model.coord_channels,
    patch_size=config.model.get("patch_size", 1),
    **precision.model_policy(config.model),  # model.compute_dtype, model.remat
  )


def init_params(
  model: TextConditionedUNet,
  rng: jax.Array,
  input_shape: tuple[int, ...],
  batch: Mapping[str, jax.Array],
):
  """Fresh parameters of `model` for (B, H, W, C) inputs and the batch's caption tokens."""
  x = jnp.zeros(input_shape, jnp.float32)
  t = jnp.zeros((input_shape[0],), jnp.int32)
  return model.init(rng, x, t, batch["text_tokens"], batch["text_mask"])["params"]


def null_text_tokens(batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
  """The unconditional 'prompt' (tokens, mask): all padding tokens, all attended."""
  return jnp.zeros((batch_size, length), jnp.int32), jnp.ones((batch_size, length), jnp.int32)


class TextToImageTask(captioned_images.CaptionedDataTask):
  """The `text_to_image` task (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.resolution = config.data.resolution
    self.max_text_length = config.text.max_length
    kind = data_kind(config.data)
    self.tokenizer = build_caption_tokenizer(scene_caption_words() if kind == "scenes" else None)
    self.coord_channels = config.model.coord_channels
    self.patch_size = config.model.get("patch_size", 1)
    unet = UNetConfig(**config.unet.to_dict())
    self.check_unet(unet)
    self.model = build_model(config, unet, self.tokenizer.vocab_size)
    self.schedule = make_schedule(config.diffusion)

  def check_unet(self, unet: UNetConfig) -> None:
    """Named errors when the U-Net config does not fit the images it denoises."""
    check_unet_fits(unet, self.resolution, self.patch_size, self.coord_channels)

  # -- data --------------------------------------------------------------

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(captions, self.max_text_length)

  def null_text(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The unconditional 'prompt': all padding tokens, all attended."""
    return null_text_tokens(batch_size, self.max_text_length)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    return captioned_shapes_arrays(self.config.data, self.tokenize)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a training batch, without building the data."""
    return abstract_captioned_batch(batch_size, self.resolution, self.max_text_length)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    """Named errors for batches that do not fit the config, before compiling."""
    shapes.check_image_batch(batch["image"], self.resolution)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    return init_params(self.model, rng, batch["image"].shape, batch)

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.config.diffusion
    x0 = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    drop_rng, diffusion_rng = jax.random.split(rng)
    text, null_text = (batch["text_tokens"], batch["text_mask"]), self.null_text(x0.shape[0])
    return text_diffusion_loss(
      self.model, params, x0, text, null_text, (drop_rng, diffusion_rng), self.schedule, d
    )

  # -- sampling --------------------------------------------------------------

  # Where latent diffusion differs: what is sampled, what conditions it
  # besides the text, and how a sample becomes an image.

  def sample_shape(self, batch: int, resolution: int) -> tuple[int, ...]:
    return (batch, resolution, resolution, IMAGE_CHANNELS)

  def sample_channels(self, batch: int, resolution: int) -> jax.Array | None:
    """Extra model input channels when generating from text alone (none here)."""
    del batch, resolution
    return None

  def to_images(self, x: jax.Array) -> jax.Array:
    """Final samples -> images in [-1, 1]."""
    return x

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps", "resolution"))
  def sample(
    self,
    params,
    tokens: jax.Array,
    mask: jax.Array,
    rng: jax.Array,
    *,
    sampler: str,
    num_steps: int,
    guidance_scale: float | jax.Array,
    eta: float | jax.Array = 0.0,
    resolution: int | None = None,
  ) -> jax.Array:
    """Images in [-1, 1], [B, H, W, C], for tokenized prompts: one compiled program."""
    resolution = resolution or self.resolution
    batch = tokens.shape[0]
    text, null_text = (tokens, mask), self.null_text(batch)
    extra = self.sample_channels(batch, resolution)
    model_fn = guided_model_fn(self.model, params, text, null_text, guidance_scale, extra)
    plan = sampling_plan(self.schedule, self.config.diffusion, sampler, num_steps, eta)
    noise_rng, sample_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, self.sample_shape(batch, resolution))
    x0 = samplers.run_sampler(model_fn, plan, x_T, sample_rng)
    return self.to_images(x0)

  # -- generation (`CaptionedImageTask.generate` runs these) ------------------

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    return sampling_options(self.config, sampler, num_steps, guidance_scale)

  def caption_sampler(self, params, sampler: str, num_steps: int, guidance_scale: float):
    """`sample` with the options bound; guidance and eta traced, so every chunk shares one program."""
    return functools.partial(
      self.sample,
      params,
      sampler=sampler,
      num_steps=num_steps,
      guidance_scale=jnp.float32(guidance_scale),
      eta=jnp.float32(self.config.sample.eta),
    )
