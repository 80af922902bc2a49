"""Model configs as frozen dataclasses that read and write diffusers' config dicts.

A jaxgen model config names its fields after the diffusers config keys, so a
`config.json` maps onto it directly. Options that jaxgen does not implement
are accepted only at the value that makes them a no-op; anything else is
named in an `UnsupportedConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from jaxgen.errors import UnsupportedConfigError

T = TypeVar("T")


def as_tuple(value: Any) -> Any:
  """Lists become tuples, so configs stay hashable (they are static in jit)."""
  return tuple(value) if isinstance(value, (list, tuple)) else value


def freeze_sequences(config: Any) -> None:
  """Turns every list field of a frozen dataclass into a tuple, in place."""
  for field in dataclasses.fields(config):
    object.__setattr__(config, field.name, as_tuple(getattr(config, field.name)))


def check_block_types(
  config: Any, allowed_down: tuple[str, ...], allowed_up: tuple[str, ...]
) -> None:
  """One down and one up block type per entry of `block_out_channels`, all known."""
  n = len(config.block_out_channels)
  if len(config.down_block_types) != n or len(config.up_block_types) != n:
    raise ValueError(
      "down_block_types, up_block_types and block_out_channels must have the same length; "
      f"found {len(config.down_block_types)}, {len(config.up_block_types)} and {n}"
    )
  for name, types, allowed in (
    ("down_block_types", config.down_block_types, allowed_down),
    ("up_block_types", config.up_block_types, allowed_up),
  ):
    unknown = [t for t in types if t not in allowed]
    if unknown:
      raise UnsupportedConfigError(f"{name}: supported block types are {allowed}, found {unknown}")


def from_diffusers(
  cls: type[T], config: Mapping[str, Any], fixed_options: Mapping[str, Any], model_name: str
) -> T:
  """Builds `cls` from a diffusers config dict.

  Bookkeeping keys (`_class_name`, `_diffusers_version`, ...) are ignored;
  keys in `fixed_options` must hold their listed value; unknown keys are
  errors. All problems are reported together.
  """
  fields = {f.name for f in dataclasses.fields(cls)}
  kwargs, problems = {}, []
  for key, value in config.items():
    if key.startswith("_"):
      continue
    if key in fields:
      kwargs[key] = value
    elif key in fixed_options:
      if as_tuple(value) != fixed_options[key]:
        problems.append(f"{key}={value!r} (only {fixed_options[key]!r} is supported)")
    else:
      problems.append(f"{key}={value!r} (unknown option)")
  if problems:
    raise UnsupportedConfigError(
      f"unsupported diffusers {model_name} config options: " + "; ".join(problems)
    )
  return cls(**kwargs)


def to_diffusers(config: Any) -> dict[str, Any]:
  """A config dataclass as diffusers keyword arguments (JSON-friendly lists)."""
  return {
    f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
    for f in dataclasses.fields(config)
  }
