"""diffusers `UNet2DConditionModel` state dicts <-> jaxgen U-Net params.

jaxgen's U-Net mirrors diffusers' module tree, so the map is only:
ModuleList segments (`down_blocks_0` <-> `down_blocks.0`, also `resnets`,
`attentions`, `transformer_blocks`, `downsamplers`, `upsamplers`, `to_out`
and the feed-forward `net`) and the leaf layouts of `jaxgen.convert.keymap`.

Example:
  import safetensors.numpy
  state = safetensors.numpy.load_file("unet/diffusion_pytorch_model.safetensors")
  params = unet_from_diffusers(state, UNetConfig.from_diffusers(json.load(open("unet/config.json"))))
  out = UNet2DConditionModel(config).apply({"params": params}, sample, t, context)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.keymap import KeyMap, from_torch, to_torch
from jaxgen.models.unet import UNetConfig, abstract_variables

UNET_KEYMAP = KeyMap(
  list_modules=frozenset(
    {
      "down_blocks",
      "up_blocks",
      "resnets",
      "attentions",
      "transformer_blocks",
      "downsamplers",
      "upsamplers",
      "to_out",  # Attention: to_out.0 is the output Linear, to_out.1 a Dropout
      "net",  # FeedForward: net.0 GEGLU/GELU, net.1 Dropout, net.2 Linear
    }
  )
)


def unet_from_diffusers(state_dict: Mapping[str, Any], config: UNetConfig) -> dict[str, Any]:
  """diffusers U-Net state dict (numpy arrays or torch tensors) -> jaxgen params.

  Returns the *unboxed* "params" collection as host numpy float32 arrays
  (use as `model.apply({"params": params}, ...)`, or `jax.device_put` it with
  shardings from `nn.get_partition_spec(abstract_variables(config))`).
  Raises `ConversionError` listing missing/unexpected keys and shape mismatches.
  """
  template = abstract_variables(config)["params"]
  return from_torch(state_dict, template, UNET_KEYMAP)


def unet_to_diffusers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen U-Net params (boxed or unboxed, with or without the "params" level) -> diffusers state dict.

  The result loads into `diffusers.UNet2DConditionModel(**config.to_diffusers())`
  with `load_state_dict(..., strict=True)` (after `torch.from_numpy`), or saves with
  `safetensors.numpy.save_file`.
  """
  return to_torch(params, UNET_KEYMAP)
