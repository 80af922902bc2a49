"""Full-reference image quality: PSNR and SSIM, one value per image (dm-pix).

Both take batches of NHWC images and an explicit `data_range` (the distance
between the smallest and largest representable value: 1.0 for [0, 1] floats,
255.0 for uint8 values, 2.0 for [-1, 1]); it is never guessed from the data.

SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01,
K2 0.03, 'valid' filtering and the map averaged over pixels and channels;
this equals scikit-image's `structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=-1)`.

`batch_size_for_memory` picks how many image pairs one call may take so that
its working set stays within a memory budget (a 4000x4000 SSIM pair alone
needs about 2 GB).
"""

from __future__ import annotations

import functools
import logging

import dm_pix
import jax
import jax.numpy as jnp

# float32 values a jitted call holds per input value at its peak: the two inputs plus XLA's
# temporaries, measured with `jax.jit(f).lower(...).compile().memory_analysis()` (SSIM: 2 + 7.9
# on CPU), rounded up for the host batches and other backends' fusion.
PEAK_FLOATS_PER_VALUE = {"psnr": 4, "ssim": 12}

_LOG = logging.getLogger(__name__)


def batch_size_for_memory(
  metric: str, image_shape: tuple[int, int, int], memory_bytes: float, max_batch_size: int
) -> int:
  """Image pairs per call of `metric` on (H, W, C) images within `memory_bytes` (>= 1).

  At most `max_batch_size`; when a single pair exceeds the budget it is 1, with a warning.
  """
  if metric not in PEAK_FLOATS_PER_VALUE:
    raise ValueError(f"metric: expected one of {sorted(PEAK_FLOATS_PER_VALUE)}, found {metric!r}")
  if not memory_bytes > 0:
    raise ValueError(f"memory_bytes: expected a positive budget, found {memory_bytes}")
  height, width, channels = image_shape
  per_pair = 4 * PEAK_FLOATS_PER_VALUE[metric] * height * width * channels
  fits = int(memory_bytes // per_pair)
  if fits < 1:
    _LOG.warning(
      "%s: one %dx%d image pair needs about %.1f GB, more than the %.1f GB budget; "
      "running one pair at a time",
      metric,
      height,
      width,
      per_pair / 1e9,
      memory_bytes / 1e9,
    )
  return max(1, min(max_batch_size, fits))


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
