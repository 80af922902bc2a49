"""PyTorch weights of the metric networks: FID InceptionV3, I3D and SyncNet.

Each network names its flax modules after the reference's torch modules
(pytorch-fid's `Mixed_6b.branch7x7_2.conv`, pytorch-i3d's `Mixed_4c.b1b.conv3d`,
syncnet_python's `netcnnlip.0`), so a state-dict key differs from a flax path
only in the leaf name and layout: one `torch_state_dict.CONV_BATCH_NORM_LEAVES`
map serves all three, and one `TorchWeights` per network says the rest:

    variables = metric_networks.I3D.load("rgb_imagenet.pt")
    state_dict = metric_networks.SYNCNET.to_torch(variables)

Import (`from_torch`, `load`) is strict and lists every missing, unexpected
and wrong-shaped key in one `StateDictMismatchError`; export (`to_torch`) is
its bit-identical inverse. Weights are read only from a local file the user
names; nothing downloads.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxgen.convert import torch_state_dict
from jaxgen.convert.torch_state_dict import TorchEntry
from jaxgen.models import i3d, inception, syncnet


@functools.cache
def _frozen_key_map(
  abstract_variables: Callable[..., Any], module_key: Callable[..., str], *args: Any
) -> tuple[tuple[str, TorchEntry], ...]:
  # Memoised: tracing a whole network for its shapes takes seconds on CPU.
  key_map = torch_state_dict.torch_key_map(abstract_variables(*args), module_key=module_key)
  return tuple(key_map.items())


@dataclasses.dataclass(frozen=True)
class TorchWeights:
  """A metric network's PyTorch state dict <-> its flax variables.

  Every method takes, after its own arguments, the network's size arguments
  as its `abstract_variables` does (I3D's `num_classes`, SyncNet's
  `embedding_dim`; none for the FID InceptionV3).

  Attributes:
    model: the reference network, for error messages.
    abstract_variables: the flax variables' shapes, from the size arguments.
    expected_file: the checkpoint to pass, for the error when a file is missing.
    module_key: flax module path (without collection and leaf) -> torch prefix.
  """

  model: str
  abstract_variables: Callable[..., Mapping[str, Any]]
  expected_file: str
  module_key: Callable[[tuple[str, ...]], str] = ".".join

  def key_map(self, *size: int) -> dict[str, TorchEntry]:
    """Every state-dict key (without `num_batches_tracked`) and where it lives in flax."""
    return dict(_frozen_key_map(self.abstract_variables, self.module_key, *size))

  def from_torch(self, state_dict: Mapping[str, Any], *size: int) -> dict[str, Any]:
    """A state dict (numpy arrays or torch tensors) -> flax variables (float32), strictly."""
    return torch_state_dict.variables_from_state_dict(state_dict, self.key_map(*size), self.model)

  def to_torch(self, variables: Mapping[str, Any], *size: int) -> dict[str, np.ndarray]:
    """Inverse of `from_torch` (float32 numpy arrays, torch layout)."""
    return torch_state_dict.state_dict_from_variables(variables, self.key_map(*size))

  def load(self, path: str | os.PathLike, *size: int) -> dict[str, Any]:
    """Flax variables from a local torch checkpoint (weights only) or a safetensors copy."""
    return self.from_torch(torch_state_dict.read_state_dict(path, self.expected_file), *size)


def _syncnet_module_key(modules: tuple[str, ...]) -> str:
  tower, index = modules[-1].rsplit("_", 1)  # netcnnlip_0 -> netcnnlip.0
  return f"{tower}.{index}"


FID_INCEPTION = TorchWeights(
  "the FID InceptionV3",
  inception.abstract_variables,
  "a local copy of pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
  "(or a .safetensors conversion of it)",
)
I3D = TorchWeights(
  "pytorch-i3d's InceptionI3d",
  i3d.abstract_variables,
  "a local pytorch-i3d checkpoint (e.g. rgb_imagenet.pt, 400 Kinetics classes) "
  "or a .safetensors copy of it",
)
SYNCNET = TorchWeights(
  "SyncNet",
  syncnet.abstract_variables,
  "a local copy of syncnet_python's syncnet_v2.model (or a .safetensors conversion of it)",
  module_key=_syncnet_module_key,
)
