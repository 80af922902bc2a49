"""Inception Score (Salimans et al. 2016), as torchmetrics defines it.

IS = exp(E_x KL(p(y|x) || p(y))) per split, reported as mean and unbiased
standard deviation over splits. Following torchmetrics, the logits are
optionally shuffled, then cut like `torch.chunk`: chunks of ceil(N / splits)
rows, the last one shorter (so fewer than `splits` chunks when N is not a
multiple that allows all of them). torchmetrics and torch-fidelity feed the
Inception "logits_unbiased" (no classifier bias). Computed in float64 on the
host.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import scipy.special

from jaxgen.metrics.frechet import TooFewSamplesError


@dataclasses.dataclass(frozen=True)
class InceptionScoreResult:
  mean: float
  std: float  # NaN when there is a single split, as torch's unbiased std


def split_scores(logits: np.ndarray, splits: int) -> np.ndarray:
  """exp(mean KL(p(y|x) || p(y))) for each torch.chunk-style split, in row order."""
  log_prob = scipy.special.log_softmax(logits, axis=1)
  chunk = math.ceil(logits.shape[0] / splits)
  scores = []
  for start in range(0, logits.shape[0], chunk):
    log_p = log_prob[start : start + chunk]
    p = np.exp(log_p)
    log_marginal = np.log(p.mean(axis=0, keepdims=True))
    scores.append(np.exp((p * (log_p - log_marginal)).sum(axis=1).mean()))
  return np.array(scores)


def inception_score(
  logits: np.ndarray, *, splits: int = 10, key: jax.Array | None = None
) -> InceptionScoreResult:
  """Inception Score of (N, num_classes) logits; `key` shuffles the rows first."""
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2:
    raise ValueError(f"logits must have shape (N, num_classes), got {logits.shape}")
  if splits < 1:
    raise ValueError(f"splits must be >= 1, got {splits}")
  if logits.shape[0] < splits:
    raise TooFewSamplesError(
      f"Inception Score with splits={splits} needs at least {splits} samples, got {logits.shape[0]}"
    )
  if key is not None:
    logits = logits[np.asarray(jax.random.permutation(key, logits.shape[0]))]
  scores = split_scores(logits, splits)
  std = float(scores.std(ddof=1)) if len(scores) > 1 else math.nan
  return InceptionScoreResult(mean=float(scores.mean()), std=std)
