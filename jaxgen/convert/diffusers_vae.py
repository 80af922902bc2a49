"""diffusers `AutoencoderKL` state dicts <-> jaxgen autoencoder params.

jaxgen's autoencoder mirrors diffusers' module tree, so the map is only the
ModuleList segments (`down_blocks_0` <-> `down_blocks.0`, also `up_blocks`,
`resnets`, `attentions`, `downsamplers`, `upsamplers`, `to_out`) and the leaf
layouts of `jaxgen.convert.keymap`.

Older diffusers checkpoints (e.g. many Stable Diffusion `vae/` folders) name
the mid-block attention `query`, `key`, `value`, `proj_attn`; diffusers renames
them on load, and so does `vae_from_diffusers` (`LEGACY_ATTENTION_NAMES`).

Example:
  import json, safetensors.numpy
  config = AutoencoderKLConfig.from_diffusers(json.load(open("vae/config.json")))
  params = vae_from_diffusers(safetensors.numpy.load_file("vae/diffusion_pytorch_model.safetensors"), config)
  reconstruction, posterior = AutoencoderKL(config).apply({"params": params}, images)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.keymap import ConversionError, KeyMap, from_torch, to_torch
from jaxgen.models.autoencoder import AutoencoderKLConfig, abstract_variables

VAE_KEYMAP = KeyMap(
  list_modules=frozenset(
    {
      "down_blocks",
      "up_blocks",
      "resnets",
      "attentions",
      "downsamplers",
      "upsamplers",
      "to_out",  # Attention: to_out.0 is the output Linear, to_out.1 a Dropout
    }
  )
)

# Deprecated diffusers attention-block names -> current `Attention` names.
LEGACY_ATTENTION_NAMES: Mapping[str, str] = {
  "query": "to_q",
  "key": "to_k",
  "value": "to_v",
  "proj_attn": "to_out.0",
}
_LEGACY_ATTENTION_KEY = re.compile(
  r"^(?P<block>.+\.attentions\.\d+)\.(?P<name>"
  + "|".join(LEGACY_ATTENTION_NAMES)
  + r")\.(?P<leaf>weight|bias)$"
)


def upgrade_legacy_attention_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Renames deprecated attention keys (`...attentions.0.query.weight` -> `...attentions.0.to_q.weight`).

  Raises `ConversionError` if a checkpoint holds both spellings of one tensor.
  """
  upgraded = {}
  for key, tensor in state_dict.items():
    match = _LEGACY_ATTENTION_KEY.match(key)
    if match:
      key = f"{match['block']}.{LEGACY_ATTENTION_NAMES[match['name']]}.{match['leaf']}"
      if key in state_dict:
        raise ConversionError(f"state dict holds both {match.group(0)} and its current name {key}")
    upgraded[key] = tensor
  return upgraded


def vae_from_diffusers(
  state_dict: Mapping[str, Any], config: AutoencoderKLConfig
) -> dict[str, Any]:
  """diffusers `AutoencoderKL` state dict (numpy arrays or torch tensors) -> jaxgen params.

  Returns the *unboxed* "params" collection as host numpy float32 arrays (use
  as `AutoencoderKL(config).apply({"params": params}, ...)`). Strict: raises
  `ConversionError` listing missing/unexpected keys and shape mismatches.
  """
  template = abstract_variables(config)["params"]
  return from_torch(upgrade_legacy_attention_names(state_dict), template, VAE_KEYMAP)


def vae_to_diffusers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen autoencoder params (boxed or unboxed, with or without "params") -> diffusers state dict.

  The result loads into `diffusers.AutoencoderKL(**config.to_diffusers())` with
  `load_state_dict(..., strict=True)` (after `torch.from_numpy`), or saves with
  `safetensors.numpy.save_file`.
  """
  return to_torch(params, VAE_KEYMAP)
