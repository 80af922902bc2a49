"""Captioned shapes: a built-in, deterministic text-to-image dataset.

Each image shows one shape (circle, square or triangle) of one colour from a
palette of six hues spaced 60 degrees apart, in one of two sizes, in one cell
of a 3x3 grid, on a plain dark background. Its caption names all four
attributes, e.g. "a small red circle in the top left". Everything is rendered
procedurally with numpy (supersampled, box-filtered antialiasing), so the data
set needs no download and is bit-identical on every machine.

Geometry is expressed in fractions of the image side, so any resolution works.
Every shape is centred on its bounding box, whose side is ``2 * half_size``;
the triangle points up, with its base as wide as it is tall. The centre is
jittered a little inside its grid cell and the size a little around its
nominal value, deterministically from the seed.

The ``test`` split holds out a fixed ~10% of the (shape, colour, size,
position) combinations, so it measures compositional generalisation; every
single attribute value still appears in ``train``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Saturated hues 60 degrees apart: equally far from each other and from the
# dark background (Chebyshev distance 214 for every colour).
PALETTE: Mapping[str, tuple[int, int, int]] = {
  "red": (230, 40, 40),
  "yellow": (230, 230, 40),
  "green": (40, 230, 40),
  "cyan": (40, 230, 230),
  "blue": (40, 40, 230),
  "magenta": (230, 40, 230),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
  "top left",
  "top",
  "top right",
  "left",
  "center",
  "right",
  "bottom left",
  "bottom",
  "bottom right",
)  # Row-major over the 3x3 grid: index = 3 * row + column.
BACKGROUND: tuple[int, int, int] = (16, 16, 16)

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position")
ATTRIBUTE_VALUES: Mapping[str, tuple[str, ...]] = {
  "shape": SHAPES,
  "colour": COLOURS,
  "size": SIZES,
  "position": POSITIONS,
}
SPLITS: tuple[str, ...] = ("train", "test")

# Nominal half side of the bounding box, as a fraction of the image side.
HALF_SIZES: Mapping[str, float] = {"small": 0.09, "large": 0.15}
# Cell centres along each axis; the cell boundaries are at 1/3 and 2/3. The
# outer centres sit inside their cells so that large shapes stay in the image.
CELL_CENTRES: tuple[float, float, float] = (0.2, 0.5, 0.8)
CENTRE_JITTER = 0.02  # Uniform +- offset of the centre, fraction of the side.
SIZE_JITTER = 0.05  # Uniform +- relative change of the half size.
SUPERSAMPLE = 4  # Sub-pixels per pixel along each axis for antialiasing.

_POSITION_PHRASES: Mapping[str, str] = {
  "top left": "in the top left",
  "top": "at the top",
  "top right": "in the top right",
  "left": "on the left",
  "center": "in the center",
  "right": "on the right",
  "bottom left": "in the bottom left",
  "bottom": "at the bottom",
  "bottom right": "in the bottom right",
}
_CAPTION_RE = re.compile(r"^a (?P<size>\w+) (?P<colour>\w+) (?P<shape>\w+) (?P<where>.+)$")
_HELD_OUT_SEED = 20240611  # Fixes the held-out combinations forever.
_HELD_OUT_FRACTION = 0.1
CHANNELS = 3  # Images are RGB.


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
  """The four attributes of one captioned-shapes image."""

  shape: str
  colour: str
  size: str
  position: str

  def __post_init__(self):
    for name in ATTRIBUTES:
      value, allowed = getattr(self, name), ATTRIBUTE_VALUES[name]
      if value not in allowed:
        raise ValueError(f"ShapeSpec.{name} must be one of {allowed}, got {value!r}.")

  @property
  def caption(self) -> str:
    return f"a {self.size} {self.colour} {self.shape} {_POSITION_PHRASES[self.position]}"

  @property
  def labels(self) -> tuple[int, int, int, int]:
    """Integer labels (shape, colour, size, position)."""
    return tuple(ATTRIBUTE_VALUES[name].index(getattr(self, name)) for name in ATTRIBUTES)

  @classmethod
  def from_labels(cls, shape: int, colour: int, size: int, position: int) -> ShapeSpec:
    labels = dict(shape=shape, colour=colour, size=size, position=position)
    values = {}
    for name, label in labels.items():
      allowed = ATTRIBUTE_VALUES[name]
      if not 0 <= int(label) < len(allowed):
        raise ValueError(f"{name} label must be in [0, {len(allowed)}), got {label}.")
      values[name] = allowed[int(label)]
    return cls(**values)


def parse_caption(caption: str) -> ShapeSpec:
  """Inverse of `ShapeSpec.caption`; raises ValueError on other text."""
  if not isinstance(caption, str):
    raise ValueError(f"caption must be a str, got {type(caption).__name__}.")
  match = _CAPTION_RE.match(" ".join(caption.lower().split()))
  where = {phrase: name for name, phrase in _POSITION_PHRASES.items()}
  if match is None or match["where"] not in where:
    raise ValueError(
      f"caption must read 'a <size> <colour> <shape> <position phrase>', got {caption!r}."
    )
  return ShapeSpec(
    shape=match["shape"], colour=match["colour"], size=match["size"], position=where[match["where"]]
  )


def all_combinations() -> list[ShapeSpec]:
  """All 3 * 6 * 2 * 9 = 324 specs in a fixed order."""
  return [ShapeSpec(*values) for values in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS)]


def split_combinations(split: str) -> list[ShapeSpec]:
  """The combinations a split draws from (test: a fixed ~10% held out)."""
  _check_split(split)
  combos = all_combinations()
  order = np.random.default_rng(_HELD_OUT_SEED).permutation(len(combos))
  held_out = set(order[: round(_HELD_OUT_FRACTION * len(combos))].tolist())
  return [c for i, c in enumerate(combos) if (i in held_out) == (split == "test")]


def render(
  labels: Mapping[str, np.ndarray],
  centres: np.ndarray,
  half_sizes: np.ndarray,
  resolution: int = 32,
) -> np.ndarray:
  """Renders shapes to uint8 RGB images.

  Args:
    labels: integer arrays [N] under "shape" and "colour".
    centres: float [N, 2] (x, y) bounding-box centres, fractions of the side.
    half_sizes: float [N] half side of the bounding box, fraction of the side.
    resolution: image side in pixels.

  Returns:
    uint8 [N, resolution, resolution, 3].
  """
  colour_ids = np.asarray(labels["colour"])
  alpha = coverage(labels["shape"], centres, half_sizes, resolution)
  if colour_ids.shape != alpha.shape[:1]:
    raise ValueError(f"labels['colour'] must have shape {alpha.shape[:1]}, got {colour_ids.shape}.")
  palette = np.asarray([PALETTE[c] for c in COLOURS], np.float32)
  colour = palette[colour_ids][:, None, None, :]
  background = np.asarray(BACKGROUND, np.float32)
  image = background + alpha[..., None] * (colour - background)
  return np.round(image).astype(np.uint8)


def coverage(
  shape_ids: np.ndarray, centres: np.ndarray, half_sizes: np.ndarray, resolution: int
) -> np.ndarray:
  """Fraction of each pixel covered by its shape: float32 [N, res, res].

  Arguments as in `render`, with `shape_ids` int [N] indexing SHAPES.
  """
  shape_ids = np.asarray(shape_ids)
  centres = np.asarray(centres, np.float64)
  half_sizes = np.asarray(half_sizes, np.float64)
  n = shape_ids.shape[0] if shape_ids.ndim == 1 else -1
  if centres.shape != (n, 2) or half_sizes.shape != (n,):
    raise ValueError(
      "shape ids must have shape [N], centres [N, 2] and half_sizes [N]; "
      f"got {shape_ids.shape}, {centres.shape}, {half_sizes.shape}."
    )
  if resolution < 8:
    raise ValueError(f"resolution must be >= 8, got {resolution}.")
  if n and not (shape_ids.min() >= 0 and shape_ids.max() < len(SHAPES)):
    raise ValueError(
      f"shape ids must be in [0, {len(SHAPES)}), got [{shape_ids.min()}, {shape_ids.max()}]."
    )
  if not np.all(half_sizes > 0):
    raise ValueError(f"half_sizes must be > 0, got min {half_sizes.min()}.")

  # Coverage is computed only in a fixed-size window around each shape, then
  # pasted into a padded canvas: ~7x less work than the whole image at 32px.
  window = int(np.ceil(2 * half_sizes.max(initial=0.0) * resolution)) + 3
  centre_px = centres * resolution
  origin = np.floor(centre_px - window / 2).astype(np.int64)  # [N, 2] (x, y)
  origin = np.clip(origin, -window, resolution)  # Far-off shapes stay off.
  sub = (np.arange(window * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # Pixel units.
  alpha = np.zeros((n, window, window), np.float32)
  chunk = 4096
  for start in range(0, n, chunk):
    sl = slice(start, start + chunk)
    # Sub-pixel offsets from the shape centre, in units of the half size.
    half_px = (half_sizes[sl] * resolution)[:, None]
    x = (origin[sl, 0, None] + sub - centre_px[sl, 0, None]) / half_px
    y = (origin[sl, 1, None] + sub - centre_px[sl, 1, None]) / half_px
    inside = _inside(
      shape_ids[sl, None, None], x[:, None, :].astype(np.float32), y[:, :, None].astype(np.float32)
    )
    alpha[sl] = inside.reshape(-1, window, SUPERSAMPLE, window, SUPERSAMPLE).mean(axis=(2, 4))

  canvas = np.zeros((n, resolution + 2 * window, resolution + 2 * window), np.float32)
  for i in range(n):  # Cheap: one small slice assignment per image.
    x0, y0 = origin[i] + window
    canvas[i, y0 : y0 + window, x0 : x0 + window] = alpha[i]
  return canvas[:, window:-window, window:-window]


def _inside(shape_ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Whether points (x right, y down; unit = half size) lie inside the shape."""
  in_box = (np.abs(x) <= 1) & (np.abs(y) <= 1)
  circle = x * x + y * y <= 1
  # Apex at (0, -1), base from (-1, 1) to (1, 1).
  triangle = in_box & (2 * np.abs(x) <= y + 1)
  return np.where(shape_ids == 0, circle, np.where(shape_ids == 1, in_box, triangle))


def render_specs(specs: Sequence[ShapeSpec], resolution: int = 32) -> np.ndarray:
  """Renders specs without jitter (centred in the cell, nominal size)."""
  labels = {
    name: np.asarray([s.labels[i] for s in specs], np.int64) for i, name in enumerate(ATTRIBUTES)
  }
  centres = _cell_centres(labels["position"])
  half = np.asarray([HALF_SIZES[s.size] for s in specs], np.float64)
  return render(labels, centres, half, resolution)


def make_split(
  split: str, num_examples: int, resolution: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
  """Generates `num_examples` captioned images of a split, deterministically.

  The split's combinations are used equally often (up to one), in a seeded
  random order; train and test draw from disjoint combinations and disjoint
  random streams.

  Returns:
    image uint8 [N, H, W, 3]; caption str [N]; shape, colour, size, position
    int32 [N] (indices into SHAPES, COLOURS, SIZES, POSITIONS); centre float32
    [N, 2] (x, y) and half_size float32 [N], fractions of the image side.
  """
  _check_split(split)
  if num_examples < 1:
    raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  combos = split_combinations(split)
  reps = -(-num_examples // len(combos))
  order = np.concatenate([rng.permutation(len(combos)) for _ in range(reps)])
  specs = [combos[i] for i in order[:num_examples]]

  labels = {
    name: np.asarray([s.labels[i] for s in specs], np.int32) for i, name in enumerate(ATTRIBUTES)
  }
  centres = _cell_centres(labels["position"]) + rng.uniform(
    -CENTRE_JITTER, CENTRE_JITTER, (num_examples, 2)
  )
  nominal = np.asarray([HALF_SIZES[s] for s in SIZES])[labels["size"]]
  half = nominal * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, num_examples))
  return dict(
    image=render(labels, centres, half, resolution),
    caption=np.asarray([s.caption for s in specs], dtype=str),
    **labels,
    centre=centres.astype(np.float32),
    half_size=half.astype(np.float32),
  )


def caption_vocabulary() -> list[str]:
  """Sorted words of every caption the data set can produce."""
  return sorted({w for c in all_combinations() for w in c.caption.split()})


def _cell_centres(position: np.ndarray) -> np.ndarray:
  """(x, y) centres, fractions of the side, of position indices [N]."""
  cells = np.asarray(CELL_CENTRES)
  return np.stack([cells[position % 3], cells[position // 3]], axis=-1)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")


def check_image_batch(image: np.ndarray, resolution: int) -> None:
  """Named error for a batch of images that is not [B, resolution, resolution, RGB]."""
  expected = (resolution, resolution, CHANNELS)
  if tuple(image.shape[1:]) != expected:
    raise ValueError(
      f"batch['image'] must be [B, {expected[0]}, {expected[1]}, {expected[2]}] "
      f"for this config (data.resolution={resolution}), got {tuple(image.shape)}"
    )
