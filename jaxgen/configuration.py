"""Loading experiment configs from files and applying `key=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Sequence

import ml_collections


class ConfigError(ValueError):
  """A config file or override is malformed."""


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Imports a config module from a file path and calls its `get_config()`."""
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no such file {path!r}")
  name = "jaxgen_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config: {path!r} defines no get_config()")
  return module.get_config()


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word is a string


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Returns a copy of `config` with dotted `key=value` overrides applied.

  Values are Python literals (`train.num_steps=100`, `unet.block_out_channels=(32,64)`);
  anything else is taken as a string. Unknown keys and type changes are errors.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} must look like key=value")
    key, text = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
        raise ConfigError(f"override {item!r}: {key!r} is not a config field")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"override {item!r}: {key!r} is not a config field "
                        f"(fields here: {sorted(node.keys())})")
    value, old = _parse_value(text), node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if old is not None and value is not None and type(value) is not type(old):
      if not (isinstance(old, (list, tuple)) and isinstance(value, (list, tuple))):
        raise ConfigError(f"override {item!r}: expected a {type(old).__name__}, "
                          f"got {type(value).__name__}")
    with node.ignore_type():
      node[leaf] = value
  return config
