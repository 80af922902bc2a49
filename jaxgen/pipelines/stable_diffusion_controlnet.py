"""Stable Diffusion with a ControlNet: diffusers' `StableDiffusionControlNetPipeline` in one scan.

The bundle is a `StableDiffusion` plus a ControlNet (config and params).
`sample` runs `stable_diffusion.sample_and_decode` with a controlled U-Net
as its model function: at every step the ControlNet reads the noisy latents,
the step's text states and the hint image, and its residuals (times
`conditioning_scale`) join the U-Net's skips. With classifier-free guidance
both branches get the hint, as in diffusers; in guess mode the
unconditional branch gets no control and the residuals ramp from 0.1 to 1
(`jaxgen.models.controlnet.residual_scales`).

Example:
  bundle = diffusers_controlnet.load_stable_diffusion_controlnet("sd-controlnet-folder")
  images = sample(bundle, ["a cat"], edges, rng=jax.random.key(0), conditioning_scale=1.0)
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
from jaxgen.models.clip_text import CLIPTextConfig, CLIPTextModel
from jaxgen.models.controlnet import ControlNetConfig, ControlNetModel
from jaxgen.models.unet import UNet2DConditionModel
from jaxgen.models.unet_config import UNetConfig
from jaxgen.pipelines import stable_diffusion
from jaxgen.pipelines.stable_diffusion import StableDiffusion

Params = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class StableDiffusionControlNet:
  """A Stable Diffusion bundle and the ControlNet that steers its U-Net."""

  sd: StableDiffusion
  controlnet_config: ControlNetConfig
  controlnet_params: Params

  def __post_init__(self):
    unet, control = self.sd.unet_config, self.controlnet_config
    for key in ("in_channels", "block_out_channels", "layers", "cross_attention_dim"):
      if getattr(control.encoder, key) != getattr(unet, key):
        raise ValueError(
          f"controlnet_config.{key}: expected the U-Net's {getattr(unet, key)!r}, found "
          f"{getattr(control.encoder, key)!r}"
        )
    if control.hint_factor != self.sd.latent_downsample_factor:
      raise ValueError(
        f"controlnet_config.conditioning_embedding_out_channels: its hint encoder downsamples by "
        f"{control.hint_factor}, expected the VAE's factor {self.sd.latent_downsample_factor}"
      )


def controlled_denoise(
  params: Params,
  unet_config: UNetConfig,
  controlnet_config: ControlNetConfig,
  conditioning_scale: jax.Array,
  guess_mode: bool,
  dtype: Any = jnp.float32,
):
  """denoise(x, t, branch) for `sample_and_decode`: the ControlNet's residuals into the U-Net.

  A branch holds the U-Net's keyword conditions plus "controlnet_cond" (the
  hint) and "control_weight" ((B,) 1 to control, 0 for guess mode's
  unconditional branch).
  """
  unet = UNet2DConditionModel(unet_config, dtype=dtype)
  controlnet = ControlNetModel(controlnet_config, dtype=dtype)

  def denoise(x, t, branch):
    branch = dict(branch)
    hint, weight = branch.pop("controlnet_cond"), branch.pop("control_weight")
    down, mid = controlnet.apply(
      {"params": params["controlnet"]},
      x,
      t,
      branch["encoder_hidden_states"],
      hint,
      conditioning_scale,
      guess_mode=guess_mode,
    )
    gate = lambda r: r * weight.astype(r.dtype)[:, None, None, None]
    return unet.apply(
      {"params": params["unet"]},
      x,
      t,
      **branch,
      down_block_additional_residuals=[gate(r) for r in down],
      mid_block_additional_residual=gate(mid),
    )

  return denoise


@functools.partial(
  jax.jit,
  static_argnames=(
    "unet_config",
    "vae_config",
    "text_config",
    "controlnet_config",
    "guided",
    "guess_mode",
    "dtype",
  ),
)
def generate(
  params: Params,
  plan: samplers.SamplerPlan,
  cond_ids: jax.Array,
  uncond_ids: jax.Array,
  hint: jax.Array,
  latents: jax.Array,
  rng: jax.Array | None,
  guidance_scale: jax.Array,
  conditioning_scale: jax.Array,
  *,
  unet_config: UNetConfig,
  vae_config: AutoencoderKLConfig,
  text_config: CLIPTextConfig,
  controlnet_config: ControlNetConfig,
  guided: bool,
  guess_mode: bool,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """The compiled part of `sample`: token ids, hint and noise -> (B, H, W, 3) images in [0, 1]."""
  text_model = CLIPTextModel(text_config, dtype=dtype)
  batch = cond_ids.shape[0]

  def condition(ids, control):
    states = text_model.apply({"params": params["text_encoder"]}, ids).last_hidden_state
    weight = jnp.full((batch,), control, jnp.float32)
    return {"encoder_hidden_states": states, "controlnet_cond": hint, "control_weight": weight}

  return stable_diffusion.sample_and_decode(
    params,
    plan,
    condition(cond_ids, 1.0),
    condition(uncond_ids, 0.0 if guess_mode else 1.0) if guided else None,
    latents,
    rng,
    guidance_scale,
    unet_config=unet_config,
    vae_config=vae_config,
    dtype=dtype,
    denoise=controlled_denoise(
      params, unet_config, controlnet_config, conditioning_scale, guess_mode, dtype
    ),
  )


def check_hint_images(bundle: StableDiffusionControlNet, image: Any, batch: int) -> np.ndarray:
  """(B, H, W, C) hint in [0, 1] (uint8 is divided by 255), or a named error."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  channels = bundle.controlnet_config.conditioning_channels
  if image.ndim != 4 or image.shape[0] != batch or image.shape[-1] != channels:
    raise ValueError(
      f"image: expected {batch} hint images (one per prompt), NHWC with {channels} channels, "
      f"found shape {image.shape}"
    )
  if not np.issubdtype(image.dtype, np.floating) or image.min() < 0 or image.max() > 1:
    raise ValueError("image: expected uint8 or floats in [0, 1] (diffusers' control image range)")
  return image.astype(np.float32)


def sample(
  bundle: StableDiffusionControlNet,
  prompts: str | Sequence[str],
  image: Any,
  latents: jax.Array | np.ndarray | None = None,
  *,
  rng: jax.Array | None = None,
  num_steps: int = 50,
  guidance_scale: float = 7.5,
  conditioning_scale: float = 1.0,
  guess_mode: bool = False,
  negative_prompts: str | Sequence[str] | None = None,
  sampler: str | None = None,
  eta: float = 0.0,
  dtype: Any = jnp.float32,
) -> jax.Array:
  """One image per prompt and hint, as diffusers' `StableDiffusionControlNetPipeline` does.

  `image` is the (B, H, W, conditioning_channels) hint, uint8 or in [0, 1],
  at the output size (diffusers' `control_image` after its preprocessing);
  `conditioning_scale` is diffusers' `controlnet_conditioning_scale`. The
  other arguments are `stable_diffusion.sample`'s; the output size is the
  hint's.
  """
  sd = bundle.sd
  prompts, negative_prompts = stable_diffusion.check_prompt_batch(
    prompts, negative_prompts, guidance_scale
  )
  if not isinstance(conditioning_scale, numbers.Real):
    raise TypeError(f"conditioning_scale: expected a number, found {conditioning_scale!r}")
  hint = check_hint_images(bundle, image, len(prompts))
  plan = sd.scheduler.plan(num_steps, eta=eta, sampler=sampler)
  height, width = hint.shape[1:3]
  latents, rng = stable_diffusion.starting_latents(
    sd, plan, latents, rng, len(prompts), height, width
  )
  factor = sd.latent_downsample_factor
  if latents.shape[1:3] != (height // factor, width // factor):
    raise ValueError(
      f"image: expected hints of {latents.shape[1] * factor}x{latents.shape[2] * factor} pixels "
      f"(the latents' size times {factor}), found {height}x{width}"
    )
  params = {name: sd.params[name] for name in stable_diffusion.COMPONENTS}
  return generate(
    {**params, "controlnet": bundle.controlnet_params},
    plan,
    jnp.asarray(sd.tokenize(prompts)),
    jnp.asarray(sd.tokenize(negative_prompts)),
    jnp.asarray(hint),
    latents,
    rng,
    jnp.float32(guidance_scale),
    jnp.float32(conditioning_scale),
    unet_config=sd.unet_config,
    vae_config=sd.vae_config,
    text_config=sd.text_config,
    controlnet_config=bundle.controlnet_config,
    guided=guidance_scale > 1,
    guess_mode=bool(guess_mode),
    dtype=dtype,
  )
