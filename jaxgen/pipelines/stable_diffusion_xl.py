"""The Stable Diffusion XL inference bundle and its text-to-image sampler.

SDXL conditions its U-Net three ways, as diffusers' `StableDiffusionXLPipeline`:

  context      the penultimate hidden states of both text encoders, concatenated
               (CLIP ViT-L 768 + OpenCLIP bigG 1280 = 2048 features per token);
  text_embeds  the second encoder's projected pooled state (1280);
  time_ids     (original height, width, crop top, left, target height, width).

The negative branch of classifier-free guidance is all zeros (context and
pooled state) when no negative prompt is given and the pipeline sets
`force_zeros_for_empty_prompt` (SDXL's default); otherwise it encodes the
negative prompts. Sampling reuses the Stable Diffusion bundle's machinery
(`SchedulerConfig`, its argument checks, and `sample_and_decode`: the one-scan
samplers, batched guidance, VAE decode), so everything after tokenization is
one jitted program.

diffusers folders are read and written by `jaxgen.convert.diffusers_sdxl`.

Example:
  sdxl = diffusers_sdxl.load_stable_diffusion_xl("stable-diffusion-xl-base-1.0")
  images = sample(sdxl, ["a red cube"], rng=jax.random.key(0), num_steps=30)
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.diffusion import samplers
from jaxgen.models.autoencoder import AutoencoderKLConfig
from jaxgen.models.clip_text import (
  CLIPTextConfig,
  CLIPTextModel,
  CLIPTextModelWithProjection,
  CLIPTextWithProjectionConfig,
)
from jaxgen.models.unet_config import UNetConfig, pooled_text_dim
from jaxgen.pipelines.stable_diffusion import (
  SchedulerConfig,
  check_latent_channels,
  check_prompt_batch,
  sample_and_decode,
  starting_latents,
  tokenize_prompts,
  training_image_size,
)

Params = Mapping[str, Any]

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
# original_size (2) + crops_coords_top_left (2) + target_size (2).
NUM_TIME_IDS = 6


@dataclasses.dataclass(frozen=True, eq=False)
class StableDiffusionXL:
  """An SDXL text-to-image pipeline: configs, params, both tokenizers and the schedule.

  Attributes:
    unet_config: a U-Net with addition_embed_type="text_time".
    vae_config: the autoencoder.
    text_config: the first text encoder (`CLIPTextModel`, CLIP ViT-L).
    text_config_2: the second (`CLIPTextModelWithProjection`, OpenCLIP bigG).
    scheduler: noise schedule and default sampler.
    params: {"unet", "vae", "text_encoder", "text_encoder_2"}, each an unboxed
      "params" collection (numpy or JAX arrays, float32).
    tokenizer, tokenizer_2: `transformers.CLIPTokenizer`s of the two encoders.
    force_zeros_for_empty_prompt: without negative prompts, the negative
      branch is zeros rather than the encoded empty prompt (diffusers' option).
  """

  unet_config: UNetConfig
  vae_config: AutoencoderKLConfig
  text_config: CLIPTextConfig
  text_config_2: CLIPTextWithProjectionConfig
  scheduler: SchedulerConfig
  params: Params
  tokenizer: Any
  tokenizer_2: Any
  force_zeros_for_empty_prompt: bool = True

  def __post_init__(self):
    if set(self.params) != set(COMPONENTS):
      raise ValueError(f"params: expected the keys {list(COMPONENTS)}, found {sorted(self.params)}")
    unet = self.unet_config
    width = self.text_config.hidden_size + self.text_config_2.hidden_size
    if unet.cross_attention_dim != width:
      raise ValueError(
        f"unet_config.cross_attention_dim: expected the two text encoders' hidden sizes together, "
        f"{self.text_config.hidden_size} + {self.text_config_2.hidden_size} = {width}, "
        f"found {unet.cross_attention_dim}"
      )
    if not unet.has_text_time:
      raise ValueError(
        "unet_config.addition_embed_type: SDXL's U-Net takes the pooled text and size ids, "
        f"expected 'text_time', found {unet.addition_embed_type!r}"
      )
    pooled = pooled_text_dim(unet, NUM_TIME_IDS)
    if pooled != self.text_config_2.projection_dim:
      raise ValueError(
        f"text_config_2.projection_dim: the U-Net's add_embedding takes {pooled} pooled features "
        f"(projection_class_embeddings_input_dim {unet.projection_class_embeddings_input_dim} - "
        f"{NUM_TIME_IDS} ids x {unet.addition_time_embed_dim}), "
        f"found {self.text_config_2.projection_dim}"
      )
    check_latent_channels(unet, self.vae_config)
    lengths = (self.tokenizer.model_max_length, self.tokenizer_2.model_max_length)
    if lengths[0] != lengths[1]:
      raise ValueError(
        f"tokenizer_2.model_max_length: the two encoders' states are concatenated token by token, "
        f"expected the first tokenizer's {lengths[0]}, found {lengths[1]}"
      )
    for name, config in (("text_config", self.text_config), ("text_config_2", self.text_config_2)):
      if lengths[0] > config.max_position_embeddings:
        raise ValueError(
          f"tokenizer.model_max_length: expected at most {name}.max_position_embeddings "
          f"{config.max_position_embeddings}, found {lengths[0]}"
        )

  @property
  def latent_downsample_factor(self) -> int:
    return self.vae_config.downsample_factor

  def default_image_size(self) -> tuple[int, int]:
    """(height, width) of the U-Net's training resolution in pixels (diffusers' default)."""
    return training_image_size(self.unet_config, self.vae_config, default_sample_size=128)

  def tokenize(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> the two encoders' (B, model_max_length) int32 ids, padded and truncated."""
    return tokenize_prompts(self.tokenizer, prompts), tokenize_prompts(self.tokenizer_2, prompts)


def add_time_ids(
  original_size: tuple[int, int],
  crops_coords_top_left: tuple[int, int],
  target_size: tuple[int, int],
) -> np.ndarray:
  """SDXL's (6,) size and crop conditions, in diffusers' order."""
  values = (*original_size, *crops_coords_top_left, *target_size)
  if len(values) != NUM_TIME_IDS or not all(isinstance(v, numbers.Real) for v in values):
    raise ValueError(
      "original_size, crops_coords_top_left, target_size: expected two numbers each, found "
      f"{original_size!r}, {crops_coords_top_left!r}, {target_size!r}"
    )
  return np.asarray(values, np.float32)


def encode_prompt(
  params: Params,
  input_ids: jax.Array,
  input_ids_2: jax.Array,
  *,
  text_config: CLIPTextConfig,
  text_config_2: CLIPTextWithProjectionConfig,
  dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
  """Both encoders' token ids -> (context (B, L, D1 + D2), pooled text_embeds (B, projection_dim)).

  The context is each encoder's penultimate hidden state (before the final
  LayerNorm), concatenated feature-wise, as diffusers' SDXL pipeline does.
  """
  first = CLIPTextModel(text_config, dtype=dtype).apply(
    {"params": params["text_encoder"]}, input_ids, output_hidden_states=True
  )
  second = CLIPTextModelWithProjection(text_config_2, dtype=dtype).apply(
    {"params": params["text_encoder_2"]}, input_ids_2, output_hidden_states=True
  )
  context = jnp.concatenate([first.hidden_states[-2], second.hidden_states[-2]], axis=-1)
  return context, second.text_embeds


@functools.partial(
  jax.jit,
  static_argnames=("unet_config", "vae_config", "text_config", "text_config_2", "guided", "dtype"),
)
def generate(
  params: Params,
  plan: samplers.SamplerPlan,
  cond_ids: tuple[jax.Array, jax.Array],
  uncond_ids: tuple[jax.Array, jax.Array],
  zero_uncond: jax.Array,
  time_ids: jax.Array,
  latents: jax.Array,
  rng: jax.Array | None,
  guidance_scale: jax.Array,
  *,
  unet_config: UNetConfig,
  vae_config: AutoencoderKLConfig,
  text_config: CLIPTextConfig,
  text_config_2: CLIPTextWithProjectionConfig,
  guided: bool,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """The compiled part of `sample`: token ids, time ids and noise -> (B, H, W, 3) images in [0, 1].

  zero_uncond (a traced bool, so both cases share one program): the negative
  branch's text conditions are zeros (force_zeros_for_empty_prompt) rather
  than the encoding of `uncond_ids`.
  guided=False runs the conditional U-Net alone (diffusers does so for
  guidance_scale <= 1); guided=True runs both branches in one batched call.
  """
  encode = functools.partial(
    encode_prompt, params, text_config=text_config, text_config_2=text_config_2, dtype=dtype
  )

  def condition(ids):
    context, pooled = encode(*ids)
    return {"encoder_hidden_states": context, "text_embeds": pooled, "time_ids": time_ids}

  uncond = None
  if guided:
    uncond = condition(uncond_ids)
    for key in ("encoder_hidden_states", "text_embeds"):
      uncond[key] = jnp.where(zero_uncond, jnp.zeros_like(uncond[key]), uncond[key])
  return sample_and_decode(
    params,
    plan,
    condition(cond_ids),
    uncond,
    latents,
    rng,
    guidance_scale,
    unet_config=unet_config,
    vae_config=vae_config,
    dtype=dtype,
  )


def _image_size(
  sdxl: StableDiffusionXL, latents: Any, height: int | None, width: int | None
) -> tuple[int, int]:
  """The pixel size the time ids describe: the latents' size, or height/width, or the default."""
  if latents is None:
    default_height, default_width = sdxl.default_image_size()
    return height or default_height, width or default_width
  factor = sdxl.latent_downsample_factor
  size = (np.shape(latents)[1] * factor, np.shape(latents)[2] * factor)
  if (height or size[0], width or size[1]) != size:
    raise ValueError(
      f"height, width: the latents describe a {size[0]}x{size[1]} image, found {height}, {width}"
    )
  return size


def sample(
  sdxl: StableDiffusionXL,
  prompts: str | Sequence[str],
  latents: jax.Array | np.ndarray | None = None,
  *,
  rng: jax.Array | None = None,
  num_steps: int = 50,
  guidance_scale: float = 5.0,
  negative_prompts: str | Sequence[str] | None = None,
  sampler: str | None = None,
  eta: float = 0.0,
  height: int | None = None,
  width: int | None = None,
  original_size: tuple[int, int] | None = None,
  crops_coords_top_left: tuple[int, int] = (0, 0),
  target_size: tuple[int, int] | None = None,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """Generates one image per prompt, as diffusers' `StableDiffusionXLPipeline` does.

  Args:
    sdxl: the pipeline bundle.
    prompts: a prompt or a list of B prompts (both encoders read the same prompt).
    latents: standard-normal starting noise (B, h, w, latent_channels), NHWC;
      the sampler scales it by its initial sigma. None: drawn from `rng`.
    rng: key for the starting noise (when `latents` is None) and for
      stochastic samplers.
    num_steps: number of U-Net evaluations (per branch).
    guidance_scale: classifier-free guidance scale (SDXL's default 5); <= 1
      runs the conditional model alone (diffusers' rule).
    negative_prompts: the negative branch's prompts; None: zeros if
      `sdxl.force_zeros_for_empty_prompt`, else the empty prompt.
    sampler, eta: override `sdxl.scheduler.sampler`; DDIM noise scale.
    height, width: image size (default: the latents' size, else the U-Net's
      sample_size times the VAE factor).
    original_size, crops_coords_top_left, target_size: SDXL's size
      conditions (default: (height, width), (0, 0), (height, width)), the
      same for both branches.
    dtype: compute dtype of the four models.

  Returns:
    (B, H, W, 3) float32 images in [0, 1] (diffusers' `output_type="np"`).
  """
  zero_uncond = negative_prompts is None and sdxl.force_zeros_for_empty_prompt
  prompts, negative_prompts = check_prompt_batch(prompts, negative_prompts, guidance_scale)
  batch = len(prompts)
  size = _image_size(sdxl, latents, height, width)
  time_ids = add_time_ids(original_size or size, crops_coords_top_left, target_size or size)
  plan = sdxl.scheduler.plan(num_steps, eta=eta, sampler=sampler)
  latents, rng = starting_latents(sdxl, plan, latents, rng, batch, *size)
  return generate(
    {name: sdxl.params[name] for name in COMPONENTS},
    plan,
    tuple(jnp.asarray(ids) for ids in sdxl.tokenize(prompts)),
    tuple(jnp.asarray(ids) for ids in sdxl.tokenize(negative_prompts)),
    jnp.bool_(zero_uncond),
    jnp.broadcast_to(jnp.asarray(time_ids), (batch, NUM_TIME_IDS)),
    latents,
    rng,
    jnp.float32(guidance_scale),
    unet_config=sdxl.unet_config,
    vae_config=sdxl.vae_config,
    text_config=sdxl.text_config,
    text_config_2=sdxl.text_config_2,
    guided=guidance_scale > 1,
    dtype=dtype,
  )
