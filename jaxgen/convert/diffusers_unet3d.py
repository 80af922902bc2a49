"""diffusers `UNet3DConditionModel` (the ModelScope text-to-video U-Net) <-> jaxgen params.

jaxgen's video U-Net is its `UNet2DConditionModel` with `temporal="modelscope"`
(`jaxgen.models.unet`), named like diffusers' 3-D U-Net, so the map is the
2-D U-Net's (`jaxgen.convert.diffusers_unet`) plus the temporal ModuleLists
(`temp_convs_0` <-> `temp_convs.0`, `temp_attentions`) and the
`nn.Sequential`s of `TemporalConvLayer` (`conv1_0` <-> `conv1.0` its
GroupNorm, `conv1_2` <-> `conv1.2` its Conv3d; `conv2_3`, `conv3_3`,
`conv4_3` after a Dropout), with one more leaf layout:

  kernel, rank 5  ->  weight: Conv THWIO (3, 1, 1, I, O) <-> Conv3d OITHW (O, I, 3, 1, 1)

Example:
  config = UNetConfig.from_diffusers(json.load(open("unet/config.json")))  # a 3-D config
  params = unet3d_from_diffusers(safetensors.numpy.load_file(".../unet/..."), config)
  video = UNet2DConditionModel(config).apply({"params": params}, sample_nthwc, t, context)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.diffusers_unet import UNET_KEYMAP
from jaxgen.convert.keymap import KeyMap, LeafRule, Path, from_torch, to_torch
from jaxgen.models.unet import UNetConfig, abstract_variables

CONV3D = LeafRule(
  "kernel",
  5,
  "weight",
  lambda k: k.transpose(4, 3, 0, 1, 2),
  lambda w: w.transpose(2, 3, 4, 1, 0),
  lambda s: (s[4], s[3], s[0], s[1], s[2]),
  "Conv THWIO <-> Conv3d OITHW",
)


class VideoKeyMap(KeyMap):
  """`KeyMap` whose rank-5 kernels are Conv3d weights (the temporal convs)."""

  def rule(self, path: Path, rank: int) -> LeafRule:
    if path[-1] == CONV3D.jax_leaf and rank == CONV3D.rank:
      return CONV3D
    return super().rule(path, rank)


UNET3D_KEYMAP = VideoKeyMap(
  list_modules=UNET_KEYMAP.list_modules
  | frozenset({"temp_convs", "temp_attentions", "conv1", "conv2", "conv3", "conv4"})
)


def unet3d_from_diffusers(
  state_dict: Mapping[str, Any], config: UNetConfig | Mapping[str, Any]
) -> dict[str, Any]:
  """diffusers `UNet3DConditionModel` state dict (numpy or torch) -> jaxgen params.

  `config` is the jaxgen `UNetConfig` (temporal="modelscope") or diffusers'
  3-D config dict. Returns the unboxed "params" collection as host float32
  numpy arrays; `ConversionError` lists missing/unexpected keys and shape
  mismatches; a config diffusers' class cannot have is an
  `UnsupportedConfigError`.
  """
  if not isinstance(config, UNetConfig):
    config = UNetConfig.from_diffusers(config)
  config.to_diffusers()  # names whatever UNet3DConditionModel lacks
  if config.temporal is None:
    raise ValueError("config: expected a video U-Net config (temporal='modelscope'), found None")
  return from_torch(state_dict, abstract_variables(config)["params"], UNET3D_KEYMAP)


def unet3d_to_diffusers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen video U-Net params (boxed or not, with or without "params") -> diffusers state dict.

  Loads into `diffusers.UNet3DConditionModel(**config.to_diffusers())` with
  `load_state_dict(..., strict=True)` after `torch.from_numpy`.
  """
  return to_torch(params, UNET3D_KEYMAP)
