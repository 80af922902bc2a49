"""Captioned shape videos: a built-in, deterministic text-to-video dataset.

The shapes world of `shapes` set in motion. Each clip shows one or two
objects of the shapes palette and shape set on its dark background, for
`frames` frames (16 by default), and its caption says what they do:

- moving in one of eight directions, slowly or quickly ("a small red circle
  moving left quickly", "a large blue square moving up and right slowly");
- bouncing off one edge of the frame ("a small green triangle bouncing off
  the left edge"): it moves towards the edge, touches it and comes back;
- growing or shrinking in place ("a green square growing");
- changing colour in place ("a small blue triangle turning yellow"): colour A
  holds for the first quarter of the clip, blends linearly into colour B over
  the middle half and holds B for the last quarter;
- two objects, each small and moving quickly in its own direction ("a red
  circle moving left and a blue square moving up"), of different colours and
  never overlapping.

Speeds are distances travelled over the clip (0.2 and 0.55 of the side, i.e.
0.013 and 0.037 of the side a frame at 16 frames; a bounce travels the fast
distance, half each way), so the object stays in frame whatever the clip
length: the start position is derived from direction and speed (the path's
midpoint is drawn where the whole path fits). Geometry is in fractions of the
side, so any resolution works; frames are drawn with `shapes.coverage`
(supersampled antialiasing), one shape per object per frame.

Every clip stores its per-frame ground truth: centre, half size, colour and
shape of every object in every frame. The ``test`` split holds out a fixed
~10% of the (shape, colour, motion) combinations, two of each motion; every
single value still appears in ``train``. A two-object clip of ``train`` uses
only train combinations, one of ``test`` has a held-out combination first.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np

from jaxgen.data import shapes

SPLITS: tuple[str, ...] = shapes.SPLITS
MAX_OBJECTS = 2
DEFAULT_FRAMES = 16
DEFAULT_NUM_VIDEOS: Mapping[str, int] = {"train": 5000, "test": 500}

# Distance travelled over the whole clip, fraction of the side.
SPEEDS: Mapping[str, float] = {"slow": 0.2, "fast": 0.55}
_ADVERBS: Mapping[str, str] = {"slow": "slowly", "fast": "quickly"}
# Unit steps (x right, y down) of the eight directions.
DIRECTIONS: Mapping[str, tuple[float, float]] = {
  "left": (-1.0, 0.0),
  "right": (1.0, 0.0),
  "up": (0.0, -1.0),
  "down": (0.0, 1.0),
  "up and left": (-(0.5**0.5), -(0.5**0.5)),
  "up and right": (0.5**0.5, -(0.5**0.5)),
  "down and left": (-(0.5**0.5), 0.5**0.5),
  "down and right": (0.5**0.5, 0.5**0.5),
}
# The edge a bouncing object touches, and its unit step away from it.
EDGES: Mapping[str, tuple[float, float]] = {
  "left": (1.0, 0.0),
  "right": (-1.0, 0.0),
  "top": (0.0, 1.0),
  "bottom": (0.0, -1.0),
}
BOUNCE_SPEED = "fast"
BOUNCE_TIME = (0.4, 0.6)  # When it touches the edge, fraction of the clip.
# Half size (fraction of the side) at the small end of growing / shrinking.
GROW_HALF_SIZES: tuple[float, float] = (0.08, 0.18)
TWO_OBJECT_FRACTION = 0.2  # Of the clips of a split.
TWO_OBJECT_SIZE = "small"
TWO_OBJECT_SPEED = "fast"
SIZE_JITTER = shapes.SIZE_JITTER  # Uniform +- relative change of the half size.
SPEED_JITTER = 0.1  # Uniform +- relative change of the distance travelled.
_EDGE_MARGIN = 0.01  # Keeps paths this far off the frame edges (but bounces touch).
_SEPARATION = 0.04  # Gap kept between the bounding boxes of two objects.
_HELD_OUT_SEED = 20261207  # Fixes the held-out combinations forever.
_HELD_OUT_FRACTION = 0.1
_RENDER_CHUNK = 64  # Videos rendered at once: bounds coverage memory.
_PLACEMENT_TRIES = 200


def _move_phrase(direction: str, speed: str) -> str:
  return f"moving {direction} {_ADVERBS[speed]}"


MOTIONS: tuple[str, ...] = (
  *(_move_phrase(d, s) for d in DIRECTIONS for s in SPEEDS),
  *(f"bouncing off the {e} edge" for e in EDGES),
  "growing",
  "shrinking",
  *(f"turning {c}" for c in shapes.COLOURS),
)
MOTION_KINDS: tuple[str, ...] = ("move", "bounce", "grow", "shrink", "turn")


class VideoSpecError(ValueError):
  """A clip description no video can be made from."""


class VideoCaptionError(VideoSpecError):
  """Text that is not a caption of this data set."""


@dataclasses.dataclass(frozen=True)
class Motion:
  """What a motion phrase asks for.

  kind: one of MOTION_KINDS. step: unit direction (x right, y down) of a move,
  or of a bounce away from its edge; (0, 0) otherwise. speed: key of SPEEDS
  for moves and bounces, None for motions in place. edge: key of EDGES for
  bounces. end_colour: the colour a turning object ends in.
  """

  kind: str
  step: tuple[float, float] = (0.0, 0.0)
  speed: str | None = None
  edge: str | None = None
  end_colour: str | None = None


def _motion_table() -> dict[str, Motion]:
  table = {}
  for d, s in itertools.product(DIRECTIONS, SPEEDS):
    table[_move_phrase(d, s)] = Motion("move", DIRECTIONS[d], s)
  for e in EDGES:
    table[f"bouncing off the {e} edge"] = Motion("bounce", EDGES[e], BOUNCE_SPEED, edge=e)
  table["growing"] = Motion("grow")
  table["shrinking"] = Motion("shrink")
  for c in shapes.COLOURS:
    table[f"turning {c}"] = Motion("turn", end_colour=c)
  return table


_MOTION_TABLE: Mapping[str, Motion] = _motion_table()
_TWO_OBJECT_MOTIONS: Mapping[str, str] = {  # Caption phrase -> motion.
  f"moving {d}": _move_phrase(d, TWO_OBJECT_SPEED) for d in DIRECTIONS
}


def motion_info(motion: str) -> Motion:
  """The `Motion` of a phrase of MOTIONS."""
  if motion not in _MOTION_TABLE:
    raise VideoSpecError(f"motion must be one of {MOTIONS}, got {motion!r}.")
  return _MOTION_TABLE[motion]


def _has_size(motion: str) -> bool:
  return motion_info(motion).kind not in ("grow", "shrink")


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """One object of a clip: its shape, (start) colour, motion and size.

  size is a key of shapes.SIZES, and None exactly for growing and shrinking
  objects (their size is the motion).
  """

  shape: str
  colour: str
  motion: str
  size: str | None = None

  def __post_init__(self):
    if self.shape not in shapes.SHAPES:
      raise VideoSpecError(f"ObjectSpec.shape must be one of {shapes.SHAPES}, got {self.shape!r}.")
    if self.colour not in shapes.COLOURS:
      raise VideoSpecError(
        f"ObjectSpec.colour must be one of {shapes.COLOURS}, got {self.colour!r}."
      )
    info = motion_info(self.motion)
    if info.kind == "turn" and info.end_colour == self.colour:
      raise VideoSpecError(
        f"ObjectSpec.motion {self.motion!r} must name a colour other than its colour "
        f"{self.colour!r}."
      )
    if _has_size(self.motion) and self.size not in shapes.SIZES:
      raise VideoSpecError(
        f"ObjectSpec.size must be one of {shapes.SIZES} for motion {self.motion!r}, "
        f"got {self.size!r}."
      )
    if not _has_size(self.motion) and self.size is not None:
      raise VideoSpecError(f"ObjectSpec.size must be None for {self.motion!r}, got {self.size!r}.")

  @property
  def info(self) -> Motion:
    return motion_info(self.motion)

  def phrase(self, in_pair: bool = False) -> str:
    """Its part of a caption; in a two-object caption size and speed are implied."""
    if in_pair:
      direction = next(k for k, v in _TWO_OBJECT_MOTIONS.items() if v == self.motion)
      return f"a {self.colour} {self.shape} {direction}"
    size = f"{self.size} " if self.size is not None else ""
    return f"a {size}{self.colour} {self.shape} {self.motion}"


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """What one clip shows: one object, or two small, quickly moving ones."""

  objects: tuple[ObjectSpec, ...]

  def __post_init__(self):
    objects = tuple(self.objects)
    object.__setattr__(self, "objects", objects)
    if not 1 <= len(objects) <= MAX_OBJECTS or not all(isinstance(o, ObjectSpec) for o in objects):
      raise VideoSpecError(
        f"VideoSpec.objects must be 1 to {MAX_OBJECTS} ObjectSpecs, got {objects!r}."
      )
    if len(objects) == 2:
      for o in objects:
        if o.motion not in _TWO_OBJECT_MOTIONS.values() or o.size != TWO_OBJECT_SIZE:
          raise VideoSpecError(
            f"VideoSpec.objects of a two-object clip must be {TWO_OBJECT_SIZE} and move "
            f"{_ADVERBS[TWO_OBJECT_SPEED]}, got {o!r}."
          )
      if objects[0].colour == objects[1].colour:
        raise VideoSpecError(
          f"VideoSpec.objects of a two-object clip must differ in colour, got two "
          f"{objects[0].colour} objects."
        )

  @property
  def caption(self) -> str:
    if len(self.objects) == 1:
      return self.objects[0].phrase()
    return " and ".join(o.phrase(in_pair=True) for o in self.objects)

  @property
  def kind(self) -> str:
    """'two objects', or the motion kind of its single object."""
    return "two objects" if len(self.objects) == 2 else self.objects[0].info.kind


_OBJECT_RE = re.compile(
  r"^a (?:(?P<size>small|large) )?(?P<colour>\w+) (?P<shape>\w+) (?P<motion>.+)$"
)


def parse_video_caption(caption: str) -> VideoSpec:
  """Inverse of `VideoSpec.caption`; raises VideoCaptionError on other text."""
  if not isinstance(caption, str):
    raise VideoCaptionError(f"caption must be a str, got {type(caption).__name__}.")
  text = " ".join(caption.lower().split())
  parts = text.split(" and a ")
  if len(parts) > MAX_OBJECTS:
    raise VideoCaptionError(
      f"caption must describe at most {MAX_OBJECTS} objects, got {caption!r}."
    )
  if len(parts) == 2:
    parts[1] = "a " + parts[1]
  objects = []
  for part in parts:
    match = _OBJECT_RE.match(part)
    if match is None:
      raise VideoCaptionError(
        f"caption must read 'a [size] <colour> <shape> <motion>' per object, got {caption!r}."
      )
    motion, size = match["motion"], match["size"]
    if len(parts) == 2:
      if size is not None or motion not in _TWO_OBJECT_MOTIONS:
        raise VideoCaptionError(
          f"caption of two objects must read 'a <colour> <shape> moving <direction>' for each "
          f"(sizes and speeds implied), got {caption!r}."
        )
      motion, size = _TWO_OBJECT_MOTIONS[motion], TWO_OBJECT_SIZE
    try:
      objects.append(ObjectSpec(match["shape"], match["colour"], motion, size))
    except VideoSpecError as error:
      raise VideoCaptionError(f"caption {caption!r} names no valid clip: {error}") from error
  try:
    return VideoSpec(tuple(objects))
  except VideoSpecError as error:
    raise VideoCaptionError(f"caption {caption!r} names no valid clip: {error}") from error


def motion_combinations() -> list[tuple[str, str, str]]:
  """All (shape, colour, motion) of a single object, in a fixed order (486)."""
  return [
    (s, c, m)
    for s, c, m in itertools.product(shapes.SHAPES, shapes.COLOURS, MOTIONS)
    if _MOTION_TABLE[m].end_colour != c
  ]


def split_combinations(split: str) -> list[tuple[str, str, str]]:
  """The (shape, colour, motion) combinations of a split (test: a fixed ~10%).

  Held out per motion (2 of its 18, or of 15 for a colour change), so that
  every motion is tested, and learnt from 13 or more combinations.
  """
  _check_split(split)
  combos = motion_combinations()
  rng = np.random.default_rng(_HELD_OUT_SEED)
  held_out = set()
  for motion in MOTIONS:
    ids = [i for i, c in enumerate(combos) if c[2] == motion]
    count = round(_HELD_OUT_FRACTION * len(ids))
    held_out.update(rng.permutation(ids)[:count].tolist())
  return [c for i, c in enumerate(combos) if (i in held_out) == (split == "test")]


def turn_weights(frames: int) -> np.ndarray:
  """Weight of the end colour in each frame of a turning object: float [frames]."""
  phase = np.arange(frames) / max(frames - 1, 1)
  return np.clip((phase - 0.25) / 0.5, 0.0, 1.0)


def make_video_split(
  split: str,
  num_videos: int | None = None,
  resolution: int = 32,
  frames: int = DEFAULT_FRAMES,
  seed: int = 0,
) -> dict[str, np.ndarray]:
  """Generates the captioned clips of a split, deterministically.

  A fraction TWO_OBJECT_FRACTION of the clips (at seeded random places) show
  two objects; the others use the split's combinations equally often (up to
  one) in a seeded random order, with a random size where the motion has one.

  Args:
    split: "train" or "test".
    num_videos: clips to make; DEFAULT_NUM_VIDEOS[split] when None.
    resolution: frame side in pixels (>= 8).
    frames: frames per clip (>= 4).
    seed: the same seed gives bit-identical clips.

  Returns:
    see `render_videos`, plus "caption" str [N].
  """
  _check_split(split)
  num_videos = DEFAULT_NUM_VIDEOS[split] if num_videos is None else num_videos
  if num_videos < 1:
    raise VideoSpecError(f"num_videos must be >= 1, got {num_videos}.")
  rng = np.random.default_rng([seed, SPLITS.index(split)])
  specs = _split_specs(split, num_videos, rng)
  data = render_videos(specs, resolution, frames, rng)
  return dict(caption=np.asarray([s.caption for s in specs], dtype=str), **data)


def _split_specs(split: str, num_videos: int, rng: np.random.Generator) -> list[VideoSpec]:
  combos = split_combinations(split)
  num_pairs = round(TWO_OBJECT_FRACTION * num_videos)
  is_pair = np.zeros(num_videos, bool)
  is_pair[rng.permutation(num_videos)[:num_pairs]] = True

  num_single = num_videos - num_pairs
  reps = -(-num_single // len(combos))
  order = np.concatenate([rng.permutation(len(combos)) for _ in range(reps)])[:num_single]
  size_draws = rng.integers(len(shapes.SIZES), size=num_single)
  singles = []
  for i, size_id in zip(order, size_draws, strict=True):
    shape, colour, motion = combos[i]
    size = shapes.SIZES[size_id] if _has_size(motion) else None
    singles.append(VideoSpec((ObjectSpec(shape, colour, motion, size),)))

  pairs = _pair_specs(split, num_pairs, rng)
  single_iter, pair_iter = iter(singles), iter(pairs)
  return [next(pair_iter) if p else next(single_iter) for p in is_pair]


def _pair_specs(split: str, count: int, rng: np.random.Generator) -> list[VideoSpec]:
  """Two-object clips: train uses train combinations only; test starts with a held-out one."""
  moving = set(_TWO_OBJECT_MOTIONS.values())
  own = [c for c in split_combinations(split) if c[2] in moving]
  others = own if split == "train" else [c for c in motion_combinations() if c[2] in moving]
  specs = []
  for _ in range(count):
    first = own[rng.integers(len(own))]
    second = first
    while second[1] == first[1]:  # Colours must differ; ~1/6 of draws retry.
      second = others[rng.integers(len(others))]
    specs.append(VideoSpec(tuple(ObjectSpec(*c, TWO_OBJECT_SIZE) for c in (first, second))))
  return specs


def render_video(
  spec: VideoSpec | str, resolution: int = 32, frames: int = DEFAULT_FRAMES, seed: int = 0
) -> np.ndarray:
  """One clip of a spec or caption, placed and jittered from `seed`: uint8 [T, S, S, 3]."""
  if isinstance(spec, str):
    spec = parse_video_caption(spec)
  return render_videos([spec], resolution, frames, np.random.default_rng(seed))["video"][0]


def render_videos(
  specs: Sequence[VideoSpec], resolution: int, frames: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
  """Renders clips of specs, with positions and jitter drawn from `rng`.

  Object slots past a clip's objects are padding: -1 in integer arrays, NaN
  in float ones.

  Returns:
    video uint8 [N, T, S, S, 3]; num_objects int32 [N]; per object slot
    shape, colour (the start colour), motion (index into MOTIONS) and size
    (index into shapes.SIZES, -1 for growing and shrinking) int32 [N, 2];
    per frame and slot centre float32 [N, T, 2, 2] ((x, y) of the bounding
    box centre, fractions of the side), half_size float32 [N, T, 2],
    frame_colour int32 [N, T, 2] (the nearer palette colour of a turning
    object's blend) and frame_shape int32 [N, T, 2].
  """
  if resolution < 8:
    raise VideoSpecError(f"resolution must be >= 8, got {resolution}.")
  if frames < 4:
    raise VideoSpecError(f"frames must be >= 4, got {frames}.")
  if not specs or not all(isinstance(s, VideoSpec) for s in specs):
    raise VideoSpecError("specs must be a non-empty sequence of VideoSpecs.")
  labels = _object_labels(specs)
  tracks = _tracks(labels, frames, rng)
  valid = labels["shape"] >= 0  # [N, K]
  t_valid = np.broadcast_to(valid[:, None], tracks["half_size"].shape)
  return dict(
    video=_render(labels, tracks, valid, resolution),
    num_objects=valid.sum(axis=1).astype(np.int32),
    **{k: labels[k] for k in ("shape", "colour", "motion", "size")},
    centre=np.where(t_valid[..., None], tracks["centre"], np.nan).astype(np.float32),
    half_size=np.where(t_valid, tracks["half_size"], np.nan).astype(np.float32),
    frame_colour=np.where(
      t_valid,
      np.where(tracks["blend"] < 0.5, labels["colour"][:, None], labels["end_colour"][:, None]),
      -1,
    ).astype(np.int32),
    frame_shape=np.where(t_valid, labels["shape"][:, None], -1).astype(np.int32),
  )


def _object_labels(specs: Sequence[VideoSpec]) -> dict[str, np.ndarray]:
  """Integer labels [N, K] of each object slot (-1: no object)."""
  n = len(specs)
  out = {
    k: np.full((n, MAX_OBJECTS), -1, np.int32)
    for k in ("shape", "colour", "end_colour", "motion", "size")
  }
  for i, spec in enumerate(specs):
    for k, o in enumerate(spec.objects):
      info = o.info
      out["shape"][i, k] = shapes.SHAPES.index(o.shape)
      out["colour"][i, k] = shapes.COLOURS.index(o.colour)
      out["end_colour"][i, k] = shapes.COLOURS.index(info.end_colour or o.colour)
      out["motion"][i, k] = MOTIONS.index(o.motion)
      out["size"][i, k] = shapes.SIZES.index(o.size) if o.size is not None else -1
  return out


def _tracks(labels: Mapping[str, np.ndarray], frames: int, rng) -> dict[str, np.ndarray]:
  """Per-frame centre [N, T, K, 2], half size and end-colour blend [N, T, K] of every slot."""
  n, k = labels["shape"].shape
  # Padding slots get some motion in place; they are never drawn.
  infos = [
    [_MOTION_TABLE[MOTIONS[m]] if m >= 0 else Motion("grow") for m in row]
    for row in labels["motion"]
  ]
  kind = np.asarray([[i.kind for i in row] for row in infos])
  step = np.asarray([[i.step for i in row] for row in infos])  # [N, K, 2]
  speed = np.asarray([[SPEEDS[i.speed] if i.speed else 0.0 for i in row] for row in infos])
  small, large = GROW_HALF_SIZES
  fixed = np.asarray([shapes.HALF_SIZES[s] for s in shapes.SIZES])[labels["size"]]
  grow, shrink = kind == "grow", kind == "shrink"
  first_half = np.select([grow, shrink], [small, large], fixed)
  last_half = np.select([grow, shrink], [large, small], fixed)

  u = rng.uniform(size=(n, k, 5))  # Size, speed, x, y, bounce time.
  scale = 1 + SIZE_JITTER * (2 * u[..., 0] - 1)
  first_half, last_half = first_half * scale, last_half * scale
  max_half = np.maximum(first_half, last_half)
  travel = speed * (1 + SPEED_JITTER * (2 * u[..., 1] - 1))
  velocity = step * (travel / (frames - 1))[..., None]  # Per frame.
  bounce = kind == "bounce"
  # Moves are centred on their path's midpoint; bounces on their edge time.
  t_ref = np.where(
    bounce, (frames - 1) * (BOUNCE_TIME[0] + np.diff(BOUNCE_TIME)[0] * u[..., 4]), (frames - 1) / 2
  )
  # Bounces reach travel / 2 from the edge: they only need room on one side.
  reach = np.abs(step) * (travel / 2)[..., None]
  low = max_half[..., None] + reach + _EDGE_MARGIN
  low = np.where(bounce[..., None], max_half[..., None] + _EDGE_MARGIN, low)
  edge_pos = np.where(np.asarray(step) > 0, max_half[..., None], 1 - max_half[..., None])

  def anchors(uv):
    mid = low + (1 - 2 * low) * uv
    return np.where(bounce[..., None] & (step != 0), edge_pos, mid)

  anchor = anchors(u[..., 2:4])
  t = np.arange(frames, dtype=np.float64)[None, :, None]  # [1, T, 1]
  offset = np.where(bounce[:, None], np.abs(t - t_ref[:, None]), t - t_ref[:, None])

  def centres(anchor):
    return anchor[:, None] + velocity[:, None] * offset[..., None]

  centre = centres(anchor)
  # Two-object clips: redraw the placement of clips whose objects come too close.
  pair = labels["shape"][:, 1] >= 0
  for _ in range(_PLACEMENT_TRIES):
    gap = np.abs(centre[:, :, 0] - centre[:, :, 1]).max(axis=-1)  # Chebyshev, [N, T]
    clash = pair & np.any(gap < (max_half[:, 0] + max_half[:, 1] + _SEPARATION)[:, None], axis=1)
    if not clash.any():
      break
    anchor[clash] = anchors(rng.uniform(size=(n, k, 2)))[clash]
    centre = centres(anchor)
  else:
    raise RuntimeError("could not place two non-overlapping objects; loosen _SEPARATION.")

  phase = t[..., 0] / (frames - 1)  # [1, T]
  half = first_half[:, None] + (last_half - first_half)[:, None] * phase[..., None]
  blend = np.where((kind == "turn")[:, None], turn_weights(frames)[None, :, None], 0.0)
  return dict(centre=centre, half_size=half, blend=blend)


def _render(labels, tracks, valid: np.ndarray, resolution: int) -> np.ndarray:
  """Draws the objects of every frame over the background, in slot order."""
  n, frames = tracks["half_size"].shape[:2]
  palette = np.asarray([shapes.PALETTE[c] for c in shapes.COLOURS], np.float32)
  background = np.asarray(shapes.BACKGROUND, np.float32)
  video = np.empty((n, frames, resolution, resolution, 3), np.uint8)
  for start in range(0, n, _RENDER_CHUNK):
    sl = slice(start, start + _RENDER_CHUNK)
    m = len(range(n)[sl])
    image = np.broadcast_to(background, (m, frames, resolution, resolution, 3)).copy()
    for k in range(MAX_OBJECTS):
      rows = np.flatnonzero(valid[sl, k])
      if not len(rows):
        continue
      centre = tracks["centre"][sl][rows, :, k].reshape(-1, 2)
      half = tracks["half_size"][sl][rows, :, k].reshape(-1)
      shape_ids = np.repeat(labels["shape"][sl][rows, k], frames)
      alpha = shapes.coverage(shape_ids, centre, half, resolution)
      alpha = alpha.reshape(len(rows), frames, resolution, resolution, 1)
      start_rgb = palette[labels["colour"][sl][rows, k]][:, None]
      end_rgb = palette[labels["end_colour"][sl][rows, k]][:, None]
      blend = tracks["blend"][sl][rows, :, k, None].astype(np.float32)
      colour = (start_rgb + blend * (end_rgb - start_rgb))[:, :, None, None]
      # Same float32 arithmetic as shapes.render: a still frame matches it exactly.
      image[rows] = image[rows] + alpha * (colour - image[rows])
    video[sl] = np.round(image).astype(np.uint8)
  return video


def video_caption_vocabulary() -> list[str]:
  """Sorted words of every caption the data set can produce."""
  words = set()
  for shape, colour, motion in motion_combinations():
    for size in shapes.SIZES if _has_size(motion) else (None,):
      words.update(ObjectSpec(shape, colour, motion, size).phrase().split())
  words.update(" and ".join(_TWO_OBJECT_MOTIONS).split())
  return sorted(words)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise VideoSpecError(f"split must be one of {SPLITS}, got {split!r}.")
