"""jaxgen's FID InceptionV3 against the real pytorch-fid `InceptionV3`, same random weights.

Runs only in the reference venv (torch 2.14.1 + torchvision 0.29.1 +
pytorch-fid; see benchmarks/fid_extraction.py) with JAXGEN_REFERENCE_TESTS=1.
pytorch-fid builds its network with its own code; only the weight download
is answered with a random, well-scaled state dict (He-normal convolutions),
which jaxgen imports through its converter.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

from jaxgen.convert import metric_networks

_BENCHMARK = pathlib.Path(__file__).parents[2] / "benchmarks" / "fid_extraction.py"
_spec = importlib.util.spec_from_file_location("fid_extraction", _BENCHMARK)
fid_extraction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fid_extraction)


@pytest.fixture(scope="module")
def state_dict():
  return fid_extraction.random_fid_state_dict("he")


@pytest.fixture(scope="module")
def models(state_dict):
  return (
    fid_extraction.pytorch_fid_inception(state_dict),
    metric_networks.FID_INCEPTION.from_torch(state_dict),
  )


def test_pytorch_fid_holds_the_weights_jaxgen_imported(state_dict, models):
  torch_model, _ = models
  held = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  # pytorch-fid nests torchvision's modules in `blocks`; fc is not used for pool3.
  assert sum(v.size for k, v in held.items() if "num_batches" not in k) == sum(
    v.size for k, v in state_dict.items() if not k.startswith("fc.")
  )
  first = held["blocks.0.0.conv.weight"]
  np.testing.assert_array_equal(first, state_dict["Conv2d_1a_3x3.conv.weight"])


@pytest.mark.parametrize("size", [(299, 299), (64, 80)])
def test_pool3_features_equal_pytorch_fid(models, size):
  torch_model, variables = models
  images = np.random.default_rng(0).random((4, *size, 3), dtype=np.float32)
  want = fid_extraction.torch_features(torch_model, images)
  got = fid_extraction.jaxgen_features(variables, images)
  assert got.shape == want.shape == (4, 2048)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_equals_pytorch_fid(method):
  from pytorch_fid.fid_score import calculate_frechet_distance  # pylint: disable=g-import-not-at-top
  from jaxgen.metrics import frechet  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  real = rng.normal(size=(500, 64))
  fake = rng.normal(size=(400, 64)) @ rng.normal(scale=0.3, size=(64, 64)) + 0.2
  a, b = frechet.statistics_from_features(real), frechet.statistics_from_features(fake)
  expected = calculate_frechet_distance(a.mean, a.covariance, b.mean, b.covariance)
  ours = frechet.frechet_distance(a.mean, a.covariance, b.mean, b.covariance, method=method)
  assert abs(ours - expected) <= 1e-6 * abs(expected)
