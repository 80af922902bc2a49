"""Running a jitted function over host arrays in fixed-size row chunks."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def map_padded_chunks(fn: Callable[..., Any], arrays: Sequence[np.ndarray], chunk_size: int) -> Any:
  """fn(i, *chunk_i) over row chunks of `arrays`, results concatenated on axis 0.

  Every chunk has `chunk_size` rows (the last is padded by repeating its final
  row, and the padding is cut from fn's results), so a jitted fn compiles
  once. fn returns an array or a pytree of arrays with the rows on axis 0.
  """
  n = len(arrays[0])
  results = []
  for i, start in enumerate(range(0, n, chunk_size)):
    parts = [a[start : start + chunk_size] for a in arrays]
    pad = chunk_size - len(parts[0])
    if pad:
      parts = [np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in parts]
    out = fn(i, *map(jnp.asarray, parts))
    results.append(jax.tree.map(lambda x, pad=pad: np.asarray(x)[: chunk_size - pad], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *results)
