"""CycleGAN ResNet generator: reference state dicts <-> jaxgen params.

The reference (`ResnetGenerator` in junyanz/pytorch-CycleGAN-and-pix2pix)
is one `nn.Sequential` named `model`, so a weight is addressed by the index
of its layer in that list (pads, norms and ReLUs take indices too). With
`n` residual blocks:

  jaxgen module        torch module                       layer
  conv_in              model.1                            conv 7×7
  down_0, down_1       model.4, model.7                   conv 3×3 stride 2
  blocks_i/conv_0      model.{10+i}.conv_block.1          first conv of block i
  blocks_i/conv_1      model.{10+i}.conv_block.5          second conv of block i
  up_0, up_1           model.{10+n}, model.{13+n}         ConvTranspose2d
  conv_out             model.{17+n}                       conv 7×7

so `resnet_9blocks` has `model.1`, `model.10…18.conv_block.{1,5}`,
`model.19`, `model.22` and `model.26`. Checkpoints (`latest_net_G_A.pth`)
hold this bare state dict. Older ones carry running statistics of the
instance norms (`model.2.running_mean` ...), which the reference deletes on
load; `generator_from_torch` drops them too (`INSTANCE_NORM_BUFFERS`).

Reference names ↔ jaxgen's CycleGAN task: G_A = `g_ab` (A → B), G_B =
`g_ba`; D_A judges domain B (`d_b` here), D_B judges domain A (`d_a`).

Layouts: conv HWIO <-> OIHW; a flax transposed-conv kernel (kh, kw, in,
out), applied unflipped to the dilated input, is torch's (in, out, kh, kw)
weight with its spatial axes flipped. Transposes and flips only, so a round
trip is bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.convert.keymap import (
  BIAS,
  CONV,
  ConversionError,
  LeafRule,
  Path,
  flatten,
  format_names,
  to_numpy,
  unflatten,
)
from jaxgen.models.resnet_generator import NUM_DOWNSAMPLINGS, ResnetGenerator, ResnetGeneratorConfig

CONV_TRANSPOSE = LeafRule(
  "kernel",
  4,
  "weight",
  lambda k: k[::-1, ::-1].transpose(2, 3, 0, 1),
  lambda w: w.transpose(2, 3, 0, 1)[::-1, ::-1],
  lambda s: (s[2], s[3], s[0], s[1]),
  "flax ConvTranspose (kh, kw, in, out) <-> ConvTranspose2d (in, out, kh, kw), kernel flipped",
)

INSTANCE_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def generator_modules(config: ResnetGeneratorConfig) -> dict[Path, tuple[str, bool]]:
  """jaxgen module path -> (torch module name, whether it is a transposed conv)."""
  n = config.num_blocks
  first_block = 1 + 3 * (1 + NUM_DOWNSAMPLINGS)  # pad, conv, IN, ReLU; then conv, IN, ReLU each
  first_up = first_block + n
  modules = {("conv_in",): ("model.1", False)}
  for i in range(NUM_DOWNSAMPLINGS):
    modules[(f"down_{i}",)] = (f"model.{4 + 3 * i}", False)
  for i in range(n):
    modules[(f"blocks_{i}", "conv_0")] = (f"model.{first_block + i}.conv_block.1", False)
    modules[(f"blocks_{i}", "conv_1")] = (f"model.{first_block + i}.conv_block.5", False)
  for i in range(NUM_DOWNSAMPLINGS):
    modules[(f"up_{i}",)] = (f"model.{first_up + 3 * i}", True)
  modules[("conv_out",)] = (f"model.{first_up + 3 * NUM_DOWNSAMPLINGS + 1}", False)
  return modules


def generator_keymap(config: ResnetGeneratorConfig) -> dict[Path, tuple[str, LeafRule]]:
  """jaxgen parameter path -> (torch state-dict key, layout rule), every parameter once."""
  keymap = {}
  for module, (torch_module, transposed) in generator_modules(config).items():
    keymap[module + ("kernel",)] = (
      f"{torch_module}.weight",
      CONV_TRANSPOSE if transposed else CONV,
    )
    keymap[module + ("bias",)] = (f"{torch_module}.bias", BIAS)
  return keymap


def abstract_generator_params(config: ResnetGeneratorConfig) -> dict[str, Any]:
  """The generator's param shapes (unboxed `ShapeDtypeStruct`s), nothing allocated."""
  size = config.min_input_size
  images = jax.ShapeDtypeStruct((1, size, size, config.in_channels), jnp.float32)
  variables = jax.eval_shape(ResnetGenerator(config).init, jax.random.PRNGKey(0), images)
  return flatten(variables["params"])


def _check_names(keymap: Mapping[Path, Any], flat: Mapping[Path, Any]) -> None:
  missing = set(keymap) - set(flat)
  unexpected = set(flat) - set(keymap)
  if missing or unexpected:
    problems = []
    if missing:
      problems.append(format_names("missing jaxgen parameters", ["/".join(p) for p in missing]))
    if unexpected:
      problems.append(
        format_names("unexpected jaxgen parameters", ["/".join(p) for p in unexpected])
      )
    raise ConversionError("params do not match the ResNet generator:\n" + "\n".join(problems))


def generator_to_torch(
  params: Mapping[str, Any], config: ResnetGeneratorConfig
) -> dict[str, np.ndarray]:
  """jaxgen generator params (boxed or not, optionally under "params") -> reference state dict."""
  if set(params) == {"params"}:
    params = params["params"]
  flat = flatten(params)
  keymap = generator_keymap(config)
  _check_names(keymap, flat)
  expected = abstract_generator_params(config)
  state, bad_shapes = {}, []
  for path, (name, rule) in keymap.items():
    array = np.asarray(flat[path])
    if array.shape != tuple(expected[path].shape):
      bad_shapes.append(f"  {'/'.join(path)}: expected {expected[path].shape}, found {array.shape}")
      continue
    state[name] = np.ascontiguousarray(rule.to_torch(array))
  if bad_shapes:
    raise ConversionError(f"shape mismatches ({len(bad_shapes)}):\n" + "\n".join(bad_shapes))
  return state


def generator_from_torch(
  state_dict: Mapping[str, Any], config: ResnetGeneratorConfig, dtype: Any = np.float32
) -> dict[str, Any]:
  """Reference state dict (numpy arrays or torch tensors) -> unboxed jaxgen params.

  Strict: every key present with the torch shape the config implies, none
  left over (instance-norm running statistics of old checkpoints excepted);
  otherwise one `ConversionError` lists every problem.
  """
  remaining = {
    k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in INSTANCE_NORM_BUFFERS
  }
  expected = abstract_generator_params(config)
  flat, missing, bad_shapes = {}, [], []
  for path, (name, rule) in generator_keymap(config).items():
    if name not in remaining:
      missing.append(f"{name} (for jaxgen {'/'.join(path)})")
      continue
    tensor = to_numpy(remaining.pop(name))
    want = tuple(rule.torch_shape(tuple(expected[path].shape)))
    if tuple(tensor.shape) != want:
      bad_shapes.append(f"  {name}: expected {want}, found {tuple(tensor.shape)}")
      continue
    flat[path] = np.ascontiguousarray(rule.to_jax(tensor)).astype(dtype, copy=False)
  problems = []
  if missing:
    problems.append(format_names("missing torch keys", missing))
  if remaining:
    problems.append(format_names("unexpected torch keys", remaining))
  if bad_shapes:
    problems.append(f"shape mismatches ({len(bad_shapes)}):\n" + "\n".join(bad_shapes))
  if problems:
    raise ConversionError("state dict does not match the ResNet generator:\n" + "\n".join(problems))
  return unflatten(flat)
