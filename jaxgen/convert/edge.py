"""EDGE `DanceDecoder` state dicts <-> jaxgen `EDGE` params (`jaxgen.models.edge`).

A reference checkpoint `train-<epoch>.pt` holds two DanceDecoder state dicts,
`ema_state_dict` (the one EDGE samples with) and `model_state_dict`; reading
the file (`torch.load(..., weights_only=True)` where possible) is the caller's
business, `checkpoint_state_dict` picks one. Keys wrapped in `module.` (a
multi-process load) are unwrapped. Beyond the `jaxgen.convert.keymap` rules:

- `nn.MultiheadAttention` fuses q/k/v: `in_proj_weight` (3d, d) stacks the
  transposed `to_q`, `to_k`, `to_v` kernels, `in_proj_bias` their biases;
  `out_proj` is `to_out_0`.
- The one `RotaryEmbedding` is registered under the model and under every
  layer, so its `freqs` buffer appears 1 + num_music_layers + num_layers
  times. jaxgen computes the frequencies: written on export, checked on import.
- `null_cond_embed` (1, seq_len, d) and `null_cond_hidden` (1, d) keep
  their names and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.convert.keymap import (
  ConversionError,
  KeyMap,
  flatten,
  format_names,
  from_torch,
  to_numpy,
  to_torch,
  unflatten,
)
from jaxgen.models.edge import EDGEConfig, abstract_params
from jaxgen.nn.rotary import rotary_frequencies

ATTENTION_MODULES = ("self_attn", "multihead_attn")
FUSED_PROJECTIONS = ("to_q", "to_k", "to_v")
FUSED_LEAVES = {"kernel": "in_proj_weight", "bias": "in_proj_bias"}
RAW_PARAMS = ("null_cond_embed", "null_cond_hidden")
CHECKPOINT_STATE_DICTS = ("ema_state_dict", "model_state_dict")


def edge_keymap(config: EDGEConfig) -> KeyMap:
  """jaxgen module names -> the reference's (Sequential indices, the decoder stack, FiLM blocks)."""
  renames = {f"decoder_{i}": f"seqTransDecoder.stack.{i}" for i in range(config.num_layers)}
  renames.update({f"film{i}": f"film{i}.block.1" for i in (1, 2, 3)})
  renames["to_out_0"] = "out_proj"
  lists = ("time_mlp", "to_time_cond", "to_time_tokens", "non_attn_cond_projection", "cond_encoder")
  return KeyMap(list_modules=frozenset(lists), renames=renames)


def rotary_buffer_names(config: EDGEConfig) -> list[str]:
  """Every state-dict name of the shared rotary `freqs` buffer."""
  owners = ["", *(f"cond_encoder.{i}." for i in range(config.num_music_layers))]
  owners += [f"seqTransDecoder.stack.{i}." for i in range(config.num_layers)]
  return [f"{owner}rotary.freqs" for owner in owners]


def _is_fused(path: tuple[str, ...]) -> bool:
  return len(path) >= 3 and path[-2] in FUSED_PROJECTIONS and path[-3] in ATTENTION_MODULES


def edge_to_torch(params: Mapping[str, Any], config: EDGEConfig) -> dict[str, np.ndarray]:
  """jaxgen EDGE params -> a reference `DanceDecoder` state dict (numpy; `load_state_dict(strict=True)`)."""
  if set(params) == {"params"}:
    params = params["params"]
  keymap = edge_keymap(config)
  flat = flatten(params)
  fused = {path: value for path, value in flat.items() if _is_fused(path)}
  rest = {path: value for path, value in flat.items() if not _is_fused(path)}
  state = {name: np.asarray(rest.pop((name,))) for name in RAW_PARAMS}
  state.update(to_torch(unflatten(rest), keymap))
  attentions = sorted({path[:-2] for path in fused})
  for module in attentions:
    for leaf, torch_leaf in FUSED_LEAVES.items():
      parts = [np.asarray(fused[module + (p, leaf)]) for p in FUSED_PROJECTIONS]
      stacked = np.concatenate([part.T if leaf == "kernel" else part for part in parts])
      state[f"{keymap.torch_module(module)}.{torch_leaf}"] = np.ascontiguousarray(stacked)
  frequencies = np.asarray(rotary_frequencies(config.latent_dim))
  state.update({name: frequencies.copy() for name in rotary_buffer_names(config)})
  return state


def unwrapped_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drops the `module.` prefix a multi-process (DDP) load adds to every key."""
  if state_dict and all(name.startswith("module.") for name in state_dict):
    return {name[len("module.") :]: value for name, value in state_dict.items()}
  return dict(state_dict)


def _split_fused(state: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
  """`<attn>.in_proj_weight|bias` -> `<attn>.to_q|to_k|to_v.weight|bias` (the keymap's names)."""
  split = {}
  for name, tensor in state.items():
    module, _, leaf = name.rpartition(".")
    torch_leaf = {"in_proj_weight": "weight", "in_proj_bias": "bias"}.get(leaf)
    if torch_leaf is None:
      split[name] = tensor
      continue
    array = to_numpy(tensor)
    if array.shape[0] % 3:
      problems.append(f"{name}: expected 3 * width rows (q, k, v), found shape {array.shape}")
      continue
    for projection, part in zip(FUSED_PROJECTIONS, np.split(array, 3)):
      split[f"{module}.{projection}.{torch_leaf}"] = part
  return split


def edge_from_torch(state_dict: Mapping[str, Any], config: EDGEConfig) -> dict[str, Any]:
  """A reference `DanceDecoder` state dict (numpy or torch tensors) -> unboxed float32 jaxgen params.

  Strict: one `ConversionError` lists missing and unexpected keys, shape
  mismatches and rotary frequencies that differ from `config.latent_dim`'s.
  """
  state = unwrapped_state_dict(state_dict)
  template = abstract_params(config)
  problems: list[str] = []
  expected = np.asarray(rotary_frequencies(config.latent_dim))
  for name in rotary_buffer_names(config):
    if name not in state:
      continue  # a buffer, not a weight: jaxgen recomputes it
    found = to_numpy(state.pop(name))
    if found.shape != expected.shape or not np.allclose(found, expected, rtol=1e-6, atol=0):
      problems.append(
        f"{name}: expected the rotary frequencies of latent_dim={config.latent_dim} "
        f"(shape {expected.shape}), found other values of shape {found.shape}"
      )
  raw = {}
  missing = [name for name in RAW_PARAMS if name not in state]
  for name in RAW_PARAMS:
    if name in state:
      raw[(name,)] = to_numpy(state.pop(name)).astype(np.float32)
      if raw[(name,)].shape != tuple(template[name].shape):
        problems.append(
          f"{name}: expected shape {tuple(template[name].shape)}, found {raw[(name,)].shape}"
        )
  if missing:
    problems.append(format_names("missing torch keys", missing))
  state = _split_fused(state, problems)
  rest = {key: value for key, value in template.items() if key not in RAW_PARAMS}
  try:
    params = from_torch(state, rest, edge_keymap(config))
  except ConversionError as error:
    problems.append(str(error))
  if problems:
    raise ConversionError("EDGE state dict does not match the config:\n" + "\n".join(problems))
  return {**params, **unflatten(raw)}


def checkpoint_state_dict(checkpoint: Mapping[str, Any], ema: bool = True) -> Mapping[str, Any]:
  """The `ema_state_dict` (default) or `model_state_dict` of a loaded `train-<epoch>.pt`."""
  key = CHECKPOINT_STATE_DICTS[0] if ema else CHECKPOINT_STATE_DICTS[1]
  if key not in checkpoint:
    raise ConversionError(
      f"checkpoint: expected an EDGE training checkpoint with {key!r}, found keys {sorted(checkpoint)}"
    )
  return checkpoint[key]
