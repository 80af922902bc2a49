"""Tiny random-weight diffusers/transformers components for pipeline-folder tests.

Shared by the Stable Diffusion and SDXL tests so their tiny folders are built
one way: an offline CLIP tokenizer over `MERGES`, CLIP text encoders whose
vocabulary, length and special ids come from the tokenizer, a small VAE, and
SD 1.5's DDIM schedule. Call `torch.manual_seed` before building to fix the
weights; each builder draws in the order it is called.
"""

import os

import pytest
from clip_tokenizer_files import write_clip_tokenizer

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

# Merges for the prompts the tests use ("a cat", "dog on a mat").
MERGES = ("c a", "ca t</w>", "d o", "do g</w>", "m a", "ma t</w>", "o n</w>")


def tiny_tokenizer(folder: str, max_length: int, **options):
  """A `CLIPTokenizer` over `MERGES`, written to `folder` (options as `write_clip_tokenizer`'s)."""
  return write_clip_tokenizer(folder, MERGES, max_length, **options)


def tiny_text_config(tokenizer, **options):
  """A two-layer 32-wide `CLIPTextConfig` fitted to `tokenizer`; `options` override any key."""
  return transformers.CLIPTextConfig(
    **{
      "vocab_size": len(tokenizer),
      "hidden_size": 32,
      "intermediate_size": 64,
      "num_hidden_layers": 2,
      "num_attention_heads": 4,
      "max_position_embeddings": tokenizer.model_max_length,
      "bos_token_id": tokenizer.bos_token_id,
      "eos_token_id": tokenizer.eos_token_id,
      "pad_token_id": tokenizer.pad_token_id,
      **options,
    }
  )


def tiny_vae(block_out_channels=(16, 32), **options):
  """An `AutoencoderKL` with 4 latent channels, one level per channel count (x2 per extra level)."""
  levels = len(block_out_channels)
  return diffusers.AutoencoderKL(
    **{
      "block_out_channels": block_out_channels,
      "down_block_types": ("DownEncoderBlock2D",) * levels,
      "up_block_types": ("UpDecoderBlock2D",) * levels,
      "latent_channels": 4,
      "norm_num_groups": 16,
      "sample_size": 16,
      **options,
    }
  )


def sd15_ddim_scheduler():
  """Stable Diffusion 1.5's training schedule (epsilon), with DDIM as its sampler."""
  return diffusers.DDIMScheduler(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
  )


def save_sd_pipeline(folder: str, *, vae, text_encoder, tokenizer, unet, scheduler) -> str:
  """Saves a `StableDiffusionPipeline` (no safety checker) to folder/pipeline; returns that path."""
  pipe = diffusers.StableDiffusionPipeline(
    vae=vae,
    text_encoder=text_encoder,
    tokenizer=tokenizer,
    unet=unet,
    scheduler=scheduler,
    safety_checker=None,
    feature_extractor=None,
    requires_safety_checker=False,
  )
  path = os.path.join(folder, "pipeline")
  pipe.save_pretrained(path)
  return path


def save_sd_controlnet_pipeline(
  folder: str, *, vae, text_encoder, tokenizer, unet, controlnet, scheduler
) -> str:
  """Saves a `StableDiffusionControlNetPipeline` (one ControlNet, no safety checker) to
  folder/pipeline (safetensors); returns that path."""
  pipe = diffusers.StableDiffusionControlNetPipeline(
    vae=vae,
    text_encoder=text_encoder,
    tokenizer=tokenizer,
    unet=unet,
    controlnet=controlnet,
    scheduler=scheduler,
    safety_checker=None,
    feature_extractor=None,
    requires_safety_checker=False,
  )
  path = os.path.join(folder, "pipeline")
  pipe.save_pretrained(path, safe_serialization=True)
  return path
