"""transformers `CLIPModel` weights <-> jaxgen `CLIPModel` (both towers, projections, logit scale).

`jaxgen.models.clip.CLIPModel` mirrors the PyTorch module tree, so the map is
the CLIP text tower's `KeyMap` (`layers_3` <-> `layers.3`, `to_q` <-> `q_proj`,
...) applied from the model root, plus two bare parameters that are not
module leaves and move unchanged:

  vision_model/embeddings/class_embedding   vision_model.embeddings.class_embedding   (D,)
  logit_scale                               logit_scale                               ()

Files written by transformers 4.x may carry the `embeddings.position_ids`
buffers of either tower; they are accepted if they hold 0..N-1 and dropped.
Anything else that does not match is reported together in one `ConversionError`.

`CLIPTextModelWithProjection` (SDXL's `text_encoder_2`) maps the same way:
`text_model/...` <-> `text_model....` and `text_projection/kernel` <->
`text_projection.weight` (`clip_text_projection_from_transformers`,
`load_clip_text_projection_model`, `save_clip_text_projection_folder`).

Example:
  config, params = load_clip_model("clip-vit-large-patch14")
  embeds = CLIPModel(config).apply({"params": params}, pixels, method=CLIPModel.get_image_features)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.keymap import (
  ConversionError,
  Path,
  flatten,
  from_torch,
  to_numpy,
  to_torch,
  unflatten,
)
from jaxgen.convert.transformers_text import (
  CLIP_TEXT_KEYMAP,
  read_config,
  write_folder,
  read_safetensors_folder,
)
from jaxgen.models.clip import CLIPConfig, abstract_variables
from jaxgen.models.clip_text import CLIPTextWithProjectionConfig, abstract_projection_variables

# The text tower's renames and ModuleList names cover the whole dual encoder.
CLIP_KEYMAP = CLIP_TEXT_KEYMAP

# Parameters that are not a module's kernel/scale/bias/embedding: stored as is.
BARE_PARAMETERS: dict[Path, str] = {
  ("vision_model", "embeddings", "class_embedding"): "vision_model.embeddings.class_embedding",
  ("logit_scale",): "logit_scale",
}

PathLike = str | os.PathLike


def _position_id_buffers(config: CLIPConfig) -> dict[str, int]:
  """Non-persistent buffers some files still hold -> the number of positions they must count."""
  return {
    "text_model.embeddings.position_ids": config.text_config.max_position_embeddings,
    "vision_model.embeddings.position_ids": config.vision_config.num_patches + 1,
  }


def clip_from_transformers(state_dict: Mapping[str, Any], config: CLIPConfig) -> dict[str, Any]:
  """`CLIPModel` state dict (numpy arrays or torch tensors) -> jaxgen `CLIPModel` params.

  Strict: every parameter must be present with its shape and nothing may be
  left over. Returns the unboxed "params" collection as host float32 numpy arrays.
  """
  state = dict(state_dict)
  problems = []
  for name, length in _position_id_buffers(config).items():
    if name in state:
      ids = to_numpy(state.pop(name))
      if not np.array_equal(ids, np.arange(length)[None]):
        problems.append(
          f"  {name}: expected arange({length}) of shape (1, {length}), found shape {ids.shape}"
        )
  template = flatten(abstract_variables(config)["params"])
  bare = {}
  for path, name in BARE_PARAMETERS.items():
    shape = tuple(template.pop(path).shape)
    if name not in state:
      problems.append(f"  missing {name} (for jaxgen {'/'.join(path)})")
      continue
    value = to_numpy(state.pop(name))
    if value.shape != shape:
      problems.append(f"  {name}: expected shape {shape}, found {value.shape}")
      continue
    bare[path] = value.astype(np.float32)
  try:
    params = flatten(from_torch(state, unflatten(template), CLIP_KEYMAP))
  except ConversionError as error:
    problems.append(str(error))
    params = {}
  if problems:
    raise ConversionError(
      "CLIPModel state dict does not match the jaxgen model:\n" + "\n".join(problems)
    )
  return unflatten({**params, **bare})


def clip_to_transformers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen `CLIPModel` params (boxed or not, with or without "params") -> `CLIPModel` state dict.

  Loads with `transformers.CLIPModel(config).load_state_dict(..., strict=True)` after
  `torch.from_numpy`; a round trip is bit-identical.
  """
  if set(params) == {"params"}:
    params = params["params"]
  flat = flatten(params)
  bare = {
    BARE_PARAMETERS[path]: np.asarray(flat.pop(path)) for path in BARE_PARAMETERS if path in flat
  }
  missing = [name for path, name in BARE_PARAMETERS.items() if name not in bare]
  if missing:
    raise ConversionError(f"params: expected a CLIPModel tree, found no {missing}")
  return {**to_torch(unflatten(flat), CLIP_KEYMAP), **bare}


def load_clip_model(folder: PathLike) -> tuple[CLIPConfig, dict[str, Any]]:
  """Reads a local transformers `CLIPModel` folder (config.json + safetensors); returns (config, params)."""
  config = CLIPConfig.from_transformers(read_config(folder))
  return config, clip_from_transformers(read_safetensors_folder(folder), config)


def save_clip_folder(params: Mapping[str, Any], config: CLIPConfig, folder: PathLike) -> None:
  """Writes config.json + model.safetensors that `transformers.CLIPModel.from_pretrained` loads
  with no missing or unexpected key. Tokenizer and processor files are not written."""
  write_folder(clip_to_transformers(params), config.to_transformers(), folder)


# ----------------------------------------------------------------------------
# CLIPTextModelWithProjection.

_TEXT_POSITION_IDS = "text_model.embeddings.position_ids"


def clip_text_projection_from_transformers(
  state_dict: Mapping[str, Any], config: CLIPTextWithProjectionConfig
) -> dict[str, Any]:
  """`CLIPTextModelWithProjection` state dict -> jaxgen `CLIPTextModelWithProjection` params.

  Strict, as `clip_from_transformers`; a transformers 4.x `position_ids`
  buffer must hold 0..L-1 and is dropped. Returns unboxed float32 numpy params.
  """
  state = dict(state_dict)
  if _TEXT_POSITION_IDS in state:
    ids = to_numpy(state.pop(_TEXT_POSITION_IDS))
    length = config.max_position_embeddings
    if not np.array_equal(ids, np.arange(length)[None]):
      raise ConversionError(
        f"{_TEXT_POSITION_IDS}: expected arange({length}) of shape (1, {length}), "
        f"found shape {ids.shape}"
      )
  return from_torch(state, abstract_projection_variables(config)["params"], CLIP_KEYMAP)


def clip_text_projection_to_transformers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen `CLIPTextModelWithProjection` params -> its transformers state dict (bit-identical)."""
  return to_torch(params, CLIP_KEYMAP)


def load_clip_text_projection_model(
  folder: PathLike,
) -> tuple[CLIPTextWithProjectionConfig, dict[str, Any]]:
  """Reads a local `CLIPTextModelWithProjection` folder; returns (config, params)."""
  config = CLIPTextWithProjectionConfig.from_transformers(read_config(folder))
  return config, clip_text_projection_from_transformers(read_safetensors_folder(folder), config)


def save_clip_text_projection_folder(
  params: Mapping[str, Any], config: CLIPTextWithProjectionConfig, folder: PathLike
) -> None:
  """Writes a folder that `transformers.CLIPTextModelWithProjection.from_pretrained` loads strictly."""
  write_folder(clip_text_projection_to_transformers(params), config.to_transformers(), folder)
