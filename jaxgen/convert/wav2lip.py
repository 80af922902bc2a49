"""Wav2Lip checkpoints (Rudrabha/Wav2Lip) <-> jaxgen variables, both ways.

`jaxgen.models.wav2lip` names every module after the reference's
`nn.Sequential`/`ModuleList` indices, so a state-dict key is the flax path
with `_<i>` read as `.<i>` plus the leaf's torch name:

    flax  params/face_encoder_blocks_1_0/conv_block_0/kernel      (3, 3, 16, 32)
    torch face_encoder_blocks.1.0.conv_block.0.weight             (32, 16, 3, 3)
    flax  batch_stats/audio_encoder_3/conv_block_1/var            (64,)
    torch audio_encoder.3.conv_block.1.running_var                (64,)

Leaves and layouts are `torch_state_dict.CONV_BATCH_NORM_LEAVES`: the
decoder's `ConvTranspose2d` weights (in, out, kh, kw) are stored by flax
(`transpose_kernel=True`) as the (kh, kw, out, in) kernel of the conv they
transpose, so the Conv2d transpose serves them too. BatchNorm's
`num_batches_tracked` is written on export (torch reads it only when
momentum is None, which Wav2Lip never sets) and ignored on import. Import is
strict: one `StateDictMismatchError` lists every missing, unexpected and
wrong-shaped key. Colour channels are not touched: reference weights expect
BGR frames (see `jaxgen.models.wav2lip`).

Checkpoints as the reference saves them (`save_checkpoint`: a dict with
`state_dict`, `optimizer`, `global_step`, `global_epoch`; keys prefixed
`module.` when trained under DataParallel) load with
`load_wav2lip_checkpoint(path, network)`, through `torch.load(weights_only=True)`
only, or from a `.safetensors` state dict:

    variables = load_wav2lip_checkpoint("wav2lip_gan.pth", "generator")
    frames = Wav2LipGenerator().apply(variables, mel_windows, faces)
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import numpy as np

from jaxgen.convert import torch_state_dict
from jaxgen.convert.edge import unwrapped_state_dict
from jaxgen.convert.torch_state_dict import StateDictMismatchError, TorchEntry
from jaxgen.models import wav2lip

CHECKPOINT_ENTRY = "state_dict"  # where save_checkpoint keeps the weights
BATCH_COUNT_SUFFIX = ".num_batches_tracked"
RUNNING_MEAN_SUFFIX = ".running_mean"
_REFERENCE_NAMES = {
  "generator": "Wav2Lip",
  "syncnet": "SyncNet_color",
  "discriminator": "Wav2Lip_disc_qual",
}
_EXPECTED_FILE = (
  "a Wav2Lip checkpoint (the reference's .pth with its 'state_dict', e.g. wav2lip_gan.pth, "
  "lipsync_expert.pth, or a .safetensors state dict)"
)
_INDEX = re.compile(r"_(\d+)")


def module_key(modules: tuple[str, ...]) -> str:
  """Flax module path -> torch module name: `face_encoder_blocks_1_0` -> `face_encoder_blocks.1.0`."""
  return ".".join(_INDEX.sub(r".\1", segment) for segment in modules)


@functools.cache
def _frozen_key_map(network: str) -> tuple[tuple[str, TorchEntry], ...]:
  # Memoised: the key map is fixed per network and tracing one takes a while.
  abstract = nn.meta.unbox(wav2lip.abstract_variables(network))
  return tuple(torch_state_dict.torch_key_map(abstract, module_key=module_key).items())


def key_map(network: str) -> dict[str, TorchEntry]:
  """Every state-dict key of `network` (without `num_batches_tracked`) and its flax entry."""
  wav2lip.check_network(network)
  return dict(_frozen_key_map(network))


def to_torch(
  variables: Mapping[str, Any], network: str, num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
  """Flax variables (boxed or not) of `network` -> the reference state dict, numpy arrays.

  Loads into the reference module with `load_state_dict(..., strict=True)`
  after `torch.from_numpy`. Every BatchNorm gets `num_batches_tracked` (int64).
  """
  entries = key_map(network)
  variables = nn.meta.unbox(dict(variables))
  needed = sorted({entry.collection for entry in entries.values()})
  if sorted(set(variables) & set(needed)) != needed:
    raise StateDictMismatchError(
      f"variables: expected the collections {needed} of {_REFERENCE_NAMES[network]}, found "
      f"{sorted(variables)}"
    )
  state_dict = torch_state_dict.state_dict_from_variables(variables, entries)
  for key in list(state_dict):
    if key.endswith(RUNNING_MEAN_SUFFIX):
      module = key[: -len(RUNNING_MEAN_SUFFIX)]
      state_dict[module + BATCH_COUNT_SUFFIX] = np.array(num_batches_tracked, np.int64)
  return state_dict


def from_torch(state_dict: Mapping[str, Any], network: str) -> dict[str, Any]:
  """The reference state dict (numpy arrays or torch tensors) -> float32 flax variables.

  Returns `{"params", "batch_stats"}` (the discriminator has only params).
  Strict: a `StateDictMismatchError` lists missing, unexpected and
  wrong-shaped keys; `num_batches_tracked` is ignored.
  """
  return torch_state_dict.variables_from_state_dict(
    state_dict, key_map(network), _REFERENCE_NAMES[network]
  )


def generator_to_torch(
  variables: Mapping[str, Any], num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
  """`Wav2LipGenerator` variables -> a `Wav2Lip` state dict (see `to_torch`)."""
  return to_torch(variables, "generator", num_batches_tracked)


def generator_from_torch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """A `Wav2Lip` state dict -> `Wav2LipGenerator` variables (see `from_torch`)."""
  return from_torch(state_dict, "generator")


def syncnet_to_torch(
  variables: Mapping[str, Any], num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
  """`SyncNetColor` variables -> a `SyncNet_color` state dict (see `to_torch`)."""
  return to_torch(variables, "syncnet", num_batches_tracked)


def syncnet_from_torch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """A `SyncNet_color` state dict -> `SyncNetColor` variables (see `from_torch`)."""
  return from_torch(state_dict, "syncnet")


def discriminator_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`QualityDiscriminator` params -> a `Wav2Lip_disc_qual` state dict (see `to_torch`)."""
  return to_torch(variables, "discriminator")


def discriminator_from_torch(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """A `Wav2Lip_disc_qual` state dict -> `QualityDiscriminator` variables (see `from_torch`)."""
  return from_torch(state_dict, "discriminator")


def load_wav2lip_checkpoint(path: str | os.PathLike, network: str) -> dict[str, Any]:
  """A reference checkpoint file -> flax variables of `network` ("generator", "syncnet",
  "discriminator").

  Reads the `state_dict` entry of a training checkpoint (or a bare state dict),
  with `module.` prefixes stripped as the reference's inference does.
  Named errors: `UnknownNetworkError`, `MissingWeightsError` (no such file),
  `ImportError` (a torch file without torch installed), `UnreadableWeightsError`
  (a file `torch.load(weights_only=True)` refuses, e.g. one that would run
  code), `StateDictMismatchError` (keys or shapes of another network).
  """
  wav2lip.check_network(network)
  state = torch_state_dict.read_state_dict(
    path,
    _EXPECTED_FILE,
    entry=CHECKPOINT_ENTRY,
    if_refused="from a trusted source, re-save checkpoint['state_dict'] alone or convert it "
    "to .safetensors",
  )
  return from_torch(unwrapped_state_dict(state), network)
