"""Text-conditioned pixel-space diffusion on the built-in captioned-shapes data.

Model: a small Transformer text encoder trained from scratch, whose token
states condition a diffusers-compatible U-Net through cross-attention.
Training: Gaussian diffusion with conditioning dropout (for classifier-free
guidance). Sampling: tokenize -> encode text once -> one-scan sampler with
guidance. Evaluation: the analytic shapes judge on held-out captions.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import judge as shapes_judge
from jaxgen.data import shapes
from jaxgen.data.tokenizer import build_caption_tokenizer
from jaxgen.diffusion import gaussian, guidance, samplers, schedules
from jaxgen.models.transformer import TextTransformer
from jaxgen.models.unet import UNet2DConditionModel, UNetConfig
from jaxgen.nn import partitioning as pt
from jaxgen.render.grid import make_grid, to_uint8
from jaxgen.data.chunks import map_padded_chunks


def coordinate_channels(batch: int, height: int, width: int) -> jax.Array:
  """(B, H, W, 2) pixel-centre coordinates in [-1, 1] (y, x): CoordConv inputs.

  Convolutions are translation-equivariant, so without them a U-Net learns
  "top left" only slowly, from zero-padding effects at the borders.
  """
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height * 2 - 1
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width * 2 - 1
  grid = jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)
  return jnp.broadcast_to(grid, (batch, height, width, 2))


def masked_mean(states: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of token states over attended tokens: (B, L, D), (B, L) -> (B, D)."""
  weights = mask.astype(states.dtype)[..., None]
  return (states * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


def space_to_depth(x: jax.Array, patch: int) -> jax.Array:
  """(B, H, W, C) -> (B, H/p, W/p, p*p*C): each p×p patch becomes one pixel."""
  return einops.rearrange(x, "b (h p) (w q) c -> b h w (p q c)", p=patch, q=patch)


def depth_to_space(x: jax.Array, patch: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  return einops.rearrange(x, "b h w (p q c) -> b (h p) (w q) c", p=patch, q=patch)


class TextConditionedUNet(nn.Module):
  """Text encoder + U-Net.

  The text reaches the U-Net twice, as in GLIDE and Imagen: token states via
  cross-attention, and (with `unet.class_embed_type="identity"`) the pooled
  text projected into the timestep embedding, which modulates every ResNet
  block. With `patch_size` p > 1 the U-Net works on p×p patches folded into
  channels (space-to-depth, as in Simple Diffusion), p² times cheaper. With
  `coord_channels`, two coordinate maps are concatenated to its input.
  `encode_text` and `denoise` are separate methods so sampling
  encodes the prompt once, not at every step.
  """

  text: Mapping
  unet: UNetConfig
  coord_channels: bool = True
  patch_size: int = 1

  def setup(self):
    self.text_encoder = TextTransformer(**self.text)
    if self.unet.class_embed_type == "identity":
      self.pooled_text_proj = pt.dense(self.unet.time_embed_dim, ("embed", "time_embed"),
                                       name="pooled_text_proj")
    self.denoiser = UNet2DConditionModel(self.unet)

  def encode_text(self, tokens, mask):
    """(token states (B, L, D), pooled (B, D))."""
    states = self.text_encoder(tokens, mask)
    return states, masked_mean(states, mask)

  def denoise(self, x, t, context, context_mask, pooled, train: bool = False):
    x = space_to_depth(x, self.patch_size)
    if self.coord_channels:
      x = jnp.concatenate([x, coordinate_channels(*x.shape[:3]).astype(x.dtype)], axis=-1)
    class_labels = None
    if self.unet.class_embed_type == "identity":
      class_labels = self.pooled_text_proj(pooled)
    out = self.denoiser(x, t, context, encoder_attention_mask=context_mask,
                        class_labels=class_labels, train=train)
    return depth_to_space(out, self.patch_size)

  def __call__(self, x, t, tokens, mask, train: bool = False):
    states, pooled = self.encode_text(tokens, mask)
    return self.denoise(x, t, states, mask, pooled, train=train)


IMAGE_CHANNELS = shapes.CHANNELS


def _check_unet_fits(unet: UNetConfig, resolution: int, patch: int, coords: bool) -> None:
  """Named errors when the image size or channels do not fit the U-Net config."""
  patched = IMAGE_CHANNELS * patch * patch
  expected_in = patched + (2 if coords else 0)
  if unet.in_channels != expected_in or unet.out_channels != patched:
    raise ValueError(
        f"unet.in_channels/out_channels must be {expected_in}/{patched} for RGB images in "
        f"{patch}×{patch} patches{' with 2 coordinate channels' if coords else ''}, got "
        f"{unet.in_channels}/{unet.out_channels}")
  factor = patch * 2**unet.num_downsamples
  if resolution % factor:
    raise ValueError(f"data.resolution must be a multiple of {factor} (patch size {patch} × "
                     f"2^{unet.num_downsamples} downsamplings), got {resolution}")


class TextToImageTask:
  """The `text_to_image` task (see module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.resolution = config.data.resolution
    self.max_text_length = config.text.max_length
    self.tokenizer = build_caption_tokenizer()
    text_cfg = dict(config.text.to_dict(), vocab_size=self.tokenizer.vocab_size)
    unet = UNetConfig(**config.unet.to_dict())
    self.coord_channels = config.model.coord_channels
    self.patch_size = config.model.patch_size
    _check_unet_fits(unet, self.resolution, self.patch_size, self.coord_channels)
    self.model = TextConditionedUNet(text=text_cfg, unet=unet, coord_channels=self.coord_channels,
                                     patch_size=self.patch_size)
    d = config.diffusion
    self.schedule = schedules.make_schedule(
        d.schedule, num_train_timesteps=d.num_train_timesteps,
        beta_start=d.beta_start, beta_end=d.beta_end)

  # -- data --------------------------------------------------------------

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode(captions, self.max_text_length)

  def null_text(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The unconditional 'prompt': all padding tokens, all attended."""
    return (jnp.zeros((batch_size, self.max_text_length), jnp.int32),
            jnp.ones((batch_size, self.max_text_length), jnp.int32))

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    data = shapes.make_split("train", self.config.data.num_train_examples,
                             resolution=self.resolution, seed=self.config.data.seed)
    tokens, mask = self.tokenize(list(data["caption"]))
    return dict(image=data["image"], text_tokens=tokens.astype(np.int32),
                text_mask=mask.astype(np.int32))

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a training batch, without building the data."""
    r, c, L = self.resolution, IMAGE_CHANNELS, self.max_text_length
    return dict(image=jax.ShapeDtypeStruct((batch_size, r, r, c), jnp.uint8),
                text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
                text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.int32))

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out captions (combinations never seen in training)."""
    return shapes.make_split("test", num_examples, resolution=self.resolution,
                             seed=self.config.data.seed + 1)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    """Named errors for batches that do not fit the config, before compiling."""
    shapes.check_image_batch(batch["image"], self.resolution)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    image = batch["image"]
    x = jnp.zeros(image.shape, jnp.float32)
    t = jnp.zeros((image.shape[0],), jnp.int32)
    return self.model.init(rng, x, t, batch["text_tokens"], batch["text_mask"])["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    d = self.config.diffusion
    x0 = batch["image"].astype(jnp.float32) / 127.5 - 1.0
    drop_rng, diff_rng = jax.random.split(rng)
    tokens, mask = guidance.drop_condition(
        drop_rng, (batch["text_tokens"], batch["text_mask"]),
        self.null_text(x0.shape[0]), d.cond_drop_prob)

    def model_fn(x_t, t):
      return self.model.apply({"params": params}, x_t, t, tokens, mask, train=True)

    loss, aux = gaussian.diffusion_loss(model_fn, x0, diff_rng, self.schedule,
                                        prediction_type=d.prediction_type,
                                        min_snr_gamma=d.min_snr_gamma)
    return loss, dict(mse=aux["mse"], snr_weight=aux["weight"])

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps", "resolution"))
  def sample(self, params, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
             sampler: str, num_steps: int, guidance_scale: float | jax.Array,
             eta: float | jax.Array = 0.0, resolution: int | None = None) -> jax.Array:
    """Images in [-1, 1], [B, H, W, C], for tokenized prompts: one compiled program."""
    resolution = resolution or self.resolution
    variables = {"params": params}
    batch = tokens.shape[0]
    encode = functools.partial(self.model.apply, variables, method=TextConditionedUNet.encode_text)
    cond = (*encode(tokens, mask), mask)
    null_tokens, null_mask = self.null_text(batch)
    uncond = (*encode(null_tokens, null_mask), null_mask)

    def model_fn(x, t, c):
      states, pooled, context_mask = c
      return self.model.apply(variables, x, t, states, context_mask, pooled,
                              method=TextConditionedUNet.denoise)

    guided = guidance.classifier_free_guidance(model_fn, cond, uncond, guidance_scale)
    noise_rng, sample_rng = jax.random.split(rng)
    x_T = jax.random.normal(noise_rng, (batch, resolution, resolution, IMAGE_CHANNELS))
    return samplers.sample(guided, self.schedule, x_T, sample_rng, sampler=sampler,
                           num_steps=num_steps, eta=eta if sampler == "ddim" else 0.0,
                           prediction_type=self.config.diffusion.prediction_type)

  # -- judging and pictures --------------------------------------------------

  def generate(self, params, captions: Sequence[str], rng: jax.Array, *,
               sampler: str | None = None, num_steps: int | None = None,
               guidance_scale: float | None = None, batch_size: int = 256) -> np.ndarray:
    """uint8 images for captions, in fixed-size chunks (one compile)."""
    s = self.config.sample
    sampler = sampler or s.sampler
    num_steps = num_steps or s.num_steps
    guidance_scale = s.guidance if guidance_scale is None else guidance_scale
    tokens, mask = self.tokenize(captions)

    def sample_chunk(i, tok, msk):  # one shape for every chunk: one compile
      images = self.sample(params, tok, msk, jax.random.fold_in(rng, i), sampler=sampler,
                           num_steps=num_steps, guidance_scale=jnp.float32(guidance_scale),
                           eta=jnp.float32(s.eta))
      return to_uint8(np.asarray(images))

    return map_padded_chunks(sample_chunk, [tokens, mask], min(batch_size, len(captions)))

  def evaluate(self, params, rng: jax.Array, *, guidance_scale: float | None = None,
               num_examples: int | None = None) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """Judge accuracies (colour, position, shape, size, all) on held-out captions.

    Returns (accuracies, the uint8 samples judged, their captions).
    """
    data = self.eval_split(num_examples or self.config.eval.num_examples)
    captions = list(data["caption"])
    images = self.generate(params, captions, rng, guidance_scale=guidance_scale)
    return shapes_judge.judge_images(images, data)["accuracy"], images, captions

  def preview(self, params, rng: jax.Array, num: int = 16) -> np.ndarray:
    captions = list(self.eval_split(num)["caption"])
    images = self.generate(params, captions, rng, batch_size=num)
    return make_grid(images, captions, scale=3, ncols=8)
