"""Helpers shared by the models that mirror transformers (CLIP towers, T5 encoder).

Reading a transformers config (object or config.json dict) into a config
dataclass, and validating config fields and token inputs before anything
compiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError


def config_from_transformers(
  cls: type, config: Any, model_types: tuple[str, ...]
) -> dict[str, Any]:
  """Keyword arguments of `cls` read from a transformers config (object or config.json dict).

  Keys that are not fields of `cls` are bookkeeping or training-only options
  (dropout, initializer ranges, projection_dim, ...) and are ignored.
  """
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if not isinstance(config, Mapping):
    raise ValueError(
      f"config: expected a mapping or a transformers config, found {type(config).__name__}"
    )
  model_type = config.get("model_type")
  if model_type is not None and model_type not in model_types:
    raise UnsupportedConfigError(
      f"config: expected model_type in {model_types}, found {model_type!r}"
    )
  fields = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in config.items() if k in fields}


def check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
  for name in names:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{name}: expected a positive int, found {value!r}")


def check_tokens(
  input_ids: jax.Array, attention_mask: jax.Array | None, max_length: int | None
) -> None:
  """Validates (B, L) integer token ids and an optional (B, L) mask, before anything compiles."""
  if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(
      f"input_ids: expected integer (batch, length), found {input_ids.dtype} {input_ids.shape}"
    )
  if max_length is not None and input_ids.shape[1] > max_length:
    raise ValueError(
      f"input_ids: expected length <= max_position_embeddings={max_length}, found {input_ids.shape[1]}"
    )
  if attention_mask is not None and attention_mask.shape != input_ids.shape:
    raise ValueError(
      f"attention_mask: expected the shape of input_ids {input_ids.shape}, found {attention_mask.shape}"
    )
