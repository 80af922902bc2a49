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
  DIFFUSERS_CONFIG_NAME,
  DIFFUSERS_VERSION,
  MODEL_INDEX_NAME,
  SCHEDULER_CONFIG_NAME,
  PipelineFolderError,
  _read_json,
  _read_safetensors_checked,
  _require,
  _write_diffusers_model,
  scheduler_from_diffusers,
  scheduler_to_diffusers,
)
from jaxgen.convert.diffusers_unet import unet_from_diffusers, unet_to_diffusers
from jaxgen.convert.diffusers_vae import vae_from_diffusers, vae_to_diffusers
from jaxgen.models.autoencoder import AutoencoderKLConfig
from jaxgen.models.unet_config import UNetConfig
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
  index = _read_json(os.path.join(folder, MODEL_INDEX_NAME), f"an SDXL {MODEL_INDEX_NAME}")
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
    return _require(os.path.join(folder, name), f"the {name} folder")

  unet_dir, vae_dir = component("unet"), component("vae")
  unet_config = UNetConfig.from_diffusers(
    _read_json(os.path.join(unet_dir, DIFFUSERS_CONFIG_NAME), "the U-Net config")
  )
  vae_config = AutoencoderKLConfig.from_diffusers(
    _read_json(os.path.join(vae_dir, DIFFUSERS_CONFIG_NAME), "the VAE config")
  )
  scheduler = scheduler_from_diffusers(
    _read_json(os.path.join(folder, "scheduler", SCHEDULER_CONFIG_NAME), "the scheduler config")
  )
  text_config, text_params = transformers_text.load_clip_text_model(component("text_encoder"))
  text_config_2, text_params_2 = transformers_clip.load_clip_text_projection_model(
    component("text_encoder_2")
  )
  params = {
    "unet": unet_from_diffusers(_read_safetensors_checked(unet_dir), unet_config),
    "vae": vae_from_diffusers(_read_safetensors_checked(vae_dir), vae_config),
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
  os.makedirs(folder, exist_ok=True)
  scheduler = scheduler_to_diffusers(sdxl.scheduler)
  index = {
    "_class_name": PIPELINE_CLASS,
    "_diffusers_version": DIFFUSERS_VERSION,
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": sdxl.force_zeros_for_empty_prompt,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", scheduler["_class_name"]],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
  }
  with open(os.path.join(folder, MODEL_INDEX_NAME), "w") as f:
    json.dump(index, f, indent=2)
  _write_diffusers_model(
    unet_to_diffusers(sdxl.params["unet"]),
    sdxl.unet_config.to_diffusers(),
    "UNet2DConditionModel",
    os.path.join(folder, "unet"),
  )
  _write_diffusers_model(
    vae_to_diffusers(sdxl.params["vae"]),
    sdxl.vae_config.to_diffusers(),
    "AutoencoderKL",
    os.path.join(folder, "vae"),
  )
  transformers_text.save_clip_text_folder(
    sdxl.params["text_encoder"], sdxl.text_config, os.path.join(folder, "text_encoder")
  )
  transformers_clip.save_clip_text_projection_folder(
    sdxl.params["text_encoder_2"], sdxl.text_config_2, os.path.join(folder, "text_encoder_2")
  )
  sdxl.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
  sdxl.tokenizer_2.save_pretrained(os.path.join(folder, "tokenizer_2"))
  os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
  with open(os.path.join(folder, "scheduler", SCHEDULER_CONFIG_NAME), "w") as f:
    json.dump(scheduler, f, indent=2)
  _LOG.info("wrote a diffusers SDXL pipeline to %s", folder)
