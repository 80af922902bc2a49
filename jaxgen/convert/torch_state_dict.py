"""Local PyTorch weight files, and state dicts of modules whose paths mirror torch's.

The metric networks (FID InceptionV3, I3D, SyncNet) name their flax modules
after the reference's torch modules, so a state-dict key differs from a flax
path only in the leaf name and the array layout:

    (collection, flax leaf, rank) -> (torch leaf, transpose flax -> torch)

`torch_key_map` builds the whole key list from the model's abstract
variables; conversion both ways is strict (missing, unexpected and
wrong-shaped keys are named). Files are read without pickle code execution:
safetensors, or `torch.load(weights_only=True)`. Nothing downloads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.convert import keymap

LeafMap = Mapping[tuple[str, str, int], tuple[str, tuple[int, ...] | None]]

# The leaves of convolutional networks with inference BatchNorm, by
# (collection, flax leaf, rank) -> (torch leaf, transpose flax -> torch).
CONV_BATCH_NORM_LEAVES: LeafMap = {
  ("params", "kernel", 5): ("weight", (4, 3, 0, 1, 2)),  # Conv THWIO -> Conv3d OITHW
  ("params", "kernel", 4): ("weight", (3, 2, 0, 1)),  # Conv HWIO -> Conv2d OIHW
  ("params", "kernel", 2): ("weight", (1, 0)),  # Dense (in, out) -> Linear (out, in)
  ("params", "bias", 1): ("bias", None),
  ("params", "scale", 1): ("weight", None),
  ("batch_stats", "mean", 1): ("running_mean", None),
  ("batch_stats", "var", 1): ("running_var", None),
}

# BatchNorm's step counter: carried by some checkpoints, meaningless at inference.
IGNORED_TORCH_SUFFIX = ".num_batches_tracked"


class StateDictMismatchError(keymap.ConversionError):
  """A PyTorch state dict does not fit the model (keys or shapes)."""


class MissingWeightsError(FileNotFoundError, ValueError):
  """The weights file the user named does not exist (or none was named)."""


class UnreadableWeightsError(ValueError):
  """A weights file is neither a readable safetensors file nor a weights-only torch checkpoint."""


def _reason(error: BaseException) -> str:
  """The telling line of a library error: torch's weights-only refusal buries it mid-message."""
  lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
  lines = [line for line in lines if line] or [""]
  telling = next((line for line in lines if "Unpickler error" in line), lines[0])
  return f"{type(error).__name__}: {telling}"


@dataclasses.dataclass(frozen=True)
class TorchEntry:
  """Where one state-dict tensor lives in the flax variables, and its layout."""

  collection: str
  path: tuple[str, ...]
  flax_shape: tuple[int, ...]
  transpose: tuple[int, ...] | None  # flax -> torch axis order

  @property
  def torch_shape(self) -> tuple[int, ...]:
    if self.transpose is None:
      return self.flax_shape
    return tuple(self.flax_shape[axis] for axis in self.transpose)


def torch_key_map(
  abstract_variables: Mapping[str, Any],
  leaf_map: LeafMap = CONV_BATCH_NORM_LEAVES,
  module_key: Callable[[tuple[str, ...]], str] = ".".join,
) -> dict[str, TorchEntry]:
  """Every state-dict key of a model -> its flax entry.

  `module_key` turns the flax module path (without collection and leaf) into
  the torch module prefix.
  """
  entries = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract_variables)[0]:
    names = tuple(k.key for k in key_path)
    collection, modules, leaf_name = names[0], names[1:-1], names[-1]
    torch_leaf, transpose = leaf_map[(collection, leaf_name, len(leaf.shape))]
    entries[f"{module_key(modules)}.{torch_leaf}"] = TorchEntry(
      collection, names[1:], tuple(leaf.shape), transpose
    )
  return entries


def variables_from_state_dict(
  state_dict: Mapping[str, Any], key_map: Mapping[str, TorchEntry], model: str
) -> dict[str, Any]:
  """Flax variables (float32) from a state dict of numpy arrays or torch tensors.

  Strict: one `StateDictMismatchError` lists every missing, unexpected and
  wrong-shaped key of the state dict (`model` names the network).
  """
  given = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_TORCH_SUFFIX)}
  missing = sorted(set(key_map) - set(given))
  unexpected = sorted(set(given) - set(key_map))
  variables: dict[str, Any] = {}
  bad_shapes = []
  for torch_key, entry in key_map.items():
    if torch_key not in given:
      continue
    value = keymap.to_numpy(given[torch_key])
    if value.shape != entry.torch_shape:
      bad_shapes.append(f"  {torch_key}: expected {entry.torch_shape}, found {value.shape}")
      continue
    if entry.transpose is not None:
      value = value.transpose(np.argsort(entry.transpose))
    node = variables.setdefault(entry.collection, {})
    for name in entry.path[:-1]:
      node = node.setdefault(name, {})
    node[entry.path[-1]] = jnp.asarray(value, dtype=jnp.float32)
  problems = [
    keymap.format_names(title, names)
    for title, names in (("missing keys", missing), ("unexpected keys", unexpected))
    if names
  ]
  if bad_shapes:
    problems.append(f"shape mismatches ({len(bad_shapes)}):\n" + "\n".join(bad_shapes))
  if problems:
    raise StateDictMismatchError(f"state dict does not match {model}:\n" + "\n".join(problems))
  return variables


def state_dict_from_variables(
  variables: Mapping[str, Any], key_map: Mapping[str, TorchEntry]
) -> dict[str, np.ndarray]:
  """Inverse of `variables_from_state_dict` (float32 numpy arrays, torch layout)."""
  state_dict = {}
  for torch_key, entry in key_map.items():
    node = variables[entry.collection]
    for name in entry.path:
      node = node[name]
    value = np.asarray(node, dtype=np.float32)
    if value.shape != entry.flax_shape:
      raise StateDictMismatchError(
        f"variables[{entry.collection!r}]{list(entry.path)} must have shape "
        f"{entry.flax_shape}, got {value.shape}"
      )
    if entry.transpose is not None:
      value = value.transpose(entry.transpose)
    state_dict[torch_key] = np.ascontiguousarray(value)
  return state_dict


def _refusal(torch: Any, path: str, error: Exception) -> str:
  """What `torch.load(weights_only=True)` refused: the pickled classes, when it can tell."""
  try:
    classes = torch.serialization.get_unsafe_globals_in_checkpoint(path)
  except (ValueError, RuntimeError):  # not a complete zip checkpoint (truncated, legacy, other)
    classes = []
  if classes:
    return f"pickled objects other than tensors ({', '.join(classes)})"
  return f"a file it cannot read ({_reason(error)})"


def read_state_dict(
  path: str | os.PathLike,
  expected: str,
  *,
  entry: str | None = None,
  if_refused: str = "save model.state_dict() or convert the file to .safetensors",
) -> dict[str, np.ndarray]:
  """A state dict from a local `.safetensors` file or a torch pickle.

  `expected` describes the file the user should pass, for the errors.
  Torch pickles are read with `torch.load(weights_only=True)`, which needs
  torch installed. `entry` names the key under which a training checkpoint
  keeps its weights (Bailando's "model", Wav2Lip's "state_dict"); a bare
  state dict is read as well. `if_refused` tells the user what to do with a
  file that pickles more than tensors.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingWeightsError(f"weights file {path!r} does not exist; pass {expected}")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

    try:
      return load_file(path)
    except Exception as error:  # safetensors raises its own SafetensorError, or OSError.
      raise UnreadableWeightsError(
        f"weights file {path!r}: expected a complete safetensors file ({expected}), "
        f"found one that cannot be read ({_reason(error)}); is it truncated?"
      ) from error
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(
      f"reading the torch checkpoint {path!r} needs torch; install "
      "jaxgen[torch] or convert the file to .safetensors"
    ) from error
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # pickle.UnpicklingError, RuntimeError (zip), EOFError, ...
    raise UnreadableWeightsError(
      f"weights file {path!r}: expected {expected} that torch.load(weights_only=True) reads, "
      f"found {_refusal(torch, path, error)}; pickled objects other than tensors are never "
      f"loaded: {if_refused}"
    ) from error
  if entry is not None and isinstance(state_dict, Mapping) and entry in state_dict:
    state_dict = state_dict[entry]
  where = f" (under {entry!r} or at the top)" if entry else ""
  if not isinstance(state_dict, Mapping):
    raise StateDictMismatchError(
      f"{path!r} must hold a state dict{where} (a mapping of names to tensors), found "
      f"{type(state_dict).__name__}"
    )
  not_tensors = [k for k, v in state_dict.items() if not hasattr(v, "detach")][:5]
  if not_tensors:
    raise StateDictMismatchError(
      f"{path!r} must hold a flat state dict{where} (names to tensors), found non-tensor "
      f"values under {not_tensors}"
    )
  return {key: keymap.to_numpy(value) for key, value in state_dict.items()}
