"""Analytic judge for the procedural scenes: reads labels, edges and objects off pictures.

Every scene class has a colour of its own in each style (`reference_colours`),
so a picture is segmented by colour, without any learned model:

1. `segment`: each pixel takes the class of the nearest reference colour of
   the style (several along the sky's gradient; the moon and stars at
   night), then a 3x3 majority vote (ties keep the pixel's own class) removes
   specks such as stars and antialiased edge pixels.
2. `label_scores`: pixel accuracy and mean IoU of that segmentation against
   the label maps (IoU pooled over the batch, averaged over the classes that
   occur in the labels or the prediction).
3. `edge_f1`: the output's edges are the boundaries of its segmentation
   (`scenes.label_edges`, the definition the clean edge maps use), not
   intensity gradients: textures (grass stripes, waves, noise) have strong
   gradients that are no boundary of the scene. They are compared with a
   reference edge map or sketch (dark strokes) with a tolerance of
   `tolerance` pixels (Chebyshev distance) both ways.
4. `object_scores`: per object that is at least `min_visible` unoccluded:
   colour is right when the majority class of the segmentation over the
   object's visible pixels is the object's class; shape is right when the
   blob of that class around the object (largest 8-connected component of
   the unsmoothed segmentation within a window of twice its size) is best
   explained by the object's shape, by the captioned-shapes judge's analysis
   by synthesis (`judge.match_shapes`, here with hard templates).

Images are uint8 [N, H, W, 3]; float images need an explicit `value_range`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jaxgen.data import scenes as scenes_lib
from jaxgen.data import shapes as shapes_lib
from jaxgen.data.images import to_uint8

_CHUNK = 256
_STRUCTURE = np.ones((3, 3), bool)  # 8-connectivity.
_OBJECT_KEYS = ("label", "object_class", "object_centre", "object_half_size", "object_visible")
# Area of each shape of shapes.SHAPES (circle, square, triangle) in units of
# its squared half size, and its centroid's offset below the box centre.
_UNIT_AREAS = np.asarray([np.pi, 4.0, 2.0])
_CENTROID_OFFSETS = np.asarray([0.0, 0.0, 1 / 3])
# An object counts for `object_scores` when this share of it is visible.
MIN_VISIBLE = 0.8


def reference_colours(style: str) -> tuple[np.ndarray, np.ndarray]:
  """Reference colours of a style and their classes: float32 [P, 3], int [P].

  Three colours along the sky's gradient and one per other class; at night
  the night map of those, the moon for the sun and the stars for the sky.
  """
  if style not in scenes_lib.STYLES:
    raise ValueError(f"style must be one of {scenes_lib.STYLES}, got {style!r}.")
  day, sky, horizon = scenes_lib.DAY_COLOURS, scenes_lib.SKY, scenes_lib.SKY_HORIZON_COLOUR
  gradient = [day[sky] + t * (horizon - day[sky]) for t in (0, 0.5, 1)]
  colours = np.concatenate([np.stack(gradient), np.delete(day, sky, axis=0)])
  classes = np.asarray([sky] * 3 + [c for c in range(scenes_lib.NUM_LABELS) if c != sky])
  if style == "night":
    colours = colours * scenes_lib.NIGHT_GAIN + scenes_lib.NIGHT_OFFSET
    colours[classes == scenes_lib.SUN] = scenes_lib.MOON_COLOUR
    colours = np.concatenate([colours, scenes_lib.STAR_COLOUR[None]])
    classes = np.concatenate([classes, [sky]])
  return colours.astype(np.float32), classes


def segment(
  images: np.ndarray,
  style: str = "day",
  value_range: tuple[float, float] | None = None,
  smooth: bool = True,
) -> np.ndarray:
  """Class ids uint8 [N, H, W] of pictures [N, H, W, 3] by their colours in `style`.

  `smooth=False` skips the majority vote (which rounds off small corners).
  """
  images = _as_uint8(images, value_range)
  colours, classes = reference_colours(style)
  out = np.empty(images.shape[:3], np.uint8)
  for lo in range(0, len(images), _CHUNK):
    pixels = images[lo : lo + _CHUNK].astype(np.float32)
    # Squared distance to each reference colour, less the pixel's own norm.
    distance = (colours**2).sum(axis=-1) - 2 * pixels @ colours.T
    nearest = classes[np.argmin(distance, axis=-1)].astype(np.uint8)
    out[lo : lo + _CHUNK] = _majority(nearest) if smooth else nearest
  return out


def _majority(ids: np.ndarray) -> np.ndarray:
  """3x3 majority vote of class ids [N, H, W]; ties keep the centre's class."""
  padded = np.pad(ids, ((0, 0), (1, 1), (1, 1)), mode="edge")
  size_y, size_x = ids.shape[1:]
  best = np.zeros(ids.shape, np.float32)
  out = ids.copy()
  for c in range(scenes_lib.NUM_LABELS):
    is_c = padded == c
    votes = sum(
      is_c[:, dy : dy + size_y, dx : dx + size_x].astype(np.float32)
      for dy in range(3)
      for dx in range(3)
    )
    votes += 0.5 * (ids == c)
    out = np.where(votes > best, c, out).astype(np.uint8)
    best = np.maximum(votes, best)
  return out


def label_scores(
  images: np.ndarray,
  labels: np.ndarray,
  style: str = "day",
  value_range: tuple[float, float] | None = None,
) -> dict[str, float]:
  """{"pixel_accuracy", "miou"} of the pictures' segmentation against label maps [N, H, W(, 1)]."""
  predicted = segment(images, style, value_range)
  labels = _ids(labels, predicted.shape, "labels")
  k = scenes_lib.NUM_LABELS
  confusion = np.bincount(
    labels.astype(np.int64).ravel() * k + predicted.ravel(), minlength=k * k
  ).reshape(k, k)
  intersection = np.diag(confusion)
  union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
  present = union > 0
  return {
    "pixel_accuracy": float(intersection.sum() / confusion.sum()),
    "miou": float(np.mean(intersection[present] / union[present])),
  }


def edge_scores(
  images: np.ndarray,
  edges: np.ndarray,
  style: str = "day",
  tolerance: int = 1,
  value_range: tuple[float, float] | None = None,
) -> dict[str, float]:
  """Mean per-image {"precision", "recall", "f1"} of the pictures' segment boundaries.

  Args:
    images: pictures [N, H, W, 3].
    edges: reference edge maps or sketches uint8 [N, H, W(, 1)], dark (< 128)
      strokes on white paper.
    style: the pictures' style, for `segment`.
    tolerance: pixels (Chebyshev) a stroke may be off and still match.
  """
  predicted = scenes_lib.label_edges(segment(images, style, value_range))
  edges = np.asarray(edges)
  if edges.ndim == 4 and edges.shape[-1] == 1:
    edges = edges[..., 0]
  if edges.shape != predicted.shape:
    raise ValueError(
      f"edges must be [N, H, W] or [N, H, W, 1] matching images {predicted.shape}, "
      f"got {edges.shape}."
    )
  reference = edges < 128
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
  window = np.ones((1, 2 * tolerance + 1, 2 * tolerance + 1), bool)
  near_reference = ndimage.binary_dilation(reference, window)
  near_predicted = ndimage.binary_dilation(predicted, window)
  matched_predicted = (predicted & near_reference).sum(axis=(1, 2))
  matched_reference = (reference & near_predicted).sum(axis=(1, 2))
  precision = matched_predicted / np.maximum(predicted.sum(axis=(1, 2)), 1)
  recall = matched_reference / np.maximum(reference.sum(axis=(1, 2)), 1)
  f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
  return {
    "precision": float(precision.mean()),
    "recall": float(recall.mean()),
    "f1": float(f1.mean()),
  }


def edge_f1(
  images: np.ndarray,
  edges: np.ndarray,
  tolerance: int = 1,
  style: str = "day",
  value_range: tuple[float, float] | None = None,
) -> float:
  """Mean per-image F1 of the pictures' segment boundaries against edge maps; see `edge_scores`."""
  return edge_scores(images, edges, style, tolerance, value_range)["f1"]


def object_scores(
  images: np.ndarray,
  scenes: dict,
  style: str = "day",
  value_range: tuple[float, float] | None = None,
  min_visible: float = MIN_VISIBLE,
) -> dict[str, float]:
  """{"colour_accuracy", "shape_accuracy", "num_objects"} over the scenes' visible objects.

  Args:
    images: pictures [N, H, W, 3] of the scenes.
    scenes: `scenes.make_scenes` output (label, object_class, object_centre,
      object_half_size, object_visible) for the same N scenes.
    min_visible: objects less visible than this (occluded) are not scored.
  """
  images = _as_uint8(images, value_range)
  missing = [k for k in _OBJECT_KEYS if k not in scenes]
  if missing:
    raise ValueError(f"scenes must hold make_scenes' object metadata, missing {missing}.")
  smoothed = segment(images, style)
  raw = segment(images, style, smooth=False)
  n, size, _ = raw.shape
  labels = _ids(scenes["label"], raw.shape, "scenes['label']")
  cls = np.asarray(scenes["object_class"])
  if cls.shape[0] != n:
    raise ValueError(f"scenes hold {cls.shape[0]} scenes for {n} images.")
  centre = np.asarray(scenes["object_centre"]) * size
  half = np.asarray(scenes["object_half_size"]) * size
  counted = (cls >= 0) & (np.asarray(scenes["object_visible"]) >= min_visible)
  colour_right, blobs, expected = [], [], []
  for i, k in zip(*np.nonzero(counted)):
    c = int(cls[i, k])
    # Colour: the majority class over the object's visible pixels.
    own = _box(centre[i, k], half[i, k], size) & (labels[i] == c)
    votes = np.bincount(smoothed[i][own], minlength=scenes_lib.NUM_LABELS)
    colour_right.append(bool(own.any()) and int(np.argmax(votes)) == c)
    # Shape: the largest blob of the object's class near where it should be.
    mask = _box(centre[i, k], 2 * half[i, k], size) & (raw[i] == c)
    components, count = ndimage.label(mask, structure=_STRUCTURE)
    if count:
      areas = np.bincount(components.ravel())[1:]
      blobs.append(components == np.argmax(areas) + 1)
    else:
      blobs.append(np.zeros((size, size), bool))
    expected.append(scenes_lib.CLASS_SHAPE_IDS[c])
  shape_right = [
    match_shapes(np.stack(blobs[lo : lo + _CHUNK])) == np.asarray(expected[lo : lo + _CHUNK])
    for lo in range(0, len(blobs), _CHUNK)
  ]
  total = max(len(colour_right), 1)
  return {
    "colour_accuracy": float(np.sum(colour_right) / total),
    "shape_accuracy": float(np.sum([r.sum() for r in shape_right]) / total),
    "num_objects": len(colour_right),
  }


def match_shapes(blobs: np.ndarray) -> np.ndarray:
  """Index into shapes.SHAPES of the template that best explains each blob, -1 when empty.

  Analysis by synthesis as in `judge.match_shapes`, for hard blobs: for each
  shape the template with the blob's area and centroid is rendered and
  thresholded at half coverage (as the scenes' label maps are); the smallest
  L1 distance to the blob wins.

  Args:
    blobs: bool [M, S, S] masks.
  """
  m, size, _ = blobs.shape
  area = blobs.sum(axis=(1, 2)).astype(np.float64)
  grid = np.arange(size) + 0.5
  safe = np.maximum(area, 1)
  centroid = np.stack(
    [blobs.sum(axis=1) @ grid / safe / size, blobs.sum(axis=2) @ grid / safe / size], axis=-1
  )
  num_shapes = len(_UNIT_AREAS)
  half = np.sqrt(safe[:, None] / size**2 / _UNIT_AREAS)  # [M, shapes]
  centres = np.repeat(centroid[:, None, :], num_shapes, axis=1)
  centres[..., 1] -= _CENTROID_OFFSETS * half
  templates = shapes_lib.coverage(
    np.tile(np.arange(num_shapes), m), centres.reshape(-1, 2), half.reshape(-1), size
  ).reshape(m, num_shapes, size, size)
  errors = np.abs((templates >= 0.5) ^ blobs[:, None]).sum(axis=(2, 3))
  return np.where(area > 0, np.argmin(errors, axis=1), -1)


def _box(centre: np.ndarray, half: float, size: int) -> np.ndarray:
  """bool [size, size]: the pixels of the square of half side `half` around (x, y) `centre`."""
  x0, y0 = np.floor(centre - half).astype(int).clip(0, size)
  x1, y1 = np.ceil(centre + half).astype(int).clip(0, size)
  box = np.zeros((size, size), bool)
  box[y0:y1, x0:x1] = True
  return box


def _ids(labels: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim == 4 and labels.shape[-1] == 1:
    labels = labels[..., 0]
  if labels.shape != shape:
    raise ValueError(
      f"{name} must be [N, H, W] or [N, H, W, 1] matching {shape}, got {labels.shape}."
    )
  return labels


def _as_uint8(images: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be RGB [N, H, W, 3], got shape {images.shape}.")
  if images.dtype == np.uint8:
    if value_range is not None:
      raise ValueError(f"value_range must be None for uint8 images, got {value_range}.")
    return images
  if value_range is None:
    raise ValueError(
      f"images of dtype {images.dtype} need value_range, e.g. (-1, 1); only uint8 implies (0, 255)."
    )
  return to_uint8(images, value_range)
