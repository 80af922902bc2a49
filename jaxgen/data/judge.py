"""Analytic judge: reads shape, colour, size and position off an image.

Scores images generated for captioned-shapes captions without any learned
model. Per image:

1. Background: the per-channel median (shapes cover < 10% of the image).
2. Foreground: pixels whose Chebyshev distance to the background exceeds half
   the palette's distance to it, i.e. more than 50% shape coverage.
3. Blob: the largest 8-connected foreground component (stray specks ignored).
4. Colour: vote of the nearest palette hue over the blob's pixels, weighted by
   chroma (robust to noise, desaturation and brightness changes).
5. Position: the blob's centroid, binned into the 3x3 grid of thirds.
6. Shape: analysis by synthesis. The blob's soft coverage (antialiased edge
   pixels count fractionally) gives its area and centroid; for each shape the
   renderer draws the one template with that area and centroid (optionally
   blurred), and the template closest to the blob in L1 wins. This stays
   reliable on small, blurred or noisy shapes where pixel-counting fill
   ratios are not.
7. Size: the winning template's half size against a threshold halfway
   between the nominal small and large ones (soft area survives blur better
   than a bounding box).

An image without foreground predicts -1 for everything and counts as wrong.
The judge takes uint8 images; other dtypes need an explicit `value_range`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from jaxgen.data import shapes as shapes_lib
from jaxgen.data.images import to_uint8

# Foreground threshold, as a fraction of the palette's distance to background.
_FOREGROUND_FRACTION = 0.5
# Blobs smaller than this fraction of the nominal small shape's area are noise.
_MIN_AREA_FRACTION = 0.1
# Half size (fraction of the image side) between small and large.
_SIZE_THRESHOLD = (shapes_lib.HALF_SIZES["small"] + shapes_lib.HALF_SIZES["large"]) / 2
# Area of each shape in units of its squared half size (circle, square,
# triangle), and its centroid's offset below the bounding-box centre.
_UNIT_AREAS = np.asarray([np.pi, 4.0, 2.0])
_CENTROID_OFFSETS = np.asarray([0.0, 0.0, 1 / 3])
# Pixels this far (8-connected) from the blob still count towards its soft
# coverage: they hold its antialiased or blurred edge.
_EDGE_PIXELS = 2
# Gaussian blurs tried on the templates, in pixels at 32x32 resolution.
_TEMPLATE_BLURS = (0.0, 0.5, 0.8, 1.1)
_PALETTE = np.asarray([shapes_lib.PALETTE[c] for c in shapes_lib.COLOURS], np.float64)
_BACKGROUND = np.asarray(shapes_lib.BACKGROUND, np.float64)
_FULL_SCALE = np.abs(_PALETTE - _BACKGROUND).max(axis=-1).min()
_STRUCTURE = np.ones((3, 3), bool)  # 8-connectivity.


def measure_blob(image: np.ndarray) -> dict | None:
  """Colour and geometry of the largest foreground blob of a uint8 image.

  Args:
    image: uint8 [S, S, 3].

  Returns:
    None without a blob, else a dict: "colour_votes" float [len(COLOURS)];
    "centroid" (x, y) as fractions of the image side; "soft_area" (fraction
    of the image) and "coverage" (float [S, S] soft coverage of the blob,
    zero elsewhere).
  """
  size = image.shape[0]
  pixels = image.astype(np.float64)
  background = np.median(pixels.reshape(-1, 3), axis=0)
  distance = np.abs(pixels - background).max(axis=-1)
  foreground = distance > _FOREGROUND_FRACTION * _FULL_SCALE

  components, count = ndimage.label(foreground, structure=_STRUCTURE)
  if count == 0:
    return None
  areas = np.bincount(components.ravel())[1:]
  blob_id = int(np.argmax(areas)) + 1
  nominal_small = (2 * shapes_lib.HALF_SIZES["small"] * size) ** 2
  if areas[blob_id - 1] < _MIN_AREA_FRACTION * nominal_small:
    return None
  blob = components == blob_id

  hue, chroma = _hue_and_chroma(pixels[blob])
  palette_hue, _ = _hue_and_chroma(_PALETTE)
  hue_gap = np.abs((hue[:, None] - palette_hue[None, :] + 180) % 360 - 180)
  votes = np.bincount(np.argmin(hue_gap, axis=1), weights=chroma, minlength=len(_PALETTE))

  # Soft coverage, scaled by the blob's own contrast so that a shape drawn
  # darker or brighter than the palette still covers its pixels fully.
  contrast = max(np.percentile(distance[blob], 90), 1.0)
  near = ndimage.binary_dilation(blob, _STRUCTURE, iterations=_EDGE_PIXELS)
  soft = np.where(near, np.clip(distance / contrast, 0, 1), 0)
  area = soft.sum()
  grid = np.arange(size) + 0.5
  return dict(
    colour_votes=votes,
    centroid=((soft.sum(axis=0) @ grid) / area / size, (soft.sum(axis=1) @ grid) / area / size),
    soft_area=area / size**2,
    coverage=soft.astype(np.float32),
  )


def match_shapes(blobs: Sequence[dict], resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """The shape template that best explains each of M blobs.

  For every shape the template has the blob's soft area and centroid; the
  template with the smallest L1 distance to the blob's coverage wins.

  Returns:
    Shape indices int32 [M] and the winning templates' half sizes float [M]
    (fractions of the image side).
  """
  if not blobs:
    return np.zeros(0, np.int32), np.zeros(0)
  area = np.asarray([b["soft_area"] for b in blobs])
  centroid = np.asarray([b["centroid"] for b in blobs])
  num_shapes = len(shapes_lib.SHAPES)
  half = np.sqrt(area[:, None] / _UNIT_AREAS[None, :])  # [M, shapes]
  centres = np.repeat(centroid[:, None, :], num_shapes, axis=1)
  centres[..., 1] -= _CENTROID_OFFSETS * half
  templates = shapes_lib.coverage(
    np.tile(np.arange(num_shapes), len(blobs)), centres.reshape(-1, 2), half.reshape(-1), resolution
  ).reshape(len(blobs), num_shapes, resolution, resolution)
  observed = np.stack([b["coverage"] for b in blobs])[:, None]
  # Generated images are often a little blurry: each template may take the
  # blur (in pixels) that fits best.
  errors = np.min(
    [
      np.abs(_blur(templates, sigma * resolution / 32) - observed).sum(axis=(2, 3))
      for sigma in _TEMPLATE_BLURS
    ],
    axis=0,
  )
  best = np.argmin(errors, axis=1)
  return best.astype(np.int32), half[np.arange(len(blobs)), best]


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur over the last two axes."""
  if sigma == 0:
    return images
  return ndimage.gaussian_filter(images, sigma, axes=(-2, -1), mode="constant")


def predict_attributes(
  images: np.ndarray, value_range: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
  """Predicts attribute indices for square RGB images [N, S, S, 3].

  Args:
    images: uint8 images, or float images together with `value_range`, e.g.
      (-1, 1) for diffusion samples.
    value_range: required exactly when images are not uint8.

  Returns:
    int32 [N] arrays "shape", "colour", "size", "position" (indices into
    shapes.SHAPES etc., -1 where nothing was found) and bool [N] "found".
  """
  images = _as_uint8_images(images, value_range)
  out = {k: np.full(len(images), -1, np.int32) for k in shapes_lib.ATTRIBUTES}
  blobs = [measure_blob(image) for image in images]
  found = np.asarray([b is not None for b in blobs], bool)
  blobs = [b for b in blobs if b is not None]
  out["found"] = found
  if not blobs:
    return out
  cells = np.minimum((3 * np.asarray([b["centroid"] for b in blobs])), 2)
  cells = cells.astype(np.int32)
  out["position"][found] = 3 * cells[:, 1] + cells[:, 0]
  out["colour"][found] = [np.argmax(b["colour_votes"]) for b in blobs]
  shape, half_size = match_shapes(blobs, images.shape[1])
  out["shape"][found] = shape
  out["size"][found] = half_size > _SIZE_THRESHOLD
  return out


def judge_images(
  images: np.ndarray,
  targets: (Sequence[shapes_lib.ShapeSpec] | Sequence[str] | Mapping[str, np.ndarray]),
  value_range: tuple[float, float] | None = None,
) -> dict:
  """Scores images against what their captions asked for.

  Args:
    images: [N, S, S, 3], see `predict_attributes`.
    targets: N ShapeSpecs, N captions, or a mapping with int arrays [N] under
      "shape", "colour", "size" and "position" (as returned by make_split).
    value_range: required exactly when images are not uint8.

  Returns:
    "accuracy": floats "shape", "colour", "size", "position", "all" (every
    attribute right) and "found" (fraction with a foreground blob);
    "predictions": per image, see `predict_attributes`; "correct": bool [N]
    per attribute and "all".
  """
  target_labels = _target_labels(targets)
  n = len(target_labels["shape"])
  if np.ndim(images) != 4 or len(images) != n:
    raise ValueError(
      f"images must be [N, S, S, 3] with N = {n} targets, got shape {np.shape(images)}."
    )
  predictions = predict_attributes(images, value_range)
  correct = {k: predictions[k] == target_labels[k] for k in shapes_lib.ATTRIBUTES}
  correct["all"] = np.logical_and.reduce(list(correct.values()))
  accuracy = {k: float(np.mean(v)) for k, v in correct.items()}
  accuracy["found"] = float(np.mean(predictions["found"]))
  return dict(accuracy=accuracy, predictions=predictions, correct=correct)


def _hue_and_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Hue in degrees (hexagonal projection) and chroma of float RGB [..., 3].

  The projection puts the six palette hues exactly 60 degrees apart.
  """
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  alpha = r - (g + b) / 2
  beta = np.sqrt(3) / 2 * (g - b)
  hue = np.degrees(np.arctan2(beta, alpha)) % 360
  return hue, rgb.max(axis=-1) - rgb.min(axis=-1)


def _as_uint8_images(images: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images must be square RGB [N, S, S, 3], got shape {images.shape}.")
  if images.shape[1] < 8:
    raise ValueError(f"images must be at least 8x8, got {images.shape[1:3]}.")
  if images.dtype == np.uint8:
    if value_range is not None:
      raise ValueError(f"value_range must be None for uint8 images, got {value_range}.")
    return images
  if value_range is None:
    raise ValueError(
      f"images of dtype {images.dtype} need value_range, e.g. "
      "(-1, 1) or (0, 1); only uint8 images imply (0, 255)."
    )
  return to_uint8(images, value_range)


def _target_labels(targets) -> dict[str, np.ndarray]:
  """Integer label arrays [N] per attribute from any accepted target form."""
  if isinstance(targets, Mapping):
    missing = [k for k in shapes_lib.ATTRIBUTES if k not in targets]
    if missing:
      raise ValueError(
        f"targets mapping must have keys {shapes_lib.ATTRIBUTES}, missing {missing}."
      )
    labels = {k: np.asarray(targets[k]).astype(np.int32).reshape(-1) for k in shapes_lib.ATTRIBUTES}
    lengths = {k: len(v) for k, v in labels.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"targets label arrays must have equal lengths, got {lengths}.")
    return labels
  targets = list(targets)
  if not targets:
    raise ValueError("targets must be non-empty.")
  specs = [shapes_lib.parse_caption(t) if isinstance(t, str) else t for t in targets]
  if not all(isinstance(s, shapes_lib.ShapeSpec) for s in specs):
    raise ValueError(
      "targets must be ShapeSpecs, captions or a label mapping,"
      f" got items of type {type(targets[0]).__name__}."
    )
  columns = np.asarray([s.labels for s in specs], np.int32)
  return {k: columns[:, i] for i, k in enumerate(shapes_lib.ATTRIBUTES)}
