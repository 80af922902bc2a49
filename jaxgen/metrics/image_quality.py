"""Full-reference image quality: PSNR and SSIM, one value per image (dm-pix).

Both take batches of NHWC images and an explicit `data_range` (the distance
between the smallest and largest representable value: 1.0 for [0, 1] floats,
255.0 for uint8 values, 2.0 for [-1, 1]); it is never guessed from the data.

SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
K2 0.03, 'valid' filtering and the map averaged over pixels and channels;
this equals scikit-image's `structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=-1)`.
"""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp


def _as_float(x: jax.Array) -> jax.Array:
  """Integers (e.g. uint8 pixels) become float32; float inputs keep their precision."""
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_pair(images: jax.Array, references: jax.Array, data_range: float) -> None:
  if images.shape != references.shape:
    raise ValueError(
      f"images and references must have the same shape, got {images.shape} and {references.shape}"
    )
  if images.ndim != 4:
    raise ValueError(f"images must be NHWC (rank 4), got shape {images.shape}")
  if not data_range > 0:
    raise ValueError(f"data_range must be > 0, got {data_range}")


def psnr(images: jax.Array, references: jax.Array, *, data_range: float) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image: 10 log10(data_range^2 / MSE). Shape (N,)."""
  images, references = jnp.asarray(images), jnp.asarray(references)
  _check_pair(images, references, data_range)
  return _psnr(images, references, data_range)


@jax.jit
def _psnr(images: jax.Array, references: jax.Array, data_range: float) -> jax.Array:
  # dm-pix assumes a unit range; rescaling keeps the formula in one place.
  scale = 1.0 / data_range
  return dm_pix.psnr(_as_float(images) * scale, _as_float(references) * scale)


def ssim(
  images: jax.Array,
  references: jax.Array,
  *,
  data_range: float,
  filter_size: int = 11,
  filter_sigma: float = 1.5,
  k1: float = 0.01,
  k2: float = 0.03,
) -> jax.Array:
  """Structural similarity per image, shape (N,). Images need H, W >= filter_size."""
  images, references = jnp.asarray(images), jnp.asarray(references)
  _check_pair(images, references, data_range)
  if min(images.shape[1:3]) < filter_size:
    raise ValueError(
      f"images must be at least filter_size={filter_size} pixels high and wide, "
      f"got shape {images.shape}"
    )
  return _ssim(images, references, data_range, filter_size, filter_sigma, k1, k2)


@functools.partial(jax.jit, static_argnames=("filter_size",))
def _ssim(images, references, data_range, filter_size, filter_sigma, k1, k2):
  return dm_pix.ssim(
    _as_float(images),
    _as_float(references),
    max_val=data_range,
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    k1=k1,
    k2=k2,
  )
