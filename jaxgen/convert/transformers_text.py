"""transformers `CLIPTextModel` / `T5EncoderModel` weights <-> jaxgen text encoders.

The module trees mirror transformers (see `jaxgen.models.text_encoders`), so
each map is a `KeyMap`: ModuleList segments (`layers_3` <-> `layers.3`,
`block_0`/`layer_1` <-> `block.0`/`layer.1`) plus, for CLIP, the names of
jaxgen's shared attention (`to_q` <-> `q_proj`, ..., `to_out_0` <-> `out_proj`).

State dicts are the PyTorch modules' own (`model.state_dict()` keys, numpy or
torch values). Two file-format details are handled explicitly:

* CLIP files written by transformers 4.x (e.g. Stable Diffusion's
  `text_encoder/model.safetensors`) prefix every key with `text_model.` and may
  carry the `embeddings.position_ids` buffer; both are accepted on the way in.
* T5's `encoder.embed_tokens.weight` is tied to `shared.weight`: transformers
  files store only `shared.weight`; a state dict may hold both (they must be
  equal). jaxgen keeps one table, `shared`.

Folders are read and written as transformers does (config.json plus
model.safetensors, or sharded with model.safetensors.index.json). Pickled
`pytorch_model.bin` files are never read.

Example:
  config, params = load_clip_text_model("stable-diffusion-v1-5/text_encoder")
  out = CLIPTextModel(config).apply({"params": params}, input_ids)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxgen.convert.keymap import ConversionError, KeyMap, from_torch, to_numpy, to_torch
from jaxgen.models.clip_text import CLIPTextConfig
from jaxgen.models.t5 import T5EncoderConfig
from jaxgen.models.text_encoders import abstract_variables

CLIP_TEXT_KEYMAP = KeyMap(
  list_modules=frozenset({"layers"}),
  renames={"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out_0": "out_proj"},
)
T5_ENCODER_KEYMAP = KeyMap(list_modules=frozenset({"block", "layer"}))

_CLIP_PREFIX = "text_model."
_CLIP_POSITION_IDS = "embeddings.position_ids"
_T5_SHARED = "shared.weight"
_T5_TIED = "encoder.embed_tokens.weight"
_WEIGHTS_NAME = "model.safetensors"
_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_CONFIG_NAME = "config.json"

PathLike = str | os.PathLike

_LOG = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# State dicts.


def clip_text_from_transformers(
  state_dict: Mapping[str, Any], config: CLIPTextConfig
) -> dict[str, Any]:
  """`CLIPTextModel` state dict (numpy arrays or torch tensors) -> jaxgen params.

  Keys may all carry the `text_model.` prefix of transformers 4.x files. An
  `embeddings.position_ids` buffer, if present, must be 0..L-1 and is dropped.
  Returns the unboxed "params" collection as host float32 numpy arrays;
  raises `ConversionError` listing missing/unexpected keys and shape mismatches.
  """
  state = dict(state_dict)
  if state and all(key.startswith(_CLIP_PREFIX) for key in state):
    state = {key[len(_CLIP_PREFIX) :]: value for key, value in state.items()}
  if _CLIP_POSITION_IDS in state:
    position_ids = to_numpy(state.pop(_CLIP_POSITION_IDS))
    expected = np.arange(config.max_position_embeddings)[None]
    if position_ids.shape != expected.shape or not np.array_equal(position_ids, expected):
      raise ConversionError(
        f"{_CLIP_POSITION_IDS}: expected arange({config.max_position_embeddings}) of shape {expected.shape}, "
        f"found shape {position_ids.shape}"
      )
  return from_torch(state, abstract_variables(config)["params"], CLIP_TEXT_KEYMAP)


def clip_text_to_transformers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen CLIP text params (boxed or not, with or without "params") -> `CLIPTextModel` state dict.

  Loads with `CLIPTextModel(config).load_state_dict(..., strict=True)` after `torch.from_numpy`.
  """
  return to_torch(params, CLIP_TEXT_KEYMAP)


def t5_encoder_from_transformers(
  state_dict: Mapping[str, Any], config: T5EncoderConfig
) -> dict[str, Any]:
  """`T5EncoderModel` state dict (numpy arrays or torch tensors) -> jaxgen params.

  The tied embedding may be given as `shared.weight`, `encoder.embed_tokens.weight`
  or both (then they must be equal). Otherwise strict, as `clip_text_from_transformers`.
  """
  state = dict(state_dict)
  if _T5_TIED in state:
    tied = state.pop(_T5_TIED)
    if _T5_SHARED not in state:
      state[_T5_SHARED] = tied
    elif not np.array_equal(to_numpy(tied), to_numpy(state[_T5_SHARED])):
      raise ConversionError(
        f"{_T5_TIED} differs from {_T5_SHARED}; T5EncoderModel ties them, so they must be equal"
      )
  return from_torch(state, abstract_variables(config)["params"], T5_ENCODER_KEYMAP)


def t5_encoder_to_transformers(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """jaxgen T5 encoder params -> `T5EncoderModel` state dict, both tied embedding keys included.

  Loads with `T5EncoderModel(config).load_state_dict(..., strict=True)`.
  """
  state = to_torch(params, T5_ENCODER_KEYMAP)
  state[_T5_TIED] = state[_T5_SHARED]
  return state


# ----------------------------------------------------------------------------
# Folders.


def read_config(folder: PathLike) -> dict[str, Any]:
  path = os.path.join(folder, _CONFIG_NAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"folder: expected a transformers model folder with {_CONFIG_NAME} in {folder}"
    )
  with open(path) as f:
    return json.load(f)


def _weight_files(folder: PathLike) -> list[str]:
  single = os.path.join(folder, _WEIGHTS_NAME)
  if os.path.isfile(single):
    return [single]
  index = os.path.join(folder, _WEIGHTS_INDEX_NAME)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(folder, shard) for shard in shards]
  raise FileNotFoundError(
    f"folder: expected {_WEIGHTS_NAME} or {_WEIGHTS_INDEX_NAME} in {folder} "
    "(pickled pytorch_model.bin files are not read; re-save with safetensors)"
  )


def read_safetensors_folder(folder: PathLike) -> dict[str, np.ndarray]:
  """Every tensor of a transformers folder's safetensors weights (one file or shards), as host numpy.

  Read through the flax backend on the CPU so bfloat16 files load too
  (safetensors' numpy backend has no bfloat16).
  """
  from safetensors import safe_open  # Imported here: only folder I/O needs it.

  state = {}
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    for path in _weight_files(folder):
      with safe_open(path, framework="flax") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
          if key in state:
            raise ConversionError(f"{key} appears in more than one weight file of {folder}")
          state[key] = np.asarray(f.get_tensor(key))
  return state


def write_folder(
  state: Mapping[str, np.ndarray], config_json: Mapping[str, Any], folder: PathLike
) -> None:
  from safetensors.numpy import save_file

  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, _CONFIG_NAME), "w") as f:
    json.dump({**config_json, "dtype": "float32"}, f, indent=2, sort_keys=True)
  save_file(dict(state), os.path.join(folder, _WEIGHTS_NAME), metadata={"format": "pt"})
  _LOG.info("wrote %d tensors to %s", len(state), folder)


def load_clip_text_model(folder: PathLike) -> tuple[CLIPTextConfig, dict[str, Any]]:
  """Reads a local `CLIPTextModel` folder (config.json + safetensors); returns (config, params)."""
  config = CLIPTextConfig.from_transformers(read_config(folder))
  return config, clip_text_from_transformers(read_safetensors_folder(folder), config)


def save_clip_text_folder(
  params: Mapping[str, Any], config: CLIPTextConfig, folder: PathLike
) -> None:
  """Writes a folder that `transformers.CLIPTextModel.from_pretrained(folder)` loads with no key mismatch."""
  write_folder(clip_text_to_transformers(params), config.to_transformers(), folder)


def load_t5_encoder(folder: PathLike) -> tuple[T5EncoderConfig, dict[str, Any]]:
  """Reads a local `T5EncoderModel` folder (config.json + safetensors); returns (config, params)."""
  config = T5EncoderConfig.from_transformers(read_config(folder))
  return config, t5_encoder_from_transformers(read_safetensors_folder(folder), config)


def save_t5_encoder_folder(
  params: Mapping[str, Any], config: T5EncoderConfig, folder: PathLike
) -> None:
  """Writes a folder that `transformers.T5EncoderModel.from_pretrained(folder)` loads with no key mismatch.

  Like transformers, the file stores the tied embedding once, as `shared.weight`.
  """
  state = t5_encoder_to_transformers(params)
  del state[_T5_TIED]
  write_folder(state, config.to_transformers(), folder)
