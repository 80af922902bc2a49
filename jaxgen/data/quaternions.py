"""Quaternions (w, x, y, z), written once for NumPy and jax.numpy (`xp`).

Every function takes the array module from its input: NumPy arrays stay in
NumPy (keeping float64), JAX arrays and tracers use `jax.numpy`, so the same
code serves host-side preprocessing and jitted losses.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def array_module(x: Any):
  """`numpy` for NumPy arrays, else `jax.numpy` (JAX arrays and tracers)."""
  return np if isinstance(x, np.ndarray) else jnp


def qinv(q):
  return q * array_module(q).asarray([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def qmul(q, r):
  """Hamilton product q * r."""
  xp = array_module(q)
  w0, x0, y0, z0 = (q[..., i] for i in range(4))
  w1, x1, y1, z1 = (r[..., i] for i in range(4))
  return xp.stack(
    [
      w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1,
      w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
      w0 * y1 - x0 * z1 + y0 * w1 + z0 * x1,
      w0 * z1 + x0 * y1 - y0 * x1 + z0 * w1,
    ],
    axis=-1,
  )


def qrot(q, v):
  """Rotates vectors v (..., 3) by unit quaternions q (..., 4)."""
  xp = array_module(v)
  qvec = q[..., 1:]
  uv = xp.cross(qvec, v)
  uuv = xp.cross(qvec, uv)
  return v + 2.0 * (q[..., :1] * uv + uuv)


def qbetween(v0, v1):
  """Shortest-arc unit quaternion rotating direction v0 onto v1."""
  xp = array_module(v1)
  w = xp.sqrt((v0**2).sum(-1, keepdims=True) * (v1**2).sum(-1, keepdims=True)) + (v0 * v1).sum(
    -1, keepdims=True
  )
  q = xp.concatenate([w, xp.cross(v0, v1)], axis=-1)
  return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_matrix(q):
  xp = array_module(q)
  r, i, j, k = (q[..., n] for n in range(4))
  two_s = 2.0 / (q * q).sum(-1)
  m = xp.stack(
    [
      1 - two_s * (j * j + k * k),
      two_s * (i * j - k * r),
      two_s * (i * k + j * r),
      two_s * (i * j + k * r),
      1 - two_s * (i * i + k * k),
      two_s * (j * k - i * r),
      two_s * (i * k - j * r),
      two_s * (j * k + i * r),
      1 - two_s * (i * i + j * j),
    ],
    axis=-1,
  )
  return m.reshape(q.shape[:-1] + (3, 3))


def quaternion_to_cont6d(q):
  """The first two columns of the rotation matrix, concatenated."""
  m = quaternion_to_matrix(q)
  return array_module(q).concatenate([m[..., 0], m[..., 1]], axis=-1)
