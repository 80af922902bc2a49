"""The mixed-precision and rematerialisation policies of a model, read from its config.

Two keys of a model config section (`model.compute_dtype`, `model.remat`)
reach every block through the `dtype` and `remat` fields of the models:

  compute_dtype  "float32" (default) or "bfloat16": the dtype of activations
                 and matmul/conv inputs. Parameters, optimizer state and the
                 loss stay float32 whatever it is (every parameter factory in
                 `jaxgen.nn.partitioning` fixes `param_dtype=float32`), and
                 numerically fragile reductions stay float32 too: GroupNorm
                 and LayerNorm statistics (flax's `force_float32_reductions`),
                 attention logits and softmax (`jaxgen.nn.attention`).
  remat          "none" (default), "full", "save_dots" or "save_dots_no_batch":
                 what the backward pass of a rematerialised block keeps from
                 its forward pass (`jax.checkpoint_policies`): nothing but the
                 block's inputs ("full"), every matmul and convolution output
                 ("save_dots", so only norms, activations and softmaxes are
                 recomputed), or only matmuls without batch dimensions
                 (dense projections: attention's batched matmuls and the
                 convolutions are recomputed). Parameter names do not change,
                 so checkpoints and diffusers conversions are unaffected.

`model_policy(section)` parses both keys at once, with named errors, before
anything is traced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.errors import UnsupportedConfigError

COMPUTE_DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Policy name -> `jax.checkpoint` policy; "none" is no rematerialisation at all.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "save_dots": jax.checkpoint_policies.dots_saveable,
  "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def compute_dtype(name: Any, key: str = "model.compute_dtype") -> Any:
  """The jnp dtype a `compute_dtype` config value names ("float32" or "bfloat16").

  A dtype object (e.g. `jnp.bfloat16`) naming one of them is accepted too.
  `key` is the config key the error names.
  """
  if not isinstance(name, str):
    try:
      name = jnp.dtype(name).name
    except TypeError:
      pass
  if name not in COMPUTE_DTYPES:
    raise UnsupportedConfigError(f"{key}: expected one of {sorted(COMPUTE_DTYPES)}, found {name!r}")
  return COMPUTE_DTYPES[name]


def check_remat(name: Any, key: str = "model.remat") -> str:
  """`name` if it is a remat policy (see `REMAT_POLICIES`), else a named error."""
  if not isinstance(name, str) or name not in REMAT_POLICIES:
    raise UnsupportedConfigError(f"{key}: expected one of {list(REMAT_POLICIES)}, found {name!r}")
  return name


def model_policy(section: Mapping[str, Any] | None, prefix: str = "model") -> dict[str, Any]:
  """`dtype=` and `remat=` keyword arguments of a model, from a config section.

  Reads `compute_dtype` (default "float32") and `remat` (default "none") of
  `section` (e.g. `config.model`); errors name `<prefix>.<key>`.
  """
  section = section or {}
  return {
    "dtype": compute_dtype(section.get("compute_dtype", "float32"), f"{prefix}.compute_dtype"),
    "remat": check_remat(section.get("remat", "none"), f"{prefix}.remat"),
  }


def remat_module(module_class: type[nn.Module], policy: str, static_argnums: tuple[int, ...]):
  """`module_class` rematerialised under `policy` (itself when "none").

  `static_argnums` counts `self` as 0, as `flax.linen.remat` does: Python
  values the block branches on (e.g. `deterministic`) must be static.
  The lifted module keeps its parameter scope, so names are unchanged.
  """
  check_remat(policy, "remat")
  if policy == "none":
    return module_class
  return nn.remat(
    module_class, policy=REMAT_POLICIES[policy], static_argnums=static_argnums, prevent_cse=True
  )
