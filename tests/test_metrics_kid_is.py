"""KID and Inception Score against torchmetrics on the same features/logits."""

import numpy as np
import pytest
import torch
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

import jax

from jaxgen.metrics import inception_score, kid
from jaxgen.metrics.frechet import TooFewSamplesError

# torchmetrics warns that it buffers all features; irrelevant for these sizes.
pytestmark = pytest.mark.filterwarnings("ignore:Metric `.*` will save all extracted features")


def test_unbiased_mmd_equals_pairwise_definition():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 5)), rng.normal(loc=0.3, size=(7, 5))
  k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
  m = len(x)
  within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  across = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  expected = within / (m * (m - 1)) - 2 * across / m**2
  assert kid.polynomial_mmd2(x, y) == pytest.approx(expected, rel=1e-12)


def test_kid_matches_torchmetrics_on_the_same_subsets():
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(40, 16)), rng.normal(loc=0.2, size=(36, 16))
  metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=5, subset_size=10)
  metric.update(torch.from_numpy(real), real=True)
  metric.update(torch.from_numpy(fake), real=False)
  torch.manual_seed(123)
  expected_mean, expected_std = metric.compute()
  # torchmetrics draws, per subset, randperm(real) then randperm(fake).
  torch.manual_seed(123)
  real_idx, fake_idx = [], []
  for _ in range(5):
    real_idx.append(torch.randperm(40)[:10].numpy())
    fake_idx.append(torch.randperm(36)[:10].numpy())
  result = kid.kid_from_subset_indices(real, fake, np.stack(real_idx), np.stack(fake_idx))
  assert result.mean == pytest.approx(expected_mean.item(), rel=1e-12)
  assert result.std == pytest.approx(expected_std.item(), rel=1e-10)


def test_kid_random_subsets():
  rng = np.random.default_rng(2)
  real, same, shifted = (rng.normal(loc=m, size=(60, 8)) for m in (0.0, 0.0, 1.0))
  kwargs = dict(key=jax.random.key(0), num_subsets=20, subset_size=30)
  near = kid.kernel_inception_distance(real, same, **kwargs)
  far = kid.kernel_inception_distance(real, shifted, **kwargs)
  assert abs(near.mean) < 3 * near.std + 1e-3
  assert far.mean > 10 * abs(near.mean) and far.mean > 0
  assert kid.kernel_inception_distance(real, shifted, **kwargs) == far  # deterministic in the key
  with pytest.raises(TooFewSamplesError, match="subset_size=61"):
    kid.kernel_inception_distance(real, same, key=jax.random.key(0), subset_size=61)


@pytest.mark.parametrize("num, splits", [(20, 3), (9, 4), (30, 10)])
def test_inception_score_matches_torchmetrics(num, splits):
  # (9, 4): torch.chunk makes 3 chunks of 3; reproduced on purpose.
  logits = np.random.default_rng(3).normal(scale=3.0, size=(num, 12))
  metric = InceptionScore(feature=torch.nn.Identity(), splits=splits)
  metric.update(torch.from_numpy(logits))
  torch.manual_seed(7)
  expected_mean, expected_std = metric.compute()
  torch.manual_seed(7)
  shuffled = logits[torch.randperm(num).numpy()]
  result = inception_score.inception_score(shuffled, splits=splits)
  assert result.mean == pytest.approx(expected_mean.item(), rel=1e-12)
  assert result.std == pytest.approx(expected_std.item(), rel=1e-10)


def test_inception_score_limits():
  confident = 50.0 * np.eye(10)[np.arange(40) % 10]  # every class equally often, sure
  assert inception_score.inception_score(confident, splits=4).mean == pytest.approx(10.0, rel=1e-6)
  uniform = np.zeros((40, 10))
  assert inception_score.inception_score(uniform, splits=4).mean == pytest.approx(1.0)
  shuffled = inception_score.inception_score(confident, splits=4, key=jax.random.key(0))
  assert shuffled.mean <= 10.0 + 1e-6
  with pytest.raises(TooFewSamplesError, match="splits=10"):
    inception_score.inception_score(np.zeros((5, 10)), splits=10)
