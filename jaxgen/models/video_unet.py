"""A video U-Net from a trained image U-Net: inflation, and the mask that trains only time.

Make-A-Video and Video LDM start a text-to-video model from a text-to-image
one: the video U-Net is the same `UNet2DConditionModel` with `config.temporal`
set (`jaxgen.models.unet`), its spatial parameters copied from the image
model and its temporal layers freshly initialised to the identity, so at
first every frame is what the image model would make of it.

`temporal_param_mask` marks the temporal parameters, for Video LDM's recipe
(spatial layers frozen): e.g.
`optax.multi_transform({True: adamw, False: optax.set_to_zero()}, mask)`.
`optim.lr_multipliers` cannot express it: it scales whole top-level subtrees
(`down_blocks_0` holds spatial and temporal layers alike).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.models.unet import UNet2DConditionModel, UNetConfig, example_inputs

# Module names of the temporal layers (`jaxgen.models.unet`); a parameter is
# temporal when one of its path segments is one of them (or `<name>_<i>`).
TEMPORAL_MODULES = ("transformer_in", "fps_embedding", "temp_convs", "temp_attentions")


class InflationError(ValueError):
  """The image parameters do not fit the video U-Net's spatial layers."""


def _key(entry: Any) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", entry)))


def is_temporal_path(path: tuple[str, ...]) -> bool:
  """Whether a parameter path (module names, then the leaf) belongs to a temporal layer."""
  return any(
    segment in TEMPORAL_MODULES or segment.rsplit("_", 1)[0] in TEMPORAL_MODULES for segment in path
  )


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
  leaves = jax.tree_util.tree_flatten_with_path(
    tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )[0]
  return {tuple(_key(k) for k in path): leaf for path, leaf in leaves}


@functools.lru_cache(maxsize=8)
def _initialisers(config: UNetConfig, dtype: Any):
  """(abstract boxed variables, jitted (spatial params, rng) -> params) of a video U-Net.

  The second runs the model with the spatial parameters given and the
  "params" collection mutable, so flax initialises only the missing ones:
  the temporal layers (exactly as `init` would), without compiling every
  spatial initialiser too.
  """
  model = UNet2DConditionModel(config, dtype=dtype)
  # Concrete even when first called inside a trace (the trainer's eval_shape / jit): the cache
  # would otherwise keep tracers that a later call cannot use.
  with jax.ensure_compile_time_eval():
    inputs = example_inputs(config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs))

  def fill(spatial, rng):
    _, state = model.apply({"params": spatial}, **inputs, rngs={"params": rng}, mutable=["params"])
    return nn.meta.unbox(state["params"])

  return abstract, jax.jit(fill)


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = jnp.asarray(value)
  return tree


def temporal_param_mask(params: Any) -> Any:
  """Bool pytree shaped like the unboxed `params`: True for temporal parameters.

  Works at any depth (a task's params holding the U-Net under a key) and on
  boxed trees (a `LogicallyPartitioned` leaf counts as one leaf).
  """
  treedef = jax.tree_util.tree_structure(
    nn.meta.unbox(params), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  return jax.tree_util.tree_unflatten(treedef, [is_temporal_path(p) for p in _flat(params)])


def inflate_image_params(
  image_params: Any, video: UNetConfig | UNet2DConditionModel, rng: jax.Array
) -> Any:
  """Image U-Net params -> video U-Net params: spatial copied, temporal freshly initialised.

  Args:
    image_params: the image U-Net's "params" collection (or `{"params": ...}`),
      boxed or not; its config must be the video config without the temporal
      options.
    video: the video U-Net (or its config; `config.temporal` must be set).
    rng: initialises the temporal layers (identity at init whatever it is).

  Returns:
    The video U-Net's params in the same form (with or without the "params"
    level), boxed with logical axis names like `init`'s.

  Raises:
    InflationError naming every image parameter the video U-Net lacks or
    shapes differently, and every spatial video parameter left without one.
  """
  model = video if isinstance(video, UNet2DConditionModel) else UNet2DConditionModel(video)
  if model.config.temporal is None:
    raise InflationError(
      "video: expected a U-Net config with temporal layers (config.temporal set), found temporal=None"
    )
  wrapped = set(image_params) == {"params"}
  image = _flat(nn.meta.unbox(image_params["params"] if wrapped else image_params))
  abstract, fill = _initialisers(model.config, model.dtype)
  target = _flat(abstract["params"])
  problems = []
  for path, value in image.items():
    if path not in target:
      problems.append(f"  {'/'.join(path)}: not in the video U-Net")
    elif is_temporal_path(path):
      problems.append(f"  {'/'.join(path)}: a temporal layer's name in the image params")
    elif tuple(value.shape) != tuple(target[path].value.shape):
      problems.append(
        f"  {'/'.join(path)}: video U-Net shape {tuple(target[path].value.shape)}, "
        f"image shape {tuple(value.shape)}"
      )
  missing = [p for p in target if not is_temporal_path(p) and p not in image]
  problems += [f"  {'/'.join(p)}: spatial parameter missing from the image params" for p in missing]
  if problems:
    raise InflationError(
      f"image_params do not fit the video U-Net ({len(problems)} problems):\n" + "\n".join(problems)
    )
  values = _flat(fill(_nest(image), rng))
  leaves = [leaf.replace_boxed(values[path]) for path, leaf in target.items()]
  treedef = jax.tree_util.tree_structure(
    abstract["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )
  params = jax.tree_util.tree_unflatten(treedef, leaves)
  return {"params": params} if wrapped else params
