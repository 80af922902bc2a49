"""Analytic motion judge: scores videos against captioned-shape-video captions.

Scores generated videos for `video_shapes` captions without a learned model,
from the caption alone (no stored ground truth), so it can judge any video:

1. Tracking: every frame goes through the still judge's blob measurement
   (`judge.measure_blob`: colour votes, soft-coverage centroid and area) and
   shape matching (`judge.match_shapes`: shape and half size). With two
   objects, each is measured on a copy of the frame where the pixels that
   the other caption colour explains better (smaller residual from the
   background-to-colour line) are set to the background.
2. Direction: a move's net displacement (least-squares slope of the centroid
   track times the clip length) must point within 22.5 degrees of the
   caption's direction and be at least half the slow distance; a bounce must
   travel towards its edge, turn near it (inside the track, within the
   object's half size plus 0.12 of the side) and come back, each leg at least
   that far. Both must follow their path: RMS distance from the least-squares
   line (of each leg) at most 0.05 of the side, which noise does not. Growing and shrinking must change the log area by at least half
   the data set's change, with the right sign; a colour change must start in
   colour A (the colour votes of the frames still wholly A) and end in B.
3. Speed: still, slow or fast from the distance travelled over the clip (net
   displacement; both legs of a bounce), thresholds halfway between the data
   set's speeds (still = 0). Motions in place must be still.
4. Temporal consistency: shape, colour (unless it is turning) and size class
   (unless it grows or shrinks) the same across frames. The float
   ("consistency") is the smallest fraction of frames agreeing with the most
   common value; the video is consistent when it is at least 0.9 (one frame
   in ten may disagree: the still judge misreads the odd small, blurred
   shape). Jitter:
   the RMS second difference of the centroid track (fraction of the side per
   frame squared), the two at a bounce's turn left out.
5. Per-frame accuracy: shape, colour and size of each frame against the
   caption, as the still judge would score a frame (a turning object's
   colour is judged only on the frames still wholly A or already B; size
   not at all for growing and shrinking).

A frame where an object is not found counts as wrong for it; direction and
speed need the object in at least half of the frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxgen.data import judge, shapes, video_shapes
from jaxgen.data.images import to_uint8

_COS_SECTOR = np.cos(np.radians(22.5))  # Half of the 45 degrees between directions.
# Distances travelled over the clip that separate still / slow / fast.
_TRAVEL_THRESHOLDS = (
  video_shapes.SPEEDS["slow"] / 2,
  (video_shapes.SPEEDS["slow"] + video_shapes.SPEEDS["fast"]) / 2,
)
_SPEED_CLASSES = ("still", "slow", "fast")
_MIN_TRAVEL = _TRAVEL_THRESHOLDS[0]
# How far (RMS, fraction of the side) a track may stray from the straight
# line of a move, or of each leg of a bounce: noise has no path.
_MAX_WOBBLE = 0.05
_EDGE_TOLERANCE = 0.12  # How far off the edge a bounce may turn, beyond its half size.
# Change of log area over the clip a growing object must reach: half the data set's.
_MIN_LOG_AREA_CHANGE = np.log(video_shapes.GROW_HALF_SIZES[1] / video_shapes.GROW_HALF_SIZES[0])
# Consistent: at most one frame in ten disagrees, which forgives the still
# judge's occasional misread of a small, blurred shape.
_MIN_CONSISTENCY = 0.9
_SIZE_THRESHOLD = (shapes.HALF_SIZES["small"] + shapes.HALF_SIZES["large"]) / 2
_PALETTE = np.asarray([shapes.PALETTE[c] for c in shapes.COLOURS], np.float64)
_MATCH_CHUNK = 512  # Blobs per shape-matching call: bounds template memory.
COLUMNS: tuple[str, ...] = (
  "direction",
  "speed",
  "consistent",
  "consistency",
  "frame_shape",
  "frame_colour",
  "frame_size",
  "found",
)


class VideoJudgeInputError(ValueError):
  """Videos or captions the motion judge cannot score."""


def track_objects(
  videos: np.ndarray, specs: Sequence[video_shapes.VideoSpec]
) -> dict[str, np.ndarray]:
  """Measures every captioned object in every frame of uint8 videos [N, T, S, S, 3].

  Returns:
    per video, frame and object slot [N, T, 2]: "found" bool, "centroid"
    float [..., 2] ((x, y) of the soft coverage, fractions of the side),
    "area" float (soft area, fraction of the image), "colour" and "shape"
    int32 (indices, -1 where not found), "half_size" float (of the best
    template), "votes" float [..., len(COLOURS)] (chroma-weighted colour votes).
  """
  n, frames, side = videos.shape[:3]
  k = video_shapes.MAX_OBJECTS
  out = dict(
    found=np.zeros((n, frames, k), bool),
    centroid=np.full((n, frames, k, 2), np.nan),
    area=np.full((n, frames, k), np.nan),
    colour=np.full((n, frames, k), -1, np.int32),
    shape=np.full((n, frames, k), -1, np.int32),
    half_size=np.full((n, frames, k), np.nan),
    votes=np.zeros((n, frames, k, len(shapes.COLOURS))),
  )
  blobs, where = [], []
  for i, spec in enumerate(specs):
    colours = [shapes.COLOURS.index(o.colour) for o in spec.objects]
    for slot in range(len(colours)):
      for t in range(frames):
        frame = videos[i, t]
        if len(colours) > 1:
          frame = _isolate(frame, colours[slot], colours[1 - slot])
        blob = judge.measure_blob(frame)
        if blob is not None:
          blobs.append(blob)
          where.append((i, t, slot))
  if not blobs:
    return out
  index = tuple(np.asarray(where).T)
  out["found"][index] = True
  out["centroid"][index] = [b["centroid"] for b in blobs]
  out["area"][index] = [b["soft_area"] for b in blobs]
  out["votes"][index] = [b["colour_votes"] for b in blobs]
  out["colour"][index] = np.argmax(out["votes"][index], axis=-1)
  matched = [
    judge.match_shapes(blobs[s : s + _MATCH_CHUNK], side)
    for s in range(0, len(blobs), _MATCH_CHUNK)
  ]
  out["shape"][index] = np.concatenate([m[0] for m in matched])
  out["half_size"][index] = np.concatenate([m[1] for m in matched])
  return out


def _isolate(frame: np.ndarray, own: int, other: int) -> np.ndarray:
  """The frame with the pixels that colour `other` explains better than `own` set to background."""
  pixels = frame.astype(np.float64)
  background = np.median(pixels.reshape(-1, 3), axis=0)
  offset = pixels - background

  def residual(colour: int) -> np.ndarray:
    line = _PALETTE[colour] - background
    alpha = np.clip(offset @ line / (line @ line), 0.0, 1.0)
    return np.linalg.norm(offset - alpha[..., None] * line, axis=-1)

  theirs = residual(other) < residual(own)
  isolated = np.where(theirs[..., None], background, pixels)
  return np.round(isolated).astype(np.uint8)


def judge_videos(
  videos: np.ndarray,
  captions: Sequence[str] | Sequence[video_shapes.VideoSpec],
  value_range: tuple[float, float] | None = None,
) -> dict:
  """Scores videos [N, T, S, S, 3] against what their captions ask for.

  Args:
    videos: uint8 videos, or float ones together with `value_range`, e.g.
      (-1, 1) for diffusion samples.
    captions: N captions (or VideoSpecs) of `video_shapes`.
    value_range: required exactly when videos are not uint8.

  Returns:
    "accuracy": the mean over videos of each of COLUMNS ("frame_size" over
    the videos whose caption has a size); "jitter": mean jitter;
    "per_video": per video bool [N] "direction", "speed", "consistent"
    (every object right), float [N] "consistency", "jitter", "frame_shape",
    "frame_colour", "frame_size" (NaN without a size), "found" (fractions of
    object-frames), str [N] "kind"; "by_kind": per clip kind, the mean
    "direction", "speed" and "consistent" and the "count"; "tracks": see
    `track_objects`.
  """
  specs = [_as_spec(c) for c in captions]
  videos = _as_uint8_videos(videos, len(specs), value_range)
  tracks = track_objects(videos, specs)
  frames = videos.shape[1]
  rows = [
    [
      _score_object(obj, _object_track(tracks, i, slot), frames)
      for slot, obj in enumerate(s.objects)
    ]
    for i, s in enumerate(specs)
  ]
  per_video = {
    name: np.asarray([all(o[name] for o in row) for row in rows])
    for name in ("direction", "speed", "consistent")
  }
  for name in ("consistency", "frame_shape", "frame_colour", "frame_size", "found"):
    per_video[name] = np.asarray([np.mean([o[name] for o in row]) for row in rows])
  per_video["jitter"] = np.asarray([_finite_mean([o["jitter"] for o in row]) for row in rows])
  per_video["kind"] = np.asarray([s.kind for s in specs])

  accuracy = {name: _finite_mean(per_video[name].astype(float)) for name in COLUMNS}
  by_kind = {}
  for kind in dict.fromkeys(per_video["kind"].tolist()):
    chosen = per_video["kind"] == kind
    by_kind[kind] = {
      name: float(np.mean(per_video[name][chosen])) for name in ("direction", "speed", "consistent")
    }
    by_kind[kind]["count"] = int(chosen.sum())
  return dict(
    accuracy=accuracy,
    jitter=_finite_mean(per_video["jitter"]),
    per_video=per_video,
    by_kind=by_kind,
    tracks=tracks,
  )


def _finite_mean(values) -> float:
  """Mean of the finite values; NaN (without a warning) when there are none."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if len(finite) else float("nan")


def _object_track(tracks: dict, video: int, slot: int) -> dict[str, np.ndarray]:
  return {name: value[video, :, slot] for name, value in tracks.items()}


def _score_object(obj: video_shapes.ObjectSpec, track: dict, frames: int) -> dict:
  """Direction, speed, consistency, jitter and per-frame scores of one tracked object."""
  info = obj.info
  found = track["found"]
  enough = found.sum() >= max(2, frames / 2)
  t = np.flatnonzero(found)
  centroid = track["centroid"][found]
  weights = video_shapes.turn_weights(frames)

  # What the caption asks for, and what the track shows.
  expected_speed = info.speed or "still"
  travel = _net_travel(t, centroid, frames) if enough else np.full(2, np.nan)
  direction, speed = False, False
  if enough and info.kind == "move":
    distance = np.linalg.norm(travel)
    cosine = travel @ np.asarray(info.step) / max(distance, 1e-12)
    direction = bool(
      distance >= _MIN_TRAVEL and cosine >= _COS_SECTOR and _wobble(t, centroid) <= _MAX_WOBBLE
    )
    speed = _speed_class(distance) == expected_speed
  elif enough and info.kind == "bounce":
    direction, path = _bounce(info, t, centroid, track["half_size"][found])
    speed = _speed_class(path) == expected_speed
  elif enough:
    speed = _speed_class(np.linalg.norm(travel)) == "still"
    if info.kind in ("grow", "shrink"):
      change = _net_travel(t, np.log(track["area"][found])[:, None], frames)[0]
      sign = 1 if info.kind == "grow" else -1
      direction = bool(sign * change >= _MIN_LOG_AREA_CHANGE)
    else:  # turn
      start, end = track["votes"][weights <= 0.25], track["votes"][weights >= 0.75]
      direction = bool(
        start.sum(axis=0).argmax() == shapes.COLOURS.index(obj.colour)
        and end.sum(axis=0).argmax() == shapes.COLOURS.index(info.end_colour)
        and found[weights <= 0.25].any()
        and found[weights >= 0.75].any()
      )

  # Per-frame attributes against the caption.
  shape_ok = track["shape"] == shapes.SHAPES.index(obj.shape)
  colour_target = np.full(frames, shapes.COLOURS.index(obj.colour))
  judged = np.ones(frames, bool)
  if info.kind == "turn":
    colour_target = np.where(weights < 0.5, colour_target, shapes.COLOURS.index(info.end_colour))
    judged = (weights <= 0.25) | (weights >= 0.75)
  colour_ok = (track["colour"] == colour_target)[judged]
  size_class = np.where(found, track["half_size"] > _SIZE_THRESHOLD, -1)
  frame_size = np.nan
  if obj.size is not None:
    frame_size = float(np.mean(size_class == shapes.SIZES.index(obj.size)))

  # Temporal consistency where the caption says the attribute holds.
  constant = [track["shape"]]
  if info.kind != "turn":
    constant.append(track["colour"])
  if obj.size is not None:
    constant.append(size_class)
  consistency = min(_modal_fraction(values, found) for values in constant)
  return dict(
    direction=direction,
    speed=bool(speed),
    consistency=consistency,
    consistent=consistency >= _MIN_CONSISTENCY,
    jitter=_jitter(track, info.kind == "bounce"),
    frame_shape=float(np.mean(shape_ok)),
    frame_colour=float(np.mean(colour_ok)),
    frame_size=frame_size,
    found=float(np.mean(found)),
  )


def _fit(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares line through values [M, D] over frames t [M]: slope [D], residuals [M, D]."""
  centred = t - t.mean()
  offsets = values - values.mean(axis=0)
  slope = centred @ offsets / (centred @ centred)
  return slope, offsets - centred[:, None] * slope


def _wobble(t: np.ndarray, values: np.ndarray) -> float:
  """RMS distance of a track [M, D] from its least-squares line."""
  return float(np.sqrt(np.mean(np.sum(_fit(t, values)[1] ** 2, axis=-1))))


def _net_travel(t: np.ndarray, values: np.ndarray, frames: int) -> np.ndarray:
  """Least-squares slope of values [M, D] over frames t [M], times the clip length."""
  slope, _ = _fit(t, values)
  return slope * (frames - 1)


def _bounce(info, t, centroid, half_size) -> tuple[bool, float]:
  """Whether a track bounces off the caption's edge, and the distance it travelled."""
  axis = 0 if info.step[0] != 0 else 1
  away = centroid[:, axis] * info.step[axis]  # Grows away from the edge.
  turn = int(np.argmin(away))
  leg_in, leg_out = away[0] - away[turn], away[-1] - away[turn]
  gap = centroid[turn, axis] if info.step[axis] > 0 else 1 - centroid[turn, axis]
  direction = bool(
    0 < turn < len(t) - 1
    and min(leg_in, leg_out) >= _MIN_TRAVEL
    and gap <= half_size[turn] + _EDGE_TOLERANCE
    and max(_wobble(t[: turn + 1], centroid[: turn + 1]), _wobble(t[turn:], centroid[turn:]))
    <= _MAX_WOBBLE
  )
  return direction, float(leg_in + leg_out)


def _speed_class(distance: float) -> str:
  return _SPEED_CLASSES[int(np.searchsorted(_TRAVEL_THRESHOLDS, distance))]


def _modal_fraction(values: np.ndarray, found: np.ndarray) -> float:
  """Fraction of frames holding the most common value; missing frames never agree."""
  if not found.any():
    return 0.0
  _, counts = np.unique(values[found], return_counts=True)
  return float(counts.max() / len(values))


def _jitter(track: dict, bounce: bool) -> float:
  """RMS second difference of the centroid over runs of found frames (NaN if none)."""
  centroid, found = track["centroid"], track["found"]
  second = centroid[2:] - 2 * centroid[1:-1] + centroid[:-2]
  ok = found[2:] & found[1:-1] & found[:-2]
  size = np.linalg.norm(second[ok], axis=-1)
  if bounce:  # The turn puts its kink into two second differences.
    size = np.sort(size)[:-2]
  return float(np.sqrt(np.mean(size**2))) if len(size) else float("nan")


def _as_spec(caption) -> video_shapes.VideoSpec:
  if isinstance(caption, video_shapes.VideoSpec):
    return caption
  if isinstance(caption, (str, np.str_)):
    return video_shapes.parse_video_caption(str(caption))
  raise VideoJudgeInputError(
    f"captions must be str captions or VideoSpecs, got an item of type {type(caption).__name__}."
  )


def _as_uint8_videos(videos, count: int, value_range) -> np.ndarray:
  videos = np.asarray(videos)
  if videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[2] != videos.shape[3]:
    raise VideoJudgeInputError(
      f"videos must be square RGB [N, T, S, S, 3], got shape {videos.shape}."
    )
  if len(videos) != count:
    raise VideoJudgeInputError(
      f"videos must have one video per caption ({count}), got {len(videos)}."
    )
  if videos.shape[1] < 4 or videos.shape[2] < 8:
    raise VideoJudgeInputError(
      f"videos must have >= 4 frames of >= 8x8 pixels, got {videos.shape[1:4]}."
    )
  if videos.dtype == np.uint8:
    if value_range is not None:
      raise VideoJudgeInputError(f"value_range must be None for uint8 videos, got {value_range}.")
    return videos
  if value_range is None:
    raise VideoJudgeInputError(
      f"videos of dtype {videos.dtype} need value_range, e.g. (-1, 1) or (0, 1); "
      "only uint8 videos imply (0, 255)."
    )
  return to_uint8(videos, value_range)
