"""Declarative jaxgen <-> PyTorch weight name and layout maps.

A jaxgen parameter is addressed by its module path plus leaf name, e.g.
``("down_blocks_0", "resnets_1", "conv1", "kernel")``; a PyTorch state-dict
entry by a dotted name, ``"down_blocks.0.resnets.1.conv1.weight"``. A
`KeyMap` states, once per model family, how one becomes the other:

1. Module path, segment by segment:
   - a segment listed in `renames` is replaced by its PyTorch name (which may
     contain dots, e.g. ``"text_model_encoder" -> "text_model.encoder"``);
   - a segment ``<list>_<i>`` whose ``<list>`` is in `list_modules` (a
     PyTorch ``ModuleList``/``Sequential``) becomes ``<list>.<i>``;
   - any other segment is kept as is (``time_emb_proj``, ``linear_1``).
2. Leaf, by the rule in `LEAF_RULES` chosen from the jaxgen leaf name and
   rank; the rule names the PyTorch leaf and the tensor transform:

   =============  =====  ============  ==========================================
   jaxgen leaf    rank   torch leaf    transform (jaxgen -> torch)
   =============  =====  ============  ==========================================
   kernel         2      weight        Dense (in, out) -> Linear (out, in)
   kernel         4      weight        Conv HWIO -> Conv2d OIHW
   kernel         2      weight        Dense (in, out) -> Conv2d 1x1 (out, in, 1, 1),
                                       only for modules listed in `conv1x1_linears`
   scale          1      weight        GroupNorm/LayerNorm scale, unchanged
   bias           1      bias          unchanged
   embedding      2      weight        Embed table (num, dim), unchanged
   =============  =====  ============  ==========================================

Conversion from PyTorch is driven by a template of the expected jaxgen
shapes (e.g. from `jax.eval_shape`), so every tensor is shape-checked and
missing or unexpected names are reported together in a `ConversionError`.
Transforms are transposes/reshapes only: a round trip is bit-identical.
torch is never imported; tensors are read through duck typing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Path = tuple[str, ...]


class ConversionError(ValueError):
  """Names do not match or shapes disagree between jaxgen params and a state dict."""


# ----------------------------------------------------------------------------
# Param trees <-> flat {path: array} dicts.


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
  """Nested dict -> {path tuple: leaf}. Boxed (LogicallyPartitioned) leaves are unboxed."""
  flat = {}
  for key, value in tree.items():
    path = prefix + (str(key),)
    if isinstance(value, Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value.unbox() if hasattr(value, "unbox") else value
  return flat


def unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
  """{path tuple: leaf} -> nested dict."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def dotted(path: Iterable[str]) -> str:
  return ".".join(path)


def to_numpy(tensor: Any) -> np.ndarray:
  """numpy view of a numpy/JAX array or a torch tensor (bfloat16 widened to float32)."""
  if hasattr(tensor, "detach"):  # torch.Tensor, without importing torch
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
      tensor = tensor.float()
    return tensor.numpy()
  return np.asarray(tensor)


# ----------------------------------------------------------------------------
# Leaf rules.


@dataclasses.dataclass(frozen=True)
class LeafRule:
  """How one jaxgen leaf maps to one torch tensor."""

  jax_leaf: str
  rank: int
  torch_leaf: str
  to_torch: Callable[[np.ndarray], np.ndarray]
  to_jax: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
  description: str


def _identity(x: np.ndarray) -> np.ndarray:
  return x


DENSE = LeafRule(
  "kernel",
  2,
  "weight",
  lambda k: k.T,
  lambda w: w.T,
  lambda s: s[::-1],
  "Dense (in, out) <-> Linear (out, in)",
)
CONV = LeafRule(
  "kernel",
  4,
  "weight",
  lambda k: k.transpose(3, 2, 0, 1),
  lambda w: w.transpose(2, 3, 1, 0),
  lambda s: (s[3], s[2], s[0], s[1]),
  "Conv HWIO <-> Conv2d OIHW",
)
DENSE_AS_CONV1X1 = LeafRule(
  "kernel",
  2,
  "weight",
  lambda k: k.T[:, :, None, None],
  lambda w: w[:, :, 0, 0].T,
  lambda s: (s[1], s[0], 1, 1),
  "Dense (in, out) <-> Conv2d 1x1 (out, in, 1, 1)",
)
SCALE = LeafRule("scale", 1, "weight", _identity, _identity, tuple, "norm scale <-> weight")
BIAS = LeafRule("bias", 1, "bias", _identity, _identity, tuple, "bias <-> bias")
EMBEDDING = LeafRule(
  "embedding", 2, "weight", _identity, _identity, tuple, "Embed (num, dim) <-> Embedding weight"
)

LEAF_RULES: tuple[LeafRule, ...] = (DENSE, CONV, SCALE, BIAS, EMBEDDING)


# ----------------------------------------------------------------------------
# Key maps.

_LIST_SEGMENT = re.compile(r"^(?P<list>.+)_(?P<index>\d+)$")


@dataclasses.dataclass(frozen=True)
class KeyMap:
  """Name map of one model family (see the module docstring).

  Attributes:
    list_modules: PyTorch ModuleList/Sequential attribute names; jaxgen
      segment ``<name>_<i>`` <-> torch ``<name>.<i>``.
    renames: whole jaxgen segment -> torch name, checked before list_modules.
    conv1x1_linears: glob patterns over torch module names (without the
      leaf) whose jaxgen Dense kernel is stored as a 1x1 Conv2d in torch.
  """

  list_modules: frozenset[str] = frozenset()
  renames: Mapping[str, str] = dataclasses.field(default_factory=dict)
  conv1x1_linears: tuple[str, ...] = ()

  def torch_module(self, module_path: Path) -> str:
    parts = []
    for segment in module_path:
      if segment in self.renames:
        parts.append(self.renames[segment])
        continue
      match = _LIST_SEGMENT.match(segment)
      if match and match["list"] in self.list_modules:
        parts.append(f"{match['list']}.{match['index']}")
      else:
        parts.append(segment)
    return dotted(parts)

  def rule(self, path: Path, rank: int) -> LeafRule:
    leaf = path[-1]
    if leaf == "kernel" and rank == 2:
      module = self.torch_module(path[:-1])
      if any(fnmatch.fnmatchcase(module, pattern) for pattern in self.conv1x1_linears):
        return DENSE_AS_CONV1X1
    for rule in LEAF_RULES:
      if rule.jax_leaf == leaf and rule.rank == rank:
        return rule
    raise ConversionError(
      f"no conversion rule for jaxgen parameter {'/'.join(path)} of rank {rank}"
    )

  def torch_name(self, path: Path, rank: int) -> str:
    rule = self.rule(path, rank)
    module = self.torch_module(path[:-1])
    return f"{module}.{rule.torch_leaf}" if module else rule.torch_leaf


def format_names(title: str, names: Iterable[str], limit: int = 40) -> str:
  """`title (count):` then one indented name a line, the first `limit` of them, sorted."""
  names = sorted(names)
  lines = [f"{title} ({len(names)}):"] + [f"  {n}" for n in names[:limit]]
  if len(names) > limit:
    lines.append(f"  ... and {len(names) - limit} more")
  return "\n".join(lines)


def to_torch(params: Mapping[str, Any], keymap: KeyMap) -> dict[str, np.ndarray]:
  """jaxgen params (boxed or not; a leading "params" collection is allowed) -> torch-named numpy dict."""
  if set(params) == {"params"}:
    params = params["params"]
  state = {}
  for path, value in flatten(params).items():
    array = np.asarray(value)
    rule = keymap.rule(path, array.ndim)
    name = keymap.torch_name(path, array.ndim)
    if name in state:
      raise ConversionError(f"two jaxgen parameters map to the torch name {name}")
    state[name] = np.ascontiguousarray(rule.to_torch(array))
  return state


def from_torch(
  state_dict: Mapping[str, Any],
  template: Mapping[str, Any],
  keymap: KeyMap,
  dtype: Any = np.float32,
) -> dict[str, Any]:
  """Torch state dict -> jaxgen params shaped like `template` (unboxed numpy arrays of `dtype`).

  `template` is a params tree whose leaves have `.shape` (arrays or
  `jax.ShapeDtypeStruct`, boxed or not). Strict: every template entry must be
  present with the right shape and no state-dict entry may be left over;
  otherwise one `ConversionError` lists every problem.
  """
  if set(template) == {"params"}:
    template = template["params"]
  expected = flatten(template)
  remaining = dict(state_dict)
  flat, missing, bad_shapes = {}, [], []
  for path, leaf in expected.items():
    shape = tuple(leaf.shape)
    rule = keymap.rule(path, len(shape))
    name = keymap.torch_name(path, len(shape))
    if name not in remaining:
      missing.append(f"{name} (for jaxgen {'/'.join(path)})")
      continue
    tensor = to_numpy(remaining.pop(name))
    want = tuple(rule.torch_shape(shape))
    if tuple(tensor.shape) != want:
      bad_shapes.append(
        f"  {name}: expected {want} (jaxgen {'/'.join(path)} {shape}), found {tuple(tensor.shape)}"
      )
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
    raise ConversionError("state dict does not match the jaxgen model:\n" + "\n".join(problems))
  return unflatten(flat)
