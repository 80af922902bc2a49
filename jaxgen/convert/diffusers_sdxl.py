"""diffusers Stable Diffusion XL pipeline folders <-> jaxgen `StableDiffusionXL` bundles.

A folder in diffusers' layout (what `StableDiffusionXLPipeline.save_pretrained`
writes) holds:

  model_index.json                         component classes, force_zeros_for_empty_prompt
  unet/, vae/                              config.json, diffusion_pytorch_model.safetensors
  text_encoder/                            transformers CLIPTextModel (CLIP ViT-L)
  text_encoder_2/                          transformers CLIPTextModelWithProjection (OpenCLIP bigG)
  tokenizer/, tokenizer_2/                 transformers CLIPTokenizer files
  scheduler/scheduler_config.json

Weights are read from safetensors only, with strict key checks; the U-Net,
VAE and scheduler go through the same readers as Stable Diffusion's
(`jaxgen.convert.diffusers_pipeline`), so the same schedulers are supported
and the same options refused by name. The invisible watermark and the
IP-Adapter image encoder are not part of the bundle: folders are written
without them (load with `add_watermarker=False` where the watermark package
is installed).

Example:
  sdxl = load_stable_diffusion_xl("stable-diffusion-xl-base-1.0")
  images = stable_diffusion_xl.sample(sdxl, ["a photo of a cat"], rng=jax.random.key(0))
  save_stable_diffusion_xl(sdxl, "exported")  # diffusers.StableDiffusionXLPipeline loads it
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from jaxgen.convert import transformers_clip, transformers_text
from jaxgen.convert.diffusers_pipeline import (
  MODEL_INDEX_NAME,
  PipelineFolderError,
  read_json,
  read_unet_vae_params,
  read_unet_vae_scheduler_configs,
  require_path,
  write_pipeline_folder,
)
from jaxgen.pipelines.stable_diffusion_checkpoint import load_clip_tokenizer
from jaxgen.pipelines.stable_diffusion_xl import StableDiffusionXL

PathLike = str | os.PathLike

PIPELINE_CLASS = "StableDiffusionXLPipeline"
_TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
# The library class each component must name in model_index.json.
_COMPONENT_CLASSES: dict[str, tuple[str, ...]] = {
  "unet": ("UNet2DConditionModel",),
  "vae": ("AutoencoderKL",),
  "text_encoder": ("CLIPTextModel",),
  "text_encoder_2": ("CLIPTextModelWithProjection",),
  "tokenizer": _TOKENIZER_CLASSES,
  "tokenizer_2": _TOKENIZER_CLASSES,
  "scheduler": None,  # Any class `scheduler_from_diffusers` reads.
}

_LOG = logging.getLogger(__name__)


def is_sdxl_folder(folder: PathLike) -> bool:
  """Whether `folder` holds a model_index.json naming `StableDiffusionXLPipeline`."""
  try:
    with open(os.path.join(folder, MODEL_INDEX_NAME)) as f:
      return json.load(f).get("_class_name") == PIPELINE_CLASS
  except (OSError, ValueError, AttributeError):
    return False


def _check_model_index(folder: str) -> dict[str, Any]:
  index = read_json(os.path.join(folder, MODEL_INDEX_NAME), f"an SDXL {MODEL_INDEX_NAME}")
  if index.get("_class_name") != PIPELINE_CLASS:
    raise PipelineFolderError(
      f"{MODEL_INDEX_NAME}: expected _class_name {PIPELINE_CLASS!r}, "
      f"found {index.get('_class_name')!r}"
    )
  for component, classes in _COMPONENT_CLASSES.items():
    entry = index.get(component)
    if not entry or entry[1] is None:
      raise PipelineFolderError(
        f"{MODEL_INDEX_NAME}: expected a {component} component, found {entry!r}"
      )
    if classes is not None and entry[1] not in classes:
      raise PipelineFolderError(
        f"{MODEL_INDEX_NAME}: {component}: expected one of {classes}, found {entry[1]!r}"
      )
  return index


def load_stable_diffusion_xl(folder: PathLike) -> StableDiffusionXL:
  """Reads a local diffusers `StableDiffusionXLPipeline` folder into a bundle (never downloads)."""
  folder = os.fspath(folder)
  index = _check_model_index(folder)

  def component(name: str) -> str:
    return require_path(os.path.join(folder, name), f"the {name} folder")

  unet_dir, vae_dir = component("unet"), component("vae")
  unet_config, vae_config, scheduler = read_unet_vae_scheduler_configs(folder, unet_dir, vae_dir)
  text_config, text_params = transformers_text.load_clip_text_model(component("text_encoder"))
  text_config_2, text_params_2 = transformers_clip.load_clip_text_projection_model(
    component("text_encoder_2")
  )
  params = {
    **read_unet_vae_params(unet_dir, vae_dir, unet_config, vae_config),
    "text_encoder": text_params,
    "text_encoder_2": text_params_2,
  }
  _LOG.info("loaded an SDXL pipeline from %s (scheduler -> %s)", folder, scheduler.sampler)
  return StableDiffusionXL(
    unet_config,
    vae_config,
    text_config,
    text_config_2,
    scheduler,
    params,
    load_clip_tokenizer(component("tokenizer")),
    load_clip_tokenizer(component("tokenizer_2")),
    force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
  )


def save_stable_diffusion_xl(sdxl: StableDiffusionXL, folder: PathLike) -> None:
  """Writes `sdxl` as a diffusers folder that `StableDiffusionXLPipeline` loads strictly.

  The scheduler is the diffusers class of `sdxl.scheduler.sampler`.
  """
  folder = os.fspath(folder)
  write_pipeline_folder(
    sdxl,
    folder,
    PIPELINE_CLASS,
    {
      "feature_extractor": [None, None],
      "force_zeros_for_empty_prompt": sdxl.force_zeros_for_empty_prompt,
      "image_encoder": [None, None],
      "text_encoder": ["transformers", "CLIPTextModel"],
      "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
      "tokenizer": ["transformers", "CLIPTokenizer"],
      "tokenizer_2": ["transformers", "CLIPTokenizer"],
    },
    {
      "text_encoder": lambda path: transformers_text.save_clip_text_folder(
        sdxl.params["text_encoder"], sdxl.text_config, path
      ),
      "text_encoder_2": lambda path: transformers_clip.save_clip_text_projection_folder(
        sdxl.params["text_encoder_2"], sdxl.text_config_2, path
      ),
      "tokenizer": sdxl.tokenizer.save_pretrained,
      "tokenizer_2": sdxl.tokenizer_2.save_pretrained,
    },
  )
  _LOG.info("wrote a diffusers SDXL pipeline to %s", folder)
