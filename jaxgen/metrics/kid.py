"""Kernel Inception Distance (Bińkowski et al. 2018), as torchmetrics / torch-fidelity.

KID is the unbiased estimate of the squared maximum mean discrepancy between
real and generated features under the cubic polynomial kernel
k(x, y) = (gamma * x.y + coef) ** degree with gamma = 1 / D, averaged over
`num_subsets` random subsets of `subset_size` real and fake features (each
subset drawn without replacement); the reported spread is the population
standard deviation over subsets (`std(unbiased=False)`).

Computed in float64 on the host: MMD^2 is a small difference of large kernel
sums, and numpy keeps float64 without JAX's global x64 switch.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxgen.metrics.frechet import TooFewSamplesError


@dataclasses.dataclass(frozen=True)
class KIDResult:
  mean: float
  std: float


def polynomial_kernel(
  x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> np.ndarray:
  """(gamma * x @ y.T + coef) ** degree, with gamma = 1 / D by default."""
  if gamma is None:
    gamma = 1.0 / x.shape[1]
  return (x @ y.T * gamma + coef) ** degree


def unbiased_mmd2(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
  """Unbiased MMD^2 from the three (m, m) kernel matrices (diagonals of k_xx, k_yy excluded)."""
  m = k_xx.shape[0]
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2 * k_xy.sum() / (m * m))


def polynomial_mmd2(
  real: np.ndarray,
  fake: np.ndarray,
  *,
  degree: int = 3,
  gamma: float | None = None,
  coef: float = 1.0,
) -> float:
  """Unbiased MMD^2 between two equally sized feature sets under the polynomial kernel."""
  kernel = dict(degree=degree, gamma=gamma, coef=coef)
  return unbiased_mmd2(
    polynomial_kernel(real, real, **kernel),
    polynomial_kernel(real, fake, **kernel),
    polynomial_kernel(fake, fake, **kernel),
  )


def kid_from_subset_indices(
  real_features: np.ndarray,
  fake_features: np.ndarray,
  real_indices: np.ndarray,
  fake_indices: np.ndarray,
  *,
  degree: int = 3,
  gamma: float | None = None,
  coef: float = 1.0,
) -> KIDResult:
  """KID over given subsets: `real_indices`, `fake_indices` are (num_subsets, subset_size)."""
  real = _as_features("real_features", real_features)
  fake = _as_features("fake_features", fake_features)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(
      f"real_features and fake_features must have the same dimension, "
      f"got {real.shape[1]} and {fake.shape[1]}"
    )
  real_indices, fake_indices = np.asarray(real_indices), np.asarray(fake_indices)
  if real_indices.ndim != 2 or real_indices.shape != fake_indices.shape:
    raise ValueError(
      "real_indices and fake_indices must both have shape (num_subsets, subset_size), "
      f"got {real_indices.shape} and {fake_indices.shape}"
    )
  if real_indices.shape[1] < 2:
    raise ValueError(f"subset_size must be >= 2, got {real_indices.shape[1]}")
  scores = np.array(
    [
      polynomial_mmd2(real[r], fake[f], degree=degree, gamma=gamma, coef=coef)
      for r, f in zip(real_indices, fake_indices)
    ]
  )
  return KIDResult(mean=float(scores.mean()), std=float(scores.std()))


def sample_subset_indices(
  key: jax.Array, num_samples: int, num_subsets: int, subset_size: int
) -> np.ndarray:
  """(num_subsets, subset_size) indices, each row drawn without replacement."""
  keys = jax.random.split(key, num_subsets)
  return np.asarray(jax.vmap(lambda k: jax.random.permutation(k, num_samples)[:subset_size])(keys))


def kernel_inception_distance(
  real_features: np.ndarray,
  fake_features: np.ndarray,
  *,
  key: jax.Array,
  num_subsets: int = 100,
  subset_size: int = 1000,
  degree: int = 3,
  gamma: float | None = None,
  coef: float = 1.0,
) -> KIDResult:
  """KID mean and std over random subsets (torchmetrics defaults: 100 subsets of 1000)."""
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  if subset_size < 2:
    raise ValueError(f"subset_size must be >= 2, got {subset_size}")
  for name, features in (("real_features", real_features), ("fake_features", fake_features)):
    if len(features) < subset_size:
      raise TooFewSamplesError(
        f"KID needs at least subset_size={subset_size} samples, {name} has {len(features)}"
      )
  real_key, fake_key = jax.random.split(key)
  return kid_from_subset_indices(
    real_features,
    fake_features,
    sample_subset_indices(real_key, len(real_features), num_subsets, subset_size),
    sample_subset_indices(fake_key, len(fake_features), num_subsets, subset_size),
    degree=degree,
    gamma=gamma,
    coef=coef,
  )


def _as_features(name: str, features: np.ndarray) -> np.ndarray:
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2:
    raise ValueError(f"{name} must have shape (N, D), got {features.shape}")
  return features
