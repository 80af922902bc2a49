"""SSIM and PSNR (dm-pix) against scikit-image and torchmetrics."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

import jax
import jax.numpy as jnp

from jaxgen.metrics import image_quality


def _pair(seed=0, shape=(3, 24, 20, 3)):
  rng = np.random.default_rng(seed)
  images = rng.random(shape)
  return images, np.clip(images + 0.1 * rng.normal(size=shape), 0, 1)


def _skimage_ssim(a, b, data_range):
  return np.array(
    [
      structural_similarity(
        x,
        y,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
      )
      for x, y in zip(a, b)
    ]
  )


def test_ssim_matches_skimage():
  a, b = _pair()
  with jax.enable_x64(True):
    ours64 = np.asarray(image_quality.ssim(jnp.asarray(a), jnp.asarray(b), data_range=1.0))
  np.testing.assert_allclose(ours64, _skimage_ssim(a, b, 1.0), atol=1e-12)
  ours32 = image_quality.ssim(a.astype(np.float32), b.astype(np.float32), data_range=1.0)
  np.testing.assert_allclose(np.asarray(ours32), _skimage_ssim(a, b, 1.0), atol=1e-5)
  a8, b8 = (np.round(x * 255).astype(np.uint8) for x in (a, b))
  ours_uint8 = image_quality.ssim(a8, b8, data_range=255.0)
  np.testing.assert_allclose(np.asarray(ours_uint8), _skimage_ssim(a8, b8, 255), atol=1e-5)


def test_psnr_matches_skimage_and_torchmetrics():
  a, b = _pair(1)
  expected = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(b, a)]
  with jax.enable_x64(True):
    ours = np.asarray(image_quality.psnr(jnp.asarray(a), jnp.asarray(b), data_range=1.0))
    scaled = np.asarray(
      image_quality.psnr(jnp.asarray(a * 255), jnp.asarray(b * 255), data_range=255.0)
    )
  np.testing.assert_allclose(ours, expected, rtol=1e-12)
  np.testing.assert_allclose(scaled, expected, rtol=1e-12)
  torch_pair = [torch.from_numpy(x).permute(0, 3, 1, 2) for x in (a, b)]
  reference = tm_psnr(*torch_pair, data_range=1.0, reduction="none", dim=(1, 2, 3)).numpy()
  # torchmetrics holds data_range as a float32 tensor, hence ~5e-8 relative.
  np.testing.assert_allclose(ours, reference, rtol=1e-6)
  ours32 = image_quality.psnr(a.astype(np.float32), b.astype(np.float32), data_range=1.0)
  np.testing.assert_allclose(np.asarray(ours32), expected, rtol=1e-5)


def test_identical_images():
  a, _ = _pair(2)
  assert np.allclose(np.asarray(image_quality.ssim(a, a, data_range=1.0)), 1.0)
  assert np.all(np.isinf(np.asarray(image_quality.psnr(a, a, data_range=1.0))))


def test_bad_input_errors():
  a, b = _pair(3)
  with pytest.raises(ValueError, match="same shape"):
    image_quality.psnr(a, b[:, :10], data_range=1.0)
  with pytest.raises(ValueError, match="rank 4"):
    image_quality.ssim(a[0], b[0], data_range=1.0)
  with pytest.raises(ValueError, match="data_range must be > 0"):
    image_quality.psnr(a, b, data_range=0.0)
  with pytest.raises(ValueError, match="filter_size=11"):
    image_quality.ssim(a[:, :8, :8], b[:, :8, :8], data_range=1.0)
