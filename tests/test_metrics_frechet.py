"""Fréchet distance and streaming Gaussian statistics."""

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import _compute_fid

from jaxgen.metrics import frechet


def _random_covariance(rng, dim, samples):
  x = rng.normal(size=(samples, dim)) * rng.uniform(0.5, 2.0, size=dim)
  return np.cov(x, rowvar=False)


def test_streaming_statistics_equal_numpy_mean_and_cov():
  rng = np.random.default_rng(0)
  features = rng.normal(loc=3.0, size=(103, 16)).astype(np.float32)
  stats = frechet.empty_statistics(16)
  for start, stop in ((0, 1), (1, 50), (50, 51), (51, 103)):  # uneven batches, single rows
    stats = frechet.update_statistics(stats, features[start:stop])
  assert stats.count == 103
  reference = features.astype(np.float64)
  np.testing.assert_allclose(stats.mean, reference.mean(axis=0), rtol=1e-13, atol=1e-13)
  np.testing.assert_allclose(
    stats.covariance, np.cov(reference, rowvar=False), rtol=1e-11, atol=1e-13
  )
  halves = frechet.merge_statistics(
    frechet.statistics_from_features(features[:40]), frechet.statistics_from_features(features[40:])
  )
  np.testing.assert_allclose(halves.covariance, stats.covariance, rtol=1e-12, atol=1e-14)


def test_covariance_needs_two_samples():
  stats = frechet.statistics_from_features(np.ones((1, 4)))
  with pytest.raises(frechet.TooFewSamplesError, match="count=1"):
    stats.covariance


def test_diagonal_gaussians_have_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  for method in ("sqrtm", "eigh"):
    value = frechet.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2), method=method)
    assert value == pytest.approx(expected, abs=1e-12)


def test_sqrtm_eigh_and_torchmetrics_agree():
  rng = np.random.default_rng(1)
  dim = 64
  mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
  sigma1, sigma2 = _random_covariance(rng, dim, 200), _random_covariance(rng, dim, 300)
  by_sqrtm = frechet.frechet_distance(mu1, sigma1, mu2, sigma2, method="sqrtm")
  by_eigh = frechet.frechet_distance(mu1, sigma1, mu2, sigma2, method="eigh")
  reference = _compute_fid(*(torch.from_numpy(a) for a in (mu1, sigma1, mu2, sigma2))).item()
  assert by_sqrtm == pytest.approx(by_eigh, rel=1e-10)
  assert by_sqrtm == pytest.approx(reference, rel=1e-9)
  same = frechet.frechet_distance(mu1, sigma1, mu1, sigma1)
  assert abs(same) < 1e-8


def test_singular_product_gets_eps_offset(monkeypatch):
  calls = []
  real_sqrtm = frechet.scipy.linalg.sqrtm

  def flaky_sqrtm(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

  monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", flaky_sqrtm)
  sigma = np.diag([1.0, 2.0])
  value = frechet.frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma, eps=1e-3, method="sqrtm")
  np.testing.assert_allclose(calls[1], (sigma + 1e-3 * np.eye(2)) @ (sigma + 1e-3 * np.eye(2)))
  assert value == pytest.approx(-2 * 2 * 1e-3, abs=1e-9)  # tr(S) + tr(S) - 2 tr(S + eps I)


def test_imaginary_component_is_an_error():
  with pytest.raises(ValueError, match="imaginary component"):
    frechet.frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2), method="sqrtm")


def test_shape_and_method_errors():
  with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match="method"):
    frechet.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_statistics_file_round_trip(tmp_path):
  stats = frechet.statistics_from_features(np.random.default_rng(2).normal(size=(10, 5)))
  frechet.save_statistics(tmp_path / "s.npz", stats)
  mu, sigma = frechet.load_statistics(tmp_path / "s.npz")
  np.testing.assert_array_equal(mu, stats.mean)
  np.testing.assert_array_equal(sigma, stats.covariance)
