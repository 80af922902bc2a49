"""Parameter layers that carry logical axis names.

Every parameter of every jaxgen block is created through the factories below,
so it is boxed as `flax.linen.LogicallyPartitioned` with one logical name per
array axis. A single rules table (in `jaxgen.training`) later maps these names
to mesh axes; the blocks themselves never mention a mesh.

Logical axis vocabulary (keep it small; add a name only with a mapping rule):

  ``embed``       width of a token / residual stream (transformer hidden size,
                  channels entering an attention block).
  ``mlp``         hidden width of a feed-forward layer.
  ``heads``       fused ``heads * head_dim`` axis of attention projections.
  ``kv``          width of the context that cross-attention keys and values
                  are projected from (e.g. text-encoder features).
  ``conv_in``     input channels of a convolution kernel.
  ``conv_out``    output channels of a convolution kernel (and its bias).
  ``norm``        feature axis of a normalisation scale / bias.
  ``vocab``       rows of an embedding table (tokens, class labels).
  ``time_embed``  width of the timestep-embedding MLP.

Spatial kernel axes are named ``None`` (always replicated).

`unboxed = flax.linen.meta.unbox(variables)` strips the boxes;
`flax.linen.get_partition_spec(variables)` turns them into `PartitionSpec`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LOGICAL_AXES: tuple[str, ...] = (
  "embed",
  "mlp",
  "heads",
  "kv",
  "conv_in",
  "conv_out",
  "norm",
  "vocab",
  "time_embed",
)

Dtype = Any
AxisName = str | None


def _check_names(names: Sequence[AxisName]) -> tuple[AxisName, ...]:
  unknown = [n for n in names if n is not None and n not in LOGICAL_AXES]
  if unknown:
    raise ValueError(f"logical axis names must be in {LOGICAL_AXES} (or None); found {unknown}")
  return tuple(names)


def annotated(init: nn.initializers.Initializer, names: Sequence[AxisName]):
  """Wraps an initializer so the parameter it creates carries `names`."""
  return nn.with_logical_partitioning(init, _check_names(names))


def dense(
  features: int,
  axes: tuple[AxisName, AxisName],
  *,
  use_bias: bool = True,
  dtype: Dtype = jnp.float32,
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal(),
  name: str | None = None,
) -> nn.Dense:
  """`nn.Dense` whose kernel is named `axes` = (input axis, output axis)."""
  return nn.Dense(
    features,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=annotated(kernel_init, axes),
    bias_init=annotated(nn.initializers.zeros_init(), axes[1:]),
    name=name,
  )


def conv(
  features: int,
  kernel_size: int,
  *,
  strides: int = 1,
  padding: int | Sequence[tuple[int, int]] = 0,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """2-D `nn.Conv` (NHWC) with an HWIO kernel named (None, None, conv_in, conv_out).

  An int `padding` pads every spatial side by that many pixels, as
  `torch.nn.Conv2d(padding=p)` does.
  """
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=tuple(padding),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=annotated(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
    bias_init=annotated(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def _norm_options(dtype: Dtype, name: str | None) -> dict[str, Any]:
  """What every norm shares: float32 scale and bias on the `norm` axis, PyTorch's variance."""
  return {
    "dtype": dtype,
    "param_dtype": jnp.float32,
    "use_fast_variance": False,  # two-pass, as PyTorch: the one-pass form loses precision
    "scale_init": annotated(nn.initializers.ones_init(), ("norm",)),
    "bias_init": annotated(nn.initializers.zeros_init(), ("norm",)),
    "name": name,
  }


def group_norm(
  num_groups: int, epsilon: float, *, dtype: Dtype = jnp.float32, name: str | None = None
) -> nn.GroupNorm:
  """GroupNorm over the last (channel) axis, two-pass variance like PyTorch."""
  return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, **_norm_options(dtype, name))


def layer_norm(
  epsilon: float = 1e-5, *, dtype: Dtype = jnp.float32, name: str | None = None
) -> nn.LayerNorm:
  """LayerNorm over the last axis, two-pass variance like PyTorch."""
  return nn.LayerNorm(epsilon=epsilon, **_norm_options(dtype, name))


def embed(
  num_embeddings: int,
  features: int,
  *,
  feature_axis: str = "embed",
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Embed:
  """Embedding table named (vocab, `feature_axis`), N(0, 1) init like torch."""
  return nn.Embed(
    num_embeddings,
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    embedding_init=annotated(nn.initializers.normal(stddev=1.0), ("vocab", feature_axis)),
    name=name,
  )


def unannotated_params(variables: Any) -> list[str]:
  """Paths of parameters that are not boxed with logical names (should be empty)."""
  leaves = jax.tree_util.tree_flatten_with_path(
    variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
  )[0]
  return [
    jax.tree_util.keystr(path)
    for path, leaf in leaves
    if not isinstance(leaf, nn.LogicallyPartitioned)
    or len(leaf.names) != len(getattr(leaf.value, "shape", ()))
  ]
