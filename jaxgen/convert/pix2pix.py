"""pytorch-CycleGAN-and-pix2pix `UnetGenerator` state dicts <-> jaxgen U-Net params.

The reference nests one `UnetSkipConnectionBlock` per level, each holding an
`nn.Sequential` called `model` whose entries are (see `jaxgen.models.pix2pix`):

  outermost:  0 down conv, 1 submodule, 2 ReLU, 3 up conv, 4 tanh
  middle:     0 LeakyReLU, 1 down conv, 2 norm, 3 submodule, 4 ReLU, 5 up conv, 6 norm [, 7 dropout]
  innermost:  0 LeakyReLU, 1 down conv, 2 ReLU, 3 up conv, 4 norm

and `UnetGenerator.model` is the outermost block, so level d's block is
`model.model.1` followed by `.model.3` for every level between:
`latest_net_G.pth` holds `model.model.0.weight` (level 0's down conv),
`model.model.1.model.1.weight` (level 1's), `model.model.1.model.3.model.5.weight`
(level 2's up conv), ... jaxgen names its layers by level (`down_2`,
`down_norm_2`, `up_2`, `up_norm_2`); `generator_keymap` renames each to its
nested torch module. Up convs are `ConvTranspose2d` (in, out, kh, kw), stored
in jaxgen as the (kh, kw, out, in) kernel of the conv they transpose, so the
usual Conv2d layout rule of `jaxgen.convert.keymap` converts them.

BatchNorm buffers: written as a fresh BatchNorm's on export, dropped on
import (`jaxgen.convert.patch_discriminator`).

Example (a released pix2pix model, `--netG unet_256 --norm batch`):
  config = UnetGeneratorConfig(in_channels=3, out_channels=3, num_downs=8, ngf=64)
  params = generator_from_torch(read_state_dict("latest_net_G.pth", "..."), config)
  images = UnetGenerator(config).apply({"params": params}, source, deterministic=False,
                                       rngs={"dropout": rng})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.keymap import KeyMap
from jaxgen.convert.patch_discriminator import from_torch_without_buffers, to_torch_with_buffers
from jaxgen.models.pix2pix import UnetGeneratorConfig, abstract_params

# Index of each layer inside its level's `nn.Sequential`, by the kind of level.
OUTERMOST_LAYERS = {"down": 0, "up": 3}
MIDDLE_LAYERS = {"down": 1, "down_norm": 2, "up": 5, "up_norm": 6}
INNERMOST_LAYERS = {"down": 1, "up": 3, "up_norm": 4}
# Where a level's submodule (the next level) sits in its `nn.Sequential`.
OUTERMOST_SUBMODULE = 1
MIDDLE_SUBMODULE = 3


def level_module(level: int) -> str:
  """Torch name of level `level`'s block (0 = outermost): `model`, `model.model.1`, `model.model.1.model.3`, ..."""
  path = ["model"]
  for outer in range(level):
    path.append(f"model.{OUTERMOST_SUBMODULE if outer == 0 else MIDDLE_SUBMODULE}")
  return ".".join(path)


def level_layers(config: UnetGeneratorConfig, level: int) -> Mapping[str, int]:
  if level == 0:
    return OUTERMOST_LAYERS
  return INNERMOST_LAYERS if level == config.num_downs - 1 else MIDDLE_LAYERS


def generator_keymap(config: UnetGeneratorConfig) -> KeyMap:
  """jaxgen `down_<d>`, `down_norm_<d>`, `up_<d>`, `up_norm_<d>` -> nested torch modules."""
  renames = {}
  for level in range(config.num_downs):
    for layer, index in level_layers(config, level).items():
      renames[f"{layer}_{level}"] = f"{level_module(level)}.model.{index}"
  return KeyMap(renames=renames)


def generator_to_torch(
  params: Mapping[str, Any], config: UnetGeneratorConfig
) -> dict[str, np.ndarray]:
  """jaxgen UnetGenerator params -> the reference `UnetGenerator` state dict (`latest_net_G.pth`).

  Loads with `load_state_dict(..., strict=True)` after `torch.from_numpy`.
  """
  return to_torch_with_buffers(params, generator_keymap(config), config.norm == "batch")


def generator_from_torch(
  state_dict: Mapping[str, Any], config: UnetGeneratorConfig
) -> dict[str, Any]:
  """The reference state dict (numpy or torch tensors) -> unboxed float32 jaxgen params.

  Strict: a `ConversionError` lists missing and unexpected keys and shape
  mismatches (BatchNorm buffers are dropped, not checked).
  """
  template = abstract_params(config)
  return from_torch_without_buffers(
    state_dict, template, generator_keymap(config), config.norm == "batch"
  )
