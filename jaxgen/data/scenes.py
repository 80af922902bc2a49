"""Procedural scenes with paired views: a built-in image-to-image data set.

A scene is a landscape: sky (a vertical gradient) above grass, sometimes with
a band of water at the horizon, and 2-4 objects drawn over it in order (far
before near, so near objects occlude far ones). Every class has a shape from
`jaxgen.data.shapes.SHAPES` and a colour of its own, so segmenting a picture
by colour recovers its label map (`scene_judge` does exactly that):

  sun: yellow circle, balloon: magenta circle (in the sky);
  tree: green triangle, house: red square, rock: grey circle (on the grass).

Each scene is rendered as

  image   the day picture: per-object brightness, shading and noise, grass
          stripes, water waves, antialiased edges;
  night   the same geometry at night: a darker, blue-shifted, low-contrast
          palette (an affine map of the day colours), the sun drawn as a pale
          moon, a few stars;
  label   class ids per pixel (0 = sky, the background);
  edges   clean 1-px boundaries of the label regions, dark on white paper;
  sketch  hand-drawn strokes along those boundaries: wobbly, of varying width
          and pressure, with gaps and overshooting corners, drawn from a random
          stream of their own, so a sketch is not a function of the image;
  caption e.g. "a green tree and a red house on grass by the water under a
          yellow sun".

Geometry is in fractions of the image side. Scene i of a split depends only
on (seed, split, i): each random stream gives every scene a fixed-size block.
"train" and "test" use disjoint streams (held-out scenes).
"""

from __future__ import annotations

import numpy as np

from jaxgen.data import shapes as shapes_lib

LABEL_NAMES: tuple[str, ...] = ("sky", "grass", "water", "sun", "tree", "house", "rock", "balloon")
NUM_LABELS = len(LABEL_NAMES)
SKY, GRASS, WATER, SUN, TREE, HOUSE, ROCK, BALLOON = range(NUM_LABELS)
# Display palette of colour-coded label maps (distinct from the scenes' own colours).
LABEL_COLOURS = np.asarray(
  [
    (70, 130, 180),  # sky
    (152, 251, 152),  # grass
    (0, 0, 142),  # water
    (250, 170, 30),  # sun
    (107, 142, 35),  # tree
    (220, 20, 60),  # house
    (190, 153, 153),  # rock
    (255, 0, 255),  # balloon
  ],
  np.uint8,
)
SOURCES: tuple[str, ...] = ("label", "sketch", "edges", "day")
TARGETS: tuple[str, ...] = ("image", "night")
STYLES: tuple[str, ...] = ("day", "night")
SPLITS: tuple[str, ...] = ("train", "test")
MAX_OBJECTS = 4

# Object classes: shape (index into shapes.SHAPES) and colour word.
OBJECT_SHAPES = {
  SUN: "circle",
  BALLOON: "circle",
  TREE: "triangle",
  HOUSE: "square",
  ROCK: "circle",
}
OBJECT_COLOUR_NAMES = {SUN: "yellow", BALLOON: "magenta", TREE: "green", HOUSE: "red", ROCK: "grey"}
# Shape per class (index into shapes.SHAPES; -1 for the background regions).
_SHAPE_NAMES = [OBJECT_SHAPES.get(c) for c in range(NUM_LABELS)]
CLASS_SHAPE_IDS = np.asarray([shapes_lib.SHAPES.index(s) if s else -1 for s in _SHAPE_NAMES])
GROUND_CLASSES = (TREE, HOUSE, ROCK)
_GROUND_PROBS = np.cumsum([0.4, 0.35, 0.25])
# Half size range (fraction of the side) per object class.
_HALF_SIZE = {SUN: (0.07, 0.11), BALLOON: (0.06, 0.09), TREE: (0.1, 0.16), HOUSE: (0.08, 0.13)}
_HALF_SIZE[ROCK] = (0.07, 0.11)

# Day colours per class; the sky is a gradient from the first to the second.
DAY_COLOURS = np.asarray(
  [
    (95, 150, 225),  # sky at the top
    (120, 180, 60),  # grass
    (25, 70, 160),  # water
    (250, 215, 50),  # sun
    (20, 100, 40),  # tree
    (195, 45, 40),  # house
    (125, 120, 115),  # rock
    (205, 60, 175),  # balloon
  ],
  np.float32,
)
SKY_HORIZON_COLOUR = np.asarray((165, 205, 240), np.float32)
# Night = day * gain + offset (darker, blue-shifted, lower contrast); the sun
# becomes a pale moon and a few sky pixels stars.
NIGHT_GAIN = np.asarray((0.22, 0.28, 0.42), np.float32)
NIGHT_OFFSET = np.asarray((6, 10, 28), np.float32)
MOON_COLOUR = np.asarray((225, 225, 200), np.float32)
STAR_COLOUR = np.asarray((210, 210, 235), np.float32)
_STAR_FRACTION = 0.012  # Of the visible sky.

_EDGE_SHARPNESS = 6.0  # Slope of object opacity against sub-pixel coverage.
_CHUNK = 256  # Scenes rendered at once (bounds memory at 64x64).
_BLOCK = 64  # Uniforms drawn per scene for its geometry.
_SKETCH_GRID = 6  # Control points per side of the sketch's smooth random fields.
_STREAMS = {"scene": 0, "texture": 1, "sketch": 2}


class SourceImageError(ValueError):
  """A source image (label map, sketch, edge map or day photo) a model cannot take."""


def make_scenes(
  split: str, count: int, resolution: int = 32, seed: int = 0, start: int = 0
) -> dict:
  """Renders scenes [start, start + count) of a split, deterministically.

  Returns:
    image, night uint8 [N, H, W, 3]; label uint8 [N, H, W, 1] (class ids);
    edges, sketch uint8 [N, H, W, 1] (255 paper, dark strokes); caption str
    [N]; scene_id int64 [N] (index in the split's stream); object metadata,
    padded to MAX_OBJECTS in draw order: object_class int32 [N, K] (-1 =
    none), object_shape int32 [N, K] (index into shapes.SHAPES, -1 = none),
    object_centre float32 [N, K, 2] ((x, y) of the bounding-box centre) and
    object_half_size float32 [N, K] (fractions of the side), object_visible
    float32 [N, K] (fraction of its pixels not occluded); num_objects int32 [N].
  """
  if start < 0:
    raise ValueError(f"start must be >= 0, got {start}.")
  return _make(split, start, count, resolution, seed)


def make_unpaired(split: str, count: int, resolution: int = 32, seed: int = 0) -> dict:
  """Day and night pictures for unpaired translation: {"day", "night"} uint8 [N, H, W, 3].

  In "train" the day pictures are scenes [0, count) of the split and the night
  pictures scenes [count, 2 count): no scene appears in both domains. In
  "test" both are the same scenes (so translations can be scored), equal to
  `make_scenes("test", count)`'s image and night.
  """
  if split == "test":
    scenes = _make(split, 0, count, resolution, seed)
    return {"day": scenes["image"], "night": scenes["night"]}
  day = _make(split, 0, count, resolution, seed)
  night = _make(split, count, count, resolution, seed)
  assert not set(day["scene_id"].tolist()) & set(night["scene_id"].tolist())
  return {"day": day["image"], "night": night["night"]}


def _make(split: str, start: int, count: int, resolution: int, seed: int) -> dict:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  if count < 1:
    raise ValueError(f"count must be >= 1, got {count}.")
  if resolution < 16:
    raise ValueError(f"resolution must be >= 16, got {resolution}.")

  def draws(stream, shape):
    """Scenes [start, start + count) of a stream: a fixed block per scene."""
    rng = np.random.default_rng([seed, SPLITS.index(split), _STREAMS[stream]])
    block = int(np.prod(shape))
    for skip in range(0, start * block, 1 << 22):  # Skip earlier scenes.
      rng.random(min(1 << 22, start * block - skip), dtype=np.float32)
    return rng.random((count, *shape), dtype=np.float32)

  params = _scene_parameters(draws("scene", (_BLOCK,)).astype(np.float64))
  texture = draws("texture", (resolution, resolution))
  sketch_uniforms = draws("sketch", (_sketch_block(resolution),))
  parts = []
  for lo in range(0, count, _CHUNK):
    chunk = {k: v[lo : lo + _CHUNK] for k, v in params.items()}
    views = _render(chunk, texture[lo : lo + _CHUNK], resolution)
    views["sketch"] = _sketch(views["label"], chunk, sketch_uniforms[lo : lo + _CHUNK])
    parts.append(views)
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  out["edges"] = np.where(label_edges(out["label"]), 0, 255).astype(np.uint8)[..., None]
  out["label"] = out["label"][..., None]
  out["caption"] = np.asarray([_caption(params, i) for i in range(count)], dtype=str)
  out["scene_id"] = np.arange(start, start + count, dtype=np.int64)
  cls = params["object_class"]
  out["object_class"] = cls.astype(np.int32)
  out["object_shape"] = np.where(cls >= 0, CLASS_SHAPE_IDS[cls], -1).astype(np.int32)
  out["object_centre"] = params["object_centre"].astype(np.float32)
  out["object_half_size"] = params["object_half_size"].astype(np.float32)
  out["num_objects"] = (cls >= 0).sum(axis=1).astype(np.int32)
  return out


def _scene_parameters(u: np.ndarray) -> dict[str, np.ndarray]:
  """Scene geometry from uniforms [N, _BLOCK]; objects sorted in draw order."""
  n = len(u)
  p = {
    "horizon": 0.35 + 0.2 * u[:, 0],
    "has_water": u[:, 1] < 0.45,
    "water_depth": 0.08 + 0.1 * u[:, 2],
    "hill_amplitude": 0.05 * u[:, 3],
    "hill_frequency": 0.5 + 1.5 * u[:, 4],
    "hill_phase": 2 * np.pi * u[:, 5],
    "sky_brightness": 0.94 + 0.12 * u[:, 6],
    "ground_brightness": 0.94 + 0.12 * u[:, 7],
    "stripe_angle": np.pi * u[:, 8],
    "stripe_frequency": 5 + 5 * u[:, 9],
    "stripe_phase": 2 * np.pi * u[:, 10],
    "wave_frequency": 8 + 6 * u[:, 11],
    "wave_phase": 2 * np.pi * u[:, 12],
  }
  shore = p["horizon"] + np.where(p["has_water"], p["water_depth"], 0.0)
  ground_top = shore + p["hill_amplitude"] + 0.04
  num = 2 + np.minimum((3 * u[:, 13]).astype(int), 2)  # 2, 3 or 4 objects.
  has_sky = (num == 4) | (u[:, 14] < 0.7)
  num_ground = num - has_sky

  cls = np.full((n, MAX_OBJECTS), -1)
  centre = np.zeros((n, MAX_OBJECTS, 2))
  half = np.zeros((n, MAX_OBJECTS))
  key = np.full((n, MAX_OBJECTS), np.inf)  # Draw order: sky object, then far to near.
  # Slot 0: the sky object.
  sky_cls = np.where(u[:, 15] < 0.65, SUN, BALLOON)
  sky_half = _lerp(_HALF_SIZE[SUN], u[:, 16]) * (sky_cls == SUN) + _lerp(
    _HALF_SIZE[BALLOON], u[:, 16]
  ) * (sky_cls == BALLOON)
  cls[:, 0] = np.where(has_sky, sky_cls, -1)
  half[:, 0] = sky_half
  centre[:, 0, 0] = sky_half + 0.02 + (1 - 2 * sky_half - 0.04) * u[:, 17]
  top, bottom = sky_half + 0.02, np.maximum(p["horizon"] - sky_half - 0.02, sky_half + 0.02)
  centre[:, 0, 1] = top + (bottom - top) * u[:, 18]
  key[:, 0] = np.where(has_sky, -1.0, np.inf)
  # Slots 1-3: ground objects, one per column of the ground, standing on it.
  for j in range(MAX_OBJECTS - 1):
    v = u[:, 20 + 6 * j : 26 + 6 * j]
    present = j < num_ground
    kind = np.asarray(GROUND_CLASSES)[np.searchsorted(_GROUND_PROBS, v[:, 0])]
    base = ground_top + 0.06 + (0.97 - ground_top - 0.06) * v[:, 1]
    depth = (base - ground_top) / (1 - ground_top)  # Nearer objects are larger.
    size = np.choose(
      np.searchsorted(GROUND_CLASSES, kind), [_lerp(_HALF_SIZE[c], v[:, 2]) for c in GROUND_CLASSES]
    )
    size = size * (0.8 + 0.4 * depth)
    width = 1 / np.maximum(num_ground, 1)
    x = (j + 0.2 + 0.6 * v[:, 3]) * width
    cls[:, j + 1] = np.where(present, kind, -1)
    half[:, j + 1] = size
    centre[:, j + 1, 0] = np.clip(x, size + 0.01, 1 - size - 0.01)
    centre[:, j + 1, 1] = base - size
    key[:, j + 1] = np.where(present, base, np.inf)
  order = np.argsort(key, axis=1, kind="stable")
  rows = np.arange(n)[:, None]
  p["object_class"] = cls[rows, order]
  p["object_centre"] = centre[rows, order]
  p["object_half_size"] = np.where(p["object_class"] >= 0, half[rows, order], 0.0)
  # Per-object look: brightness, vertical shading, texture amplitude.
  p["object_brightness"] = 0.92 + 0.16 * u[:, 40:44]
  p["object_shading"] = 0.12 * (u[:, 44:48] - 0.5)
  return p


def _lerp(bounds: tuple[float, float], t: np.ndarray) -> np.ndarray:
  return bounds[0] + (bounds[1] - bounds[0]) * t


def _render(p: dict, noise: np.ndarray, resolution: int) -> dict[str, np.ndarray]:
  """Day and night pictures, label map and per-object visibility of a chunk."""
  n = len(p["horizon"])
  grid = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
  y, x = grid[None, :, None], grid[None, None, :]
  noise = 2 * noise - 1  # [N, H, W] in [-1, 1].

  def column(name):
    return p[name].astype(np.float32)[:, None, None]

  def slot(name, k):
    return p[name][:, k].astype(np.float32)[:, None, None]

  # Regions: sky above the horizon, water down to the shore, grass below a
  # gentle hill line; antialiased by the sub-pixel distance to each line.
  hill = column("hill_amplitude") * np.sin(
    2 * np.pi * column("hill_frequency") * x + column("hill_phase")
  )
  shore = column("horizon") + np.where(column("has_water") > 0, column("water_depth"), 0)
  sharp = _EDGE_SHARPNESS * resolution
  below_horizon = np.clip((y - column("horizon")) * sharp + 0.5, 0, 1)
  grass_line = shore + hill
  in_grass = np.clip((y - grass_line) * sharp + 0.5, 0, 1)
  water_alpha = np.where(column("has_water") > 0, below_horizon, 0) * np.ones_like(x)
  layers = [(WATER, water_alpha), (GRASS, in_grass * np.ones_like(x))]

  alphas = np.zeros((n, MAX_OBJECTS, resolution, resolution), np.float32)
  cls, centre, half = p["object_class"], p["object_centre"], p["object_half_size"]
  valid = cls >= 0
  if valid.any():
    shape_ids = CLASS_SHAPE_IDS[cls[valid]]
    alphas[valid] = shapes_lib.coverage(shape_ids, centre[valid], half[valid], resolution)
  # Crisp antialiasing: only pixels near half coverage blend, so that few
  # edge pixels take a colour between two classes.
  alphas = np.clip(_EDGE_SHARPNESS * (alphas - 0.5) + 0.5, 0, 1)
  label = np.zeros((n, resolution, resolution), np.uint8)
  for region, alpha in layers:
    label[alpha >= 0.5] = region
  owner = np.full((n, resolution, resolution), -1)
  for k in range(MAX_OBJECTS):
    covered = alphas[:, k] >= 0.5
    label = np.where(covered, np.maximum(cls[:, k], 0)[:, None, None], label).astype(np.uint8)
    owner = np.where(covered, k, owner)
  area = (alphas >= 0.5).sum(axis=(2, 3))
  visible = (owner[:, None] == np.arange(MAX_OBJECTS)[None, :, None, None]).sum(axis=(2, 3))
  visible = np.where(area > 0, visible / np.maximum(area, 1), 0.0)

  object_noise = 5 * noise[..., None]

  def paint(colours):
    """Composites the scene with one colour per class [NUM_LABELS, 3] (float)."""
    sky_t = np.clip(y / column("horizon"), 0, 1)[..., None]
    sky = colours[SKY] + sky_t * (colours[-1] - colours[SKY])
    image = sky * column("sky_brightness")[..., None] + 3 * noise[..., None]
    ground = column("ground_brightness")[..., None]
    waves = 9 * np.sin(
      2 * np.pi * column("wave_frequency") * (y + 0.01 * np.sin(25 * x)) + column("wave_phase")
    )
    water = colours[WATER] * ground + (waves + 4 * noise)[..., None]
    angle = column("stripe_angle")
    stripes = 6 * np.sin(
      2 * np.pi * column("stripe_frequency") * (np.cos(angle) * x + np.sin(angle) * y)
      + column("stripe_phase")
    )
    grass = colours[GRASS] * ground + (stripes + 6 * noise)[..., None]
    for texture, (_, alpha) in zip((water, grass), layers):
      image = image + alpha[..., None] * (texture - image)
    for k in range(MAX_OBJECTS):
      half_k = np.maximum(slot("object_half_size", k), 1e-3)
      offset = np.clip((y - p["object_centre"][:, k, 1:2, None].astype(np.float32)) / half_k, -1, 1)
      gain = (slot("object_brightness", k) * (1 - slot("object_shading", k) * offset))[..., None]
      colour = colours[np.maximum(cls[:, k], 0)][:, None, None, :] * gain + object_noise
      image = image + alphas[:, k, ..., None] * (colour - image)
    return image

  day_colours = np.concatenate([DAY_COLOURS, SKY_HORIZON_COLOUR[None]])
  image = paint(day_colours)
  # Night: the affine night map of the day composite, with the sun's colour
  # replaced by the day colour that the map sends to the moon.
  night_colours = day_colours.copy()
  night_colours[SUN] = (MOON_COLOUR - NIGHT_OFFSET) / NIGHT_GAIN
  night = paint(night_colours) * NIGHT_GAIN + NIGHT_OFFSET
  stars = (noise > 1 - 2 * _STAR_FRACTION) & (label == SKY)
  night = np.where(stars[..., None], STAR_COLOUR, night)
  return {
    "image": _to_uint8(image),
    "night": _to_uint8(night),
    "label": label,
    "object_visible": visible.astype(np.float32),
  }


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return np.round(np.clip(image, 0, 255)).astype(np.uint8)


def label_edges(label: np.ndarray) -> np.ndarray:
  """1-px boundaries of label regions: bool [..., H, W] of ids [..., H, W] (or [..., H, W, 1]).

  A pixel is on a boundary where its right or lower neighbour has another id.
  """
  label = np.asarray(label)
  if label.ndim >= 3 and label.shape[-1] == 1:
    label = label[..., 0]
  edges = np.zeros(label.shape, bool)
  edges[..., :, :-1] |= label[..., :, :-1] != label[..., :, 1:]
  edges[..., :-1, :] |= label[..., :-1, :] != label[..., 1:, :]
  return edges


# Sketch: uniforms per scene for 4 smooth fields (wobble x, wobble y, width,
# pressure), a finer one for the gaps, and the corner overshoots (edge choice,
# length, keep).
_SKETCH_FIELDS = 4
_OVERSHOOT_DRAWS = 3 * 3  # Per object: 3 corners x (edge choice, length, keep).


def _gap_grid(size: int) -> int:
  """Control points per side of the gap field: gaps of a few pixels."""
  return size // 3


def _sketch_block(size: int) -> int:
  """Uniforms drawn per scene for its sketch."""
  return _SKETCH_FIELDS * _SKETCH_GRID**2 + _gap_grid(size) ** 2 + MAX_OBJECTS * _OVERSHOOT_DRAWS


SKETCH_GAP_FRACTION = 0.25  # About this share of the stroke length is left out.


def draw_sketch(label: np.ndarray, scenes: dict, rng: np.random.Generator) -> np.ndarray:
  """A fresh hand-drawn sketch of scenes: uint8 [N, H, W, 1], 255 paper.

  Args:
    label: uint8 [N, H, W] or [N, H, W, 1] class ids.
    scenes: object metadata as returned by `make_scenes` (object_class,
      object_centre, object_half_size) for the corner overshoots.
    rng: the sketch's own random stream; two calls give two sketches.
  """
  label = np.asarray(label)
  if label.ndim == 4:
    label = label[..., 0]
  uniforms = rng.random((len(label), _sketch_block(label.shape[1])), dtype=np.float32)
  return _sketch(label, scenes, uniforms)


def _sketch(label: np.ndarray, objects: dict, uniforms: np.ndarray) -> np.ndarray:
  n, size, _ = label.shape
  edges = label_edges(label)
  g, gg = _SKETCH_GRID, _gap_grid(size)
  coarse = uniforms[:, : _SKETCH_FIELDS * g * g].reshape(n, _SKETCH_FIELDS, g, g)
  upsample = _bilinear_matrix(g, size)
  fields = upsample @ coarse @ upsample.T
  gap_uniforms = uniforms[:, _SKETCH_FIELDS * g * g : _SKETCH_FIELDS * g * g + gg * gg]
  upsample = _bilinear_matrix(gg, size)
  gap_field = upsample @ gap_uniforms.reshape(n, gg, gg) @ upsample.T
  # Wobble: strokes follow the boundary displaced by a smooth field (up to
  # about +-0.8 px at 32x32), gentle enough not to break them.
  amplitude = 1.6 * size / 32
  rows = np.arange(size)[None, :, None]
  cols = np.arange(size)[None, None, :]
  sy = np.clip(np.round(rows + amplitude * (fields[:, 0] - 0.5)), 0, size - 1).astype(int)
  sx = np.clip(np.round(cols + amplitude * (fields[:, 1] - 0.5)), 0, size - 1).astype(int)
  strokes = edges[np.arange(n)[:, None, None], sy, sx]
  # Gaps where the hand lifted: the lowest part of a smooth field.
  threshold = np.quantile(gap_field, SKETCH_GAP_FRACTION, axis=(1, 2), keepdims=True)
  strokes &= gap_field > threshold
  strokes |= _overshoots(objects, uniforms[:, _SKETCH_FIELDS * g * g + gg * gg :], size)
  # Heavier pressure draws a second pixel beside the stroke.
  thick = strokes & (fields[:, 2] > 0.6)
  strokes[:, :, 1:] |= thick[:, :, :-1]
  darkness = 10 + 90 * fields[:, 3]
  return np.where(strokes, darkness, 255).round().astype(np.uint8)[..., None]


def _bilinear_matrix(coarse: int, fine: int) -> np.ndarray:
  """[fine, coarse] weights of linear interpolation between cell centres."""
  position = np.clip((np.arange(fine) + 0.5) * coarse / fine - 0.5, 0, coarse - 1)
  low = np.minimum(np.floor(position).astype(int), coarse - 2)
  weight = (position - low).astype(np.float32)
  matrix = np.zeros((fine, coarse), np.float32)
  matrix[np.arange(fine), low] = 1 - weight
  matrix[np.arange(fine), low + 1] = weight
  return matrix


def _overshoots(objects: dict, uniforms: np.ndarray, size: int) -> np.ndarray:
  """Short strokes running past the corners of squares and triangles."""
  n = len(uniforms)
  out = np.zeros((n, size, size), bool)
  cls = objects["object_class"]
  draws = uniforms.reshape(n, MAX_OBJECTS, 3, 3)
  centre = objects["object_centre"] * size
  half = objects["object_half_size"][..., None] * size
  shape = np.where(cls >= 0, CLASS_SHAPE_IDS[np.maximum(cls, 0)], -1)
  square, triangle = shapes_lib.SHAPES.index("square"), shapes_lib.SHAPES.index("triangle")
  # Corners (unit half size, y down) and the two ways a stroke runs past them:
  # straight on along either edge that meets there.
  corners = {
    square: (((-1, -1), (-1, 0), (0, -1)), ((1, -1), (1, 0), (0, -1)), ((-1, 1), (-1, 0), (0, 1))),
    triangle: (((0, -1), (1, -2), (-1, -2)), ((-1, 1), (-1, 0), (-1, 2)), ((1, 1), (1, 0), (1, 2))),
  }
  starts, ends, scene = [], [], []
  for kind, spec in corners.items():
    for i, (corner, way_a, way_b) in enumerate(spec):
      pick, length, keep = draws[..., i, 0], draws[..., i, 1], draws[..., i, 2]
      chosen = (shape == kind) & (keep < 0.5)
      direction = np.where(pick[..., None] < 0.5, [way_a], [way_b]).astype(np.float64)
      norm = np.linalg.norm(direction, axis=-1, keepdims=True)
      point = centre + half * np.asarray(corner, np.float32)
      reach = (1.0 + 2.0 * length[..., None]) * size / 32
      starts.append(point[chosen])
      ends.append((point + direction / norm * reach)[chosen])
      scene.append(np.nonzero(chosen)[0])
  starts, ends, scene = (np.concatenate(v) for v in (starts, ends, scene))
  t = np.linspace(0, 1, 2 * int(np.ceil(3 * size / 32)) + 2)[None, :, None]
  points = starts[:, None] + t * (ends - starts)[:, None]
  px = np.floor(points[..., 0]).astype(int)
  py = np.floor(points[..., 1]).astype(int)
  inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
  index = np.broadcast_to(scene[:, None], px.shape)
  out[index[inside], py[inside], px[inside]] = True
  return out


_NUMBERS = ("a", "two", "three")


def _caption(p: dict, i: int) -> str:
  """E.g. "two green trees and a red house on grass by the water under a yellow sun"."""
  cls = [int(c) for c in p["object_class"][i] if c >= 0]
  ground = []
  for c in GROUND_CLASSES:
    count = cls.count(c)
    if count:
      plural = "s" if count > 1 else ""
      ground.append(f"{_NUMBERS[count - 1]} {OBJECT_COLOUR_NAMES[c]} {LABEL_NAMES[c]}{plural}")
  words = ground[0] if len(ground) == 1 else ", ".join(ground[:-1]) + " and " + ground[-1]
  words += " on grass"
  if p["has_water"][i]:
    words += " by the water"
  sky = [c for c in cls if c not in GROUND_CLASSES]
  if sky:
    words += f" under a {OBJECT_COLOUR_NAMES[sky[0]]} {LABEL_NAMES[sky[0]]}"
  return words


def labels_to_rgb(label: np.ndarray) -> np.ndarray:
  """Colour-coded label maps: ids [..., H, W] or [..., H, W, 1] -> uint8 [..., H, W, 3]."""
  label = np.asarray(label)
  if label.ndim >= 3 and label.shape[-1] == 1:
    label = label[..., 0]
  if label.size and (label.min() < 0 or label.max() >= NUM_LABELS):
    raise SourceImageError(
      f"label ids must be in [0, {NUM_LABELS}) ({', '.join(LABEL_NAMES)}), "
      f"got values in [{label.min()}, {label.max()}]."
    )
  return LABEL_COLOURS[label.astype(np.int64)]


def rgb_to_labels(rgb: np.ndarray) -> np.ndarray:
  """Inverse of `labels_to_rgb`: uint8 [..., 3] -> uint8 ids [...]; unknown colours raise."""
  rgb = np.asarray(rgb).astype(np.int64)
  codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
  palette = LABEL_COLOURS.astype(np.int64)
  palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
  match = codes[..., None] == palette_codes
  known = match.any(axis=-1)
  if not known.all():
    unknown = sorted({tuple(int(v) for v in c) for c in rgb[~known][:1000]})[:5]
    raise SourceImageError(
      f"label colours must come from LABEL_COLOURS ({NUM_LABELS} classes: "
      f"{', '.join(LABEL_NAMES)}); found {int((~known).sum())} pixels of other colours, "
      f"e.g. {unknown}."
    )
  return np.argmax(match, axis=-1).astype(np.uint8)


def check_source(kind: str, image: np.ndarray, resolution: int) -> np.ndarray:
  """Checks one source image for a model: returns uint8 [H, W, C].

  label: ids [H, W] / [H, W, 1] or a colour-coded [H, W, 3] map -> ids
  [H, W, 1]; sketch, edges: grey [H, W] / [H, W, 1] or RGB (made grey) ->
  [H, W, 1], dark strokes on white paper; day: RGB [H, W, 3].

  Raises:
    SourceImageError: unknown kind, wrong size, channels or dtype, label ids
      or colours outside the palette, a sketch or edge map without strokes
      (all white) or with dark paper.
  """
  if kind not in SOURCES:
    raise SourceImageError(f"source kind must be one of {SOURCES}, got {kind!r}.")
  image = np.asarray(image)
  if image.dtype == bool or not np.issubdtype(image.dtype, np.integer):
    raise SourceImageError(f"{kind} image must be uint8, got dtype {image.dtype}.")
  if image.size and (image.min() < 0 or image.max() > 255):
    raise SourceImageError(
      f"{kind} image values must be in [0, 255], got [{image.min()}, {image.max()}]."
    )
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[:2] != (resolution, resolution):
    raise SourceImageError(
      f"{kind} image must be {resolution}x{resolution} (this model's data.resolution), "
      f"got shape {image.shape}."
    )
  channels = image.shape[-1]
  allowed = {"label": (1, 3), "sketch": (1, 3), "edges": (1, 3), "day": (3,)}[kind]
  if channels not in allowed:
    raise SourceImageError(
      f"{kind} image must have {' or '.join(map(str, allowed))} channels, got {channels} "
      f"(shape {image.shape})."
    )
  image = image.astype(np.uint8)
  if kind == "day":
    return image
  if kind == "label":
    if channels == 3:
      return rgb_to_labels(image)[..., None]
    if image.max() >= NUM_LABELS:
      bad = sorted(set(np.unique(image[image >= NUM_LABELS]).tolist()))[:5]
      raise SourceImageError(
        f"label ids must be in [0, {NUM_LABELS}) ({', '.join(LABEL_NAMES)}), got ids {bad}."
      )
    return image
  if channels == 3:
    weights = np.asarray([0.299, 0.587, 0.114])
    image = np.round(image @ weights).astype(np.uint8)[..., None]
  dark = image < 128
  if not dark.any():
    raise SourceImageError(
      f"{kind} image is all white: expected dark strokes (< 128) on white paper (255)."
    )
  if dark.mean() > 0.5:
    raise SourceImageError(
      f"{kind} image is mostly dark ({dark.mean():.0%} of pixels < 128): expected dark "
      "strokes on white paper; invert it."
    )
  return image
