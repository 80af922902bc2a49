"""The small protocol through which the trainer knows a task."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Batch = Mapping[str, jax.Array]

# A loss may return, under this key of its metrics, new values for some
# parameters that are not trained by gradients (e.g. a VQ codebook's EMA
# cluster statistics): a nested dict shaped like a sub-tree of the params.
# The trainer writes them over params and EMA params after the optimizer step.
STATE_UPDATES_KEY = "state_updates"


def map_padded_chunks(fn: Callable[..., PyTree], arrays: Sequence[np.ndarray],
                      chunk_size: int) -> PyTree:
  """fn(i, *chunk_i) over row chunks of `arrays`, results concatenated on axis 0.

  Every chunk has `chunk_size` rows (the last is padded by repeating its final
  row, and the padding is cut from fn's results), so a jitted fn compiles
  once. fn returns an array or a pytree of arrays with the rows on axis 0.
  """
  n = len(arrays[0])
  results = []
  for i, start in enumerate(range(0, n, chunk_size)):
    parts = [a[start:start + chunk_size] for a in arrays]
    pad = chunk_size - len(parts[0])
    if pad:
      parts = [np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in parts]
    out = fn(i, *map(jnp.asarray, parts))
    results.append(jax.tree.map(lambda x, pad=pad: np.asarray(x)[:chunk_size - pad], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *results)


class Task(Protocol):
  """A generative task: its data, its model's init, loss and preview samples.

  All methods that take `params` are pure and jittable, except
  `train_arrays` and `preview`, which run on the host.

  A task may also define `train_buckets(arrays)`, returning
  `jaxgen.data.pipeline.LengthBuckets` that crop padded axes of its training
  batches to a few fixed lengths (one compiled step per bucket); only a task
  whose loss ignores that padding should.
  """

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """The training split as equally long host arrays, keyed like a batch."""

  def abstract_batch(self, batch_size: int) -> Mapping[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a batch, for building states without data."""

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    """Raises a named ValueError if a host batch does not fit the config."""

  def init(self, rng: jax.Array, batch: Batch) -> PyTree:
    """Boxed (logically annotated) parameters for a batch of this shape."""

  def loss(self, params: PyTree, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict]:
    """Scalar training loss and a dict of scalar metrics.

    The trainer adds `batch["step"]` (int32 scalar, updates so far). The
    metrics may carry `STATE_UPDATES_KEY` (see above).
    """

  def preview(self, params: PyTree, rng: jax.Array) -> np.ndarray:
    """A uint8 picture (a captioned sample grid) showing the model now."""
