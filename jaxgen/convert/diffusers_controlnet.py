"""diffusers `ControlNetModel` state dicts and folders <-> jaxgen ControlNet params.

jaxgen's ControlNet mirrors diffusers' module tree, so the map is the U-Net's
(`jaxgen.convert.diffusers_unet.UNET_KEYMAP`) plus two ModuleLists: the hint
encoder's `blocks` and the zero convs `controlnet_down_blocks`.

Example:
  config, params = load_controlnet("sd-controlnet-canny")  # a diffusers ControlNetModel folder
  bundle = load_stable_diffusion_controlnet("pipeline")  # a StableDiffusionControlNetPipeline folder
  down, mid = ControlNetModel(config).apply({"params": params}, x, t, context, hint)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.diffusers_pipeline import (
  DIFFUSERS_CONFIG_NAME,
  load_stable_diffusion,
  read_diffusers_weights,
  read_json,
  require_path,
  write_diffusers_model,
)
from jaxgen.convert.diffusers_unet import UNET_KEYMAP
from jaxgen.convert.keymap import from_torch, to_torch
from jaxgen.models.controlnet import ControlNetConfig, abstract_variables
from jaxgen.pipelines.stable_diffusion_controlnet import StableDiffusionControlNet

PIPELINE_CLASS = "StableDiffusionControlNetPipeline"

CONTROLNET_KEYMAP = dataclasses.replace(
  UNET_KEYMAP, list_modules=UNET_KEYMAP.list_modules | {"blocks", "controlnet_down_blocks"}
)


def controlnet_from_diffusers(
  state_dict: Mapping[str, Any], config: ControlNetConfig
) -> dict[str, Any]:
  """diffusers ControlNet state dict (numpy or torch) -> unboxed jaxgen params (numpy float32).

  Raises `ConversionError` listing missing/unexpected keys and shape mismatches.
  """
  return from_torch(state_dict, abstract_variables(config)["params"], CONTROLNET_KEYMAP)


def controlnet_to_diffusers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen ControlNet params (boxed or not) -> a state dict `ControlNetModel` loads strictly."""
  return to_torch(params, CONTROLNET_KEYMAP)


def load_controlnet(folder: str | os.PathLike) -> tuple[ControlNetConfig, dict[str, Any]]:
  """(config, params) of a diffusers `ControlNetModel` folder (config.json + safetensors)."""
  folder = os.fspath(folder)
  config = ControlNetConfig.from_diffusers(
    read_json(os.path.join(folder, DIFFUSERS_CONFIG_NAME), "the ControlNet config")
  )
  return config, controlnet_from_diffusers(read_diffusers_weights(folder), config)


def save_controlnet(
  config: ControlNetConfig, params: Mapping[str, Any], folder: str | os.PathLike
) -> None:
  """Writes a folder `diffusers.ControlNetModel.from_pretrained` loads strictly."""
  write_diffusers_model(
    controlnet_to_diffusers(params), config.to_diffusers(), "ControlNetModel", os.fspath(folder)
  )


def load_stable_diffusion_controlnet(folder: str | os.PathLike) -> StableDiffusionControlNet:
  """Reads a local diffusers `StableDiffusionControlNetPipeline` folder (one ControlNet, in
  controlnet/ as safetensors) into a bundle; never downloads."""
  folder = os.fspath(folder)
  sd = load_stable_diffusion(folder, pipeline_classes=(PIPELINE_CLASS,))
  controlnet_dir = require_path(os.path.join(folder, "controlnet"), "the controlnet folder")
  config, params = load_controlnet(controlnet_dir)
  return StableDiffusionControlNet(sd, config, params)
