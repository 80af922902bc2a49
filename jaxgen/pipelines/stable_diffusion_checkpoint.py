"""jaxgen's own folder layout for a `StableDiffusion` bundle.

  folder/
    stable_diffusion.json   {"format": "jaxgen.stable_diffusion", "version": 1,
                             "unet": UNetConfig, "vae": AutoencoderKLConfig,
                             "text_encoder": CLIPTextConfig, "scheduler": SchedulerConfig}
                            (each config as its diffusers / transformers dict)
    params.safetensors      float32 params, flattened with "/" separators:
                            "unet/down_blocks_0/resnets_0/conv1/kernel", "vae/...",
                            "text_encoder/..." (jaxgen names and layouts)
    tokenizer/              the transformers CLIPTokenizer files

diffusers' folder layout is `jaxgen.convert.diffusers_pipeline`'s. This
folder is what `jaxgen convert` writes: a pipeline for `load_checkpoint` (and
`stable_diffusion.sample`) or for converting back to diffusers, not a
`jaxgen train` run directory (`is_pipeline_checkpoint` tells them apart).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.models import autoencoder, clip_text, text_encoders, unet
from jaxgen.models.unet_config import UNetConfig
from jaxgen.pipelines.stable_diffusion import COMPONENTS, SchedulerConfig, StableDiffusion

PathLike = str | os.PathLike

CHECKPOINT_FORMAT = "jaxgen.stable_diffusion"
CHECKPOINT_VERSION = 1
CHECKPOINT_CONFIG_NAME = "stable_diffusion.json"
CHECKPOINT_PARAMS_NAME = "params.safetensors"
CHECKPOINT_TOKENIZER_DIR = "tokenizer"

_LOG = logging.getLogger(__name__)


class CheckpointError(ValueError):
  """A jaxgen Stable Diffusion checkpoint folder is missing a file or does not match its configs."""


class PipelineCheckpointIsNotARunError(CheckpointError):
  """A pipeline checkpoint was given where a `jaxgen train` run directory is expected."""


def is_pipeline_checkpoint(path: PathLike) -> bool:
  """Whether `path` is a folder written by `save_checkpoint` (e.g. by `jaxgen convert`)."""
  config = os.path.join(path, CHECKPOINT_CONFIG_NAME)
  if not os.path.isfile(config):
    return False
  try:
    with open(config) as f:
      return json.load(f).get("format") == CHECKPOINT_FORMAT
  except (OSError, ValueError, AttributeError):
    return False


def check_not_pipeline_checkpoint(path: PathLike, flag: str) -> None:
  """Raises `PipelineCheckpointIsNotARunError` naming `flag` if `path` is a pipeline checkpoint."""
  if is_pipeline_checkpoint(path):
    raise PipelineCheckpointIsNotARunError(
      f"{flag}: {os.fspath(path)!r} is a Stable Diffusion pipeline checkpoint (written by "
      "`jaxgen convert`), not a `jaxgen train` run directory: load it with "
      "jaxgen.pipelines.stable_diffusion_checkpoint.load_checkpoint and sample with "
      "jaxgen.pipelines.stable_diffusion.sample, or convert it back with "
      "`jaxgen convert --from jaxgen SRC --to diffusers DST`"
    )


def _flatten(tree: Mapping[str, Any], prefix: str, as_numpy: bool = True) -> dict[str, Any]:
  """Nested params -> {"prefix/a/b/kernel": leaf}; leaves unboxed, float32 numpy if as_numpy."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, name, as_numpy))
      continue
    value = value.unbox() if hasattr(value, "unbox") else value
    flat[name] = np.ascontiguousarray(np.asarray(value, np.float32)) if as_numpy else value
  return flat


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def _check_param_shapes(name: str, params: Mapping[str, Any], template: Mapping[str, Any]) -> None:
  """Strict comparison of a loaded params tree with the model's abstract params."""
  got = {k: tuple(v.shape) for k, v in _flatten(params, name).items()}
  want = {k: tuple(v.shape) for k, v in _flatten(template, name, as_numpy=False).items()}
  missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  shapes = [
    f"{k}: expected {want[k]}, found {got[k]}"
    for k in sorted(set(want) & set(got))
    if want[k] != got[k]
  ]
  if missing or unexpected or shapes:
    raise CheckpointError(
      f"{CHECKPOINT_PARAMS_NAME}: {name} params do not match its config; missing {missing[:20]}, "
      f"unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}"
    )


def load_clip_tokenizer(folder: PathLike) -> Any:
  """A `transformers.CLIPTokenizer` from local files (vocab.json, merges.txt); never downloads."""
  from transformers import CLIPTokenizer  # Imported here: only folder I/O needs it.

  if not os.path.isdir(folder):
    raise FileNotFoundError(f"folder: expected a CLIP tokenizer folder at {folder}, found nothing")
  return CLIPTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)


def save_checkpoint(sd: StableDiffusion, folder: PathLike) -> None:
  """Writes `sd` in jaxgen's layout (see the module docstring)."""
  from safetensors.numpy import save_file  # Imported here: only checkpoint I/O needs it.

  os.makedirs(folder, exist_ok=True)
  config = {
    "format": CHECKPOINT_FORMAT,
    "version": CHECKPOINT_VERSION,
    "unet": sd.unet_config.to_diffusers(),
    "vae": sd.vae_config.to_diffusers(),
    "text_encoder": dataclasses.asdict(sd.text_config),
    "scheduler": sd.scheduler.to_dict(),
  }
  with open(os.path.join(folder, CHECKPOINT_CONFIG_NAME), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  flat = {}
  for name in COMPONENTS:
    flat.update(_flatten(sd.params[name], name))
  save_file(
    flat, os.path.join(folder, CHECKPOINT_PARAMS_NAME), metadata={"format": CHECKPOINT_FORMAT}
  )
  sd.tokenizer.save_pretrained(os.path.join(folder, CHECKPOINT_TOKENIZER_DIR))
  _LOG.info("wrote a Stable Diffusion checkpoint (%d tensors) to %s", len(flat), folder)


def load_checkpoint(folder: PathLike) -> StableDiffusion:
  """Reads a folder written by `save_checkpoint`; params are checked against the configs."""
  from safetensors.numpy import load_file  # Imported here: only checkpoint I/O needs it.

  for name in (CHECKPOINT_CONFIG_NAME, CHECKPOINT_PARAMS_NAME, CHECKPOINT_TOKENIZER_DIR):
    if not os.path.exists(os.path.join(folder, name)):
      raise CheckpointError(
        f"folder: expected {name} in the jaxgen Stable Diffusion checkpoint {folder}"
      )
  with open(os.path.join(folder, CHECKPOINT_CONFIG_NAME)) as f:
    config = json.load(f)
  if config.get("format") != CHECKPOINT_FORMAT or config.get("version") != CHECKPOINT_VERSION:
    raise CheckpointError(
      f"{CHECKPOINT_CONFIG_NAME}: expected format {CHECKPOINT_FORMAT!r} version "
      f"{CHECKPOINT_VERSION}, found {config.get('format')!r} version {config.get('version')!r}"
    )
  unet_config = UNetConfig.from_diffusers(config["unet"])
  vae_config = autoencoder.AutoencoderKLConfig.from_diffusers(config["vae"])
  text_config = clip_text.CLIPTextConfig(**config["text_encoder"])
  flat = load_file(os.path.join(folder, CHECKPOINT_PARAMS_NAME))
  tree = _unflatten(flat)
  unknown = sorted(set(tree) - set(COMPONENTS))
  if unknown:
    raise CheckpointError(f"{CHECKPOINT_PARAMS_NAME}: unexpected components {unknown}")
  params = {name: tree.get(name, {}) for name in COMPONENTS}
  templates = {
    "unet": unet.abstract_variables(unet_config)["params"],
    "vae": autoencoder.abstract_variables(vae_config)["params"],
    "text_encoder": text_encoders.abstract_variables(text_config)["params"],
  }
  for name in COMPONENTS:
    _check_param_shapes(name, params[name], templates[name])
  tokenizer = load_clip_tokenizer(os.path.join(folder, CHECKPOINT_TOKENIZER_DIR))
  return StableDiffusion(
    unet_config=unet_config,
    vae_config=vae_config,
    text_config=text_config,
    scheduler=SchedulerConfig.from_dict(config["scheduler"]),
    params=params,
    tokenizer=tokenizer,
  )
