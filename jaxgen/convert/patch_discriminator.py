"""pytorch-CycleGAN-and-pix2pix `NLayerDiscriminator` state dicts <-> jaxgen PatchGAN params.

The reference keeps every layer in one `nn.Sequential` called `model`:

  model.0                      conv 4×4 s2 (bias), then LeakyReLU at model.1
  model.{3i-1}, model.{3i}     conv and norm of layer i = 1..n_layers (LeakyReLU at 3i+1)
  model.{3 n_layers + 2}       the logit conv

so `conv_i` / `norm_i` / `conv_out` of `jaxgen.models.discriminator` map by
index. A norm 'none' is an `Identity` there, which keeps the indices. A
BatchNorm layer also carries the buffers `running_mean`, `running_var` and
`num_batches_tracked`; jaxgen never reads running averages (batch statistics
at training and test time, as the reference runs), so export writes the
values of a fresh BatchNorm (zeros, ones, 0) and import drops them.

The buffer-aware `to_torch_with_buffers` / `from_torch_without_buffers` below
serve the other GAN converters too (`jaxgen.convert.pix2pix`).

Example (the pix2pix `latest_net_D.pth`):
  config = PatchDiscriminatorConfig(in_channels=6, channels=64, num_layers=3, norm="batch")
  params = discriminator_from_torch(read_state_dict("latest_net_D.pth", "..."), config)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.convert.keymap import ConversionError, KeyMap, flatten, from_torch, to_torch
from jaxgen.models.discriminator import PatchDiscriminator, PatchDiscriminatorConfig

BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# Norms the reference's NLayerDiscriminator has ('none' is its Identity).
CONVERTIBLE_NORMS = ("batch", "instance", "none")


def discriminator_keymap(config: PatchDiscriminatorConfig) -> KeyMap:
  """jaxgen `conv_i` / `norm_i` / `conv_out` -> the reference's `model.<index>`."""
  _check_convertible(config)
  renames = {"conv_0": "model.0"}
  for i in range(1, config.num_layers + 1):
    renames[f"conv_{i}"] = f"model.{3 * i - 1}"
    renames[f"norm_{i}"] = f"model.{3 * i}"
  renames["conv_out"] = f"model.{3 * config.num_layers + 2}"
  return KeyMap(renames=renames)


def _check_convertible(config: PatchDiscriminatorConfig) -> None:
  if config.norm not in CONVERTIBLE_NORMS:
    raise ConversionError(
      f"norm: the reference NLayerDiscriminator has norms {CONVERTIBLE_NORMS}, found {config.norm!r}"
    )
  if config.spectral_norm or config.padding != 1:
    raise ConversionError(
      f"spectral_norm and padding: the reference NLayerDiscriminator has plain convs padded by 1, "
      f"found spectral_norm={config.spectral_norm}, padding={config.padding}"
    )


def abstract_discriminator_params(config: PatchDiscriminatorConfig) -> Any:
  """Unboxed param shapes of a PatchDiscriminator (they do not depend on the input size)."""
  side = config.min_input_size()
  x = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda x: PatchDiscriminator(config).init(jax.random.PRNGKey(0), x), x)
  return nn.meta.unbox(variables["params"])


# ----------------------------------------------------------------------------
# BatchNorm buffers.


def to_torch_with_buffers(
  params: Mapping[str, Any], keymap: KeyMap, batch_norm: bool
) -> dict[str, np.ndarray]:
  """`to_torch`, plus a fresh BatchNorm's buffers for every norm layer when `batch_norm`."""
  state = to_torch(params, keymap)
  return (
    _with_batch_norm_buffers(state, _batch_norm_modules(params, keymap)) if batch_norm else state
  )


def from_torch_without_buffers(
  state_dict: Mapping[str, Any], template: Any, keymap: KeyMap, batch_norm: bool
) -> dict[str, Any]:
  """`from_torch` of `state_dict` with the BatchNorm buffers dropped when `batch_norm`."""
  if batch_norm:
    state_dict = _without_batch_norm_buffers(state_dict, _batch_norm_modules(template, keymap))
  return from_torch(state_dict, template, keymap)


def _batch_norm_modules(params: Mapping[str, Any], keymap: KeyMap) -> list[str]:
  """Torch names of the modules with a norm scale (the BatchNorm layers, when the norm is batch)."""
  return [keymap.torch_module(path[:-1]) for path in flatten(params) if path[-1] == "scale"]


def _with_batch_norm_buffers(
  state: Mapping[str, np.ndarray], modules: list[str]
) -> dict[str, np.ndarray]:
  """`state` plus a fresh BatchNorm's buffers for each of `modules` (zeros, ones, step 0)."""
  state = dict(state)
  for module in modules:
    features = state[f"{module}.weight"].shape
    state[f"{module}.running_mean"] = np.zeros(features, np.float32)
    state[f"{module}.running_var"] = np.ones(features, np.float32)
    state[f"{module}.num_batches_tracked"] = np.zeros((), np.int64)
  return state


def _without_batch_norm_buffers(
  state_dict: Mapping[str, Any], modules: list[str]
) -> dict[str, Any]:
  """`state_dict` without the BatchNorm buffers of `modules` (present or not): jaxgen never reads them."""
  ignored = {f"{module}.{buffer}" for module in modules for buffer in BATCH_NORM_BUFFERS}
  return {key: value for key, value in state_dict.items() if key not in ignored}


# ----------------------------------------------------------------------------
# Conversion.


def discriminator_to_torch(
  params: Mapping[str, Any], config: PatchDiscriminatorConfig
) -> dict[str, np.ndarray]:
  """jaxgen PatchDiscriminator params -> the reference `NLayerDiscriminator` state dict.

  Loads with `load_state_dict(..., strict=True)` after `torch.from_numpy`.
  """
  return to_torch_with_buffers(params, discriminator_keymap(config), config.norm == "batch")


def discriminator_from_torch(
  state_dict: Mapping[str, Any], config: PatchDiscriminatorConfig
) -> dict[str, Any]:
  """The reference state dict (numpy or torch tensors) -> unboxed float32 jaxgen params.

  Strict: a `ConversionError` lists missing and unexpected keys and shape
  mismatches (BatchNorm buffers are dropped, not checked).
  """
  template = abstract_discriminator_params(config)
  return from_torch_without_buffers(
    state_dict, template, discriminator_keymap(config), config.norm == "batch"
  )
