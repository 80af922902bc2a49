"""Loading experiment configs from files and applying `key=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import os
import traceback
from typing import Callable, Sequence

import ml_collections


# What `jaxgen train` runs, for the errors that point there.
EXPERIMENTS = (
  "experiment configs, configs/<task>_<dataset>.py (e.g. configs/text_to_image_shapes.py)"
)


class ConfigError(ValueError):
  """A config file or override is malformed."""


class ArchitectureConfigError(ConfigError):
  """An architecture file (configs/arch/) was given where an experiment config is expected."""


def _line_in(path: str, error: BaseException) -> int | None:
  """The line of `path` where `error` was raised (its innermost frame in that file)."""
  if isinstance(error, SyntaxError) and error.filename == path:
    return error.lineno
  frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
  return frames[-1].lineno if frames else None


def _run_config_code(path: str, what: str, fn: Callable[[], object]):
  """`fn()`, with anything it raises turned into a ConfigError naming the file and line."""
  try:
    return fn()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (user code: any error is possible)
    line = _line_in(path, e)
    where = f"{path!r}" + (f", line {line}" if line else "")
    detail = e.msg if isinstance(e, SyntaxError) else str(e)
    raise ConfigError(f"--config: {where}: {type(e).__name__} while {what}: {detail}") from e


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no such file {path!r}")
  name = "jaxgen_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  _run_config_code(path, "importing the file", lambda: spec.loader.exec_module(module))
  if not hasattr(module, "get_config"):
    raise ConfigError(
      f"--config: {path!r} defines no get_config(), so it is not a config file; "
      f"`jaxgen train` runs {EXPERIMENTS}"
    )
  return module


def _get_config(module) -> ml_collections.ConfigDict:
  """`module.get_config()`; an error inside it is a ConfigError naming the file and line."""
  return _run_config_code(module.__file__, "calling get_config()", module.get_config)


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Imports a config module (an experiment or an architecture) and calls its `get_config()`."""
  return _get_config(_load_module(path))


def load_experiment_config(path: str) -> ml_collections.ConfigDict:
  """The config of an experiment file; an architecture file is a named error.

  An experiment names its `task`. An architecture file (configs/arch/) holds
  a model's sizes only: the error quotes the usage its docstring gives.
  """
  module = _load_module(path)
  config = _get_config(module)
  if "task" not in config:
    doc = module.__doc__ or ""
    # The docstring's "Usage:" lines, joined into the one line an error prints.
    usage = "; ".join(
      line.strip() for line in doc.partition("Usage:")[2].splitlines() if line.strip()
    )
    raise ArchitectureConfigError(
      f"--config: {path!r} is an architecture file (it holds {', '.join(sorted(config))} "
      f"and no `task`), not an experiment; `jaxgen train` runs {EXPERIMENTS}. Build the "
      f"model from Python instead{': ' + usage if usage else ''}; pretrained weights load "
      "through jaxgen.convert (whole Stable Diffusion folders: `jaxgen convert`)."
    )
  return config


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word is a string


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
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
      raise ConfigError(
        f"override {item!r}: {key!r} is not a config field (fields here: {sorted(node.keys())})"
      )
    value, old = _parse_value(text), node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if old is not None and value is not None and type(value) is not type(old):
      if not (isinstance(old, (list, tuple)) and isinstance(value, (list, tuple))):
        raise ConfigError(
          f"override {item!r}: expected a {type(old).__name__}, got {type(value).__name__}"
        )
    with node.ignore_type():
      node[leaf] = value
  return config
