"""Image pixel conversions shared by the datasets, the judge and the renderers."""

from __future__ import annotations

import numpy as np


def to_uint8(images: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Float images with values in `value_range` -> uint8 [0, 255], clipped; uint8 passes through.

  Scaled in float64 so that uint8 -> float32 -> uint8 round-trips exactly;
  NaN maps to 0.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  low, high = (float(v) for v in value_range)
  if not high > low:
    raise ValueError(f"value_range: expected (low, high) with high > low, found {value_range}")
  scaled = (images.astype(np.float64) - low) / (high - low) * 255.0
  return np.round(np.clip(np.nan_to_num(scaled), 0, 255)).astype(np.uint8)
