"""Procedural music-dance pairs with exact beats, fully offline.

Music comes from `music_synth` (four genres, bars, phrases, intensities).
Dances are driven on the SMPL-22 skeleton of `synthetic_motion` (its joint
channels, forward kinematics, grounding and subject proportions) at 20 fps:
each genre has its own vocabulary of moves (bounce, step-touch, arm swing,
turn, jump, kick) and posture; a phrase of music gets one move, a different
one from the previous phrase.

A move is a cycle of poses, one per beat. The dance eases (cosine) from each
beat's pose to the next, so the body pauses on every beat and moves fastest
between beats: the kinematic beats (strict local minima of the smoothed mean
joint speed, `jaxgen.metrics.dance.motion_beats`) fall on the music's beats.
Pose offsets scale with the beat's intensity, so the dance's energy follows
the music's. The pause sits half a frame after the beat because the speed
between frames t and t+1 is counted at frame t.

Splits hold out whole tracks: track k of a split has id
k * len(SPLITS) + split index and is a function of (seed, track id) only;
train has DANCES_PER_TRACK["train"] dances per track, the others one.
Example i of a split depends only on (seed, split, i).
"""

from __future__ import annotations

import numpy as np

from jaxgen.data import music_synth, synthetic_motion

FPS = synthetic_motion.FPS
NUM_JOINTS = 22
SPLITS: tuple[str, ...] = ("train", "validation", "test")
DANCES_PER_TRACK: dict[str, int] = {"train": 2, "validation": 1, "test": 1}
PAD = -1  # Fills beat arrays past a clip's last beat.
MIN_SECONDS = 3.0

# Root channels of a pose: per-beat displacements (metres, radians), summed over
# beats; `lift` is an absolute flight height. The rest are joint angles.
_ROOT_STEPS = {"side": "side_speed", "forward": "forward_speed", "turn": "yaw_rate"}
_QUARTER = np.pi / 2

# Poses are offsets from the standing posture at full intensity, one per beat.
MOVES: dict[str, tuple[dict[str, float], ...]] = {
  "bounce": (
    {"knee_l": 1.1, "knee_r": 1.1, "hip_flex_l": 0.55, "hip_flex_r": 0.55, "spine_bend": 0.3,
     "elbow_l": 1.4, "elbow_r": 1.4, "shoulder_flex_l": 0.9, "shoulder_flex_r": 0.9},
    {"knee_l": 0.1, "knee_r": 0.1, "head_pitch": -0.15, "shoulder_abd_l": 0.4,
     "shoulder_abd_r": 0.4},
  ),
  "step_touch": (
    {"side": 0.15, "hip_abd_l": 0.3, "shoulder_abd_l": 0.9, "shoulder_abd_r": 0.9},
    {"side": 0.15, "knee_r": 0.9, "hip_flex_r": 0.45, "elbow_l": 1.2, "elbow_r": 1.2,
     "shoulder_flex_l": 0.5, "shoulder_flex_r": 0.5},
    {"side": -0.15, "hip_abd_r": 0.3, "shoulder_abd_l": 0.9, "shoulder_abd_r": 0.9},
    {"side": -0.15, "knee_l": 0.9, "hip_flex_l": 0.45, "elbow_l": 1.2, "elbow_r": 1.2,
     "shoulder_flex_l": 0.5, "shoulder_flex_r": 0.5},
  ),
  "arm_swing": (
    {"shoulder_flex_l": 1.5, "shoulder_flex_r": -0.6, "spine_twist": 0.4, "knee_l": 0.6,
     "hip_flex_l": 0.3, "elbow_l": 0.6, "elbow_r": 0.3},
    {"shoulder_flex_r": 1.5, "shoulder_flex_l": -0.6, "spine_twist": -0.4, "knee_r": 0.6,
     "hip_flex_r": 0.3, "elbow_r": 0.6, "elbow_l": 0.3},
  ),
  "turn": (
    {"turn": _QUARTER, "knee_l": 0.5, "hip_flex_l": 0.25, "shoulder_abd_l": 0.8,
     "shoulder_abd_r": 0.8},
    {"turn": _QUARTER, "knee_r": 0.5, "hip_flex_r": 0.25, "elbow_l": 1.0, "elbow_r": 1.0},
  ),
  "jump": (
    {"knee_l": 0.9, "knee_r": 0.9, "hip_flex_l": 0.6, "hip_flex_r": 0.6, "spine_bend": 0.3,
     "shoulder_flex_l": -0.4, "shoulder_flex_r": -0.4},
    {"lift": 0.12, "knee_l": 0.1, "knee_r": 0.1, "shoulder_flex_l": 1.4, "shoulder_flex_r": 1.4,
     "toe_l": 0.3, "toe_r": 0.3},
  ),
  "kick": (
    {"hip_flex_r": 1.3, "knee_r": 0.15, "toe_r": 0.4, "shoulder_flex_l": 0.9,
     "spine_bend": -0.15, "shoulder_abd_r": 0.6},
    {"knee_r": 0.8, "hip_flex_r": 0.3, "knee_l": 0.4, "hip_flex_l": 0.2, "elbow_l": 1.0,
     "elbow_r": 1.0},
    {"hip_flex_l": 1.3, "knee_l": 0.15, "toe_l": 0.4, "shoulder_flex_r": 0.9,
     "spine_bend": -0.15, "shoulder_abd_l": 0.6},
    {"knee_l": 0.8, "hip_flex_l": 0.3, "knee_r": 0.4, "hip_flex_r": 0.2, "elbow_l": 1.0,
     "elbow_r": 1.0},
  ),
}  # fmt: skip
MOVE_NAMES: tuple[str, ...] = tuple(MOVES)

# Each genre's vocabulary (a subset of MOVES) and posture (offsets of the standing pose).
GENRE_MOVES: dict[str, tuple[str, ...]] = {
  "hiphop": ("bounce", "step_touch", "arm_swing", "turn"),
  "funk": ("step_touch", "arm_swing", "kick", "turn"),
  "house": ("bounce", "step_touch", "jump", "kick"),
  "breakbeat": ("jump", "kick", "arm_swing", "bounce"),
}
_GENRE_POSTURE: dict[str, dict[str, float]] = {
  "hiphop": {"knee_l": 0.3, "knee_r": 0.3, "hip_flex_l": 0.15, "hip_flex_r": 0.15,
             "spine_bend": 0.2},
  "funk": {"elbow_l": 0.8, "elbow_r": 0.8, "spine_bend": -0.05},
  "house": {"elbow_l": 0.5, "elbow_r": 0.5, "knee_l": 0.1, "knee_r": 0.1},
  "breakbeat": {"shoulder_abd_l": 0.3, "shoulder_abd_r": 0.3, "elbow_l": 1.2,
                "elbow_r": 1.2, "spine_bend": 0.1},
}  # fmt: skip
_STANDING = {"shoulder_abd_l": 0.12, "shoulder_abd_r": 0.12, "elbow_l": 0.2, "elbow_r": 0.2}


def _mirror(pose: dict[str, float]) -> dict[str, float]:
  """The same pose led by the other side: left and right swap, turns reverse."""
  swap = {"_l": "_r", "_r": "_l"}
  mirrored = {}
  for name, value in pose.items():
    if name[-2:] in swap:
      name = name[:-2] + swap[name[-2:]]
    elif name in ("side", "turn", "spine_twist", "pelvis_yaw"):
      value = -value
    mirrored[name] = value
  return mirrored


def _posture(genre: str) -> dict[str, float]:
  base = dict(_STANDING)
  for name, value in _GENRE_POSTURE[genre].items():
    base[name] = base.get(name, 0.0) + value
  return base


def _beats_into_phrase(beat_phrase: np.ndarray) -> np.ndarray:
  """For each beat, how many beats of its phrase came before it."""
  starts = np.concatenate([[True], beat_phrase[1:] != beat_phrase[:-1]])
  first = np.maximum.accumulate(np.where(starts, np.arange(len(beat_phrase)), 0))
  return np.arange(len(beat_phrase)) - first


def dance_channels(
  rng: np.random.Generator, track: music_synth.Track, num_frames: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Channel curves of one dance to `track`: ({channel: (num_frames,)}, move index per beat).

  The channels are `synthetic_motion.CHANNELS` (joint angles and root
  speeds), ready for `synthetic_motion.clip_joints`.
  """
  genre = music_synth.GENRE_NAMES[track.genre]
  vocabulary = GENRE_MOVES[genre]
  amplitude = rng.uniform(0.85, 1.15)
  left_led = bool(rng.integers(2))
  # One move per phrase, never the same move twice in a row.
  moves, previous = [], None
  for _ in range(int(track.beat_phrase[-1]) + 1):
    choices = [m for m in vocabulary if m != previous]
    previous = choices[rng.integers(len(choices))]
    moves.append(previous)
  beat_move = np.array([MOVE_NAMES.index(moves[p]) for p in track.beat_phrase], np.int32)

  # Keyframe k + 1 is beat k. Keyframe 0 is a virtual beat one period earlier, so
  # the dancer is already moving into the first beat and pauses on it.
  period = 60.0 / track.bpm
  times = np.concatenate([[track.beat_times[0] - period], track.beat_times]) + 0.5 / FPS
  positions = np.concatenate([[-1], _beats_into_phrase(track.beat_phrase)])
  beats = np.concatenate([[0], np.arange(len(track.beat_times))])
  poses = []
  for position, beat in zip(positions, beats):
    cycle = MOVES[moves[track.beat_phrase[beat]]]
    pose = cycle[position % len(cycle)]
    pose = pose if left_led else _mirror(pose)
    scale = amplitude * float(track.beat_intensity[beat])
    poses.append({k: scale * v for k, v in pose.items()})

  t = np.arange(num_frames) / FPS
  base = _posture(genre)

  def keyframes(name: str) -> np.ndarray:
    return np.array([p.get(name, 0.0) for p in poses])

  channels = {
    name: base.get(name, 0.0) + synthetic_motion.ease(t, times, keyframes(name))
    for name in synthetic_motion.CHANNELS
  }
  # Root displacements add up over beats; their change per frame is the speed.
  for step, speed in _ROOT_STEPS.items():
    displacement = synthetic_motion.ease(t, times, np.cumsum(keyframes(step)))
    channels[speed] = np.concatenate([[0.0], np.diff(displacement) * FPS])
  return channels, beat_move


def max_beats(seconds: float) -> int:
  """Length of the padded beat arrays of `seconds`-long clips (fastest tempo, plus one)."""
  fastest = max(g.bpm[1] for g in music_synth.GENRES)
  return int(np.ceil(seconds * fastest / 60.0)) + 1


def track_id(split: str, index: int) -> int:
  """Id of the track example `index` of `split` dances to; no id is in two splits."""
  return (index // DANCES_PER_TRACK[split]) * len(SPLITS) + SPLITS.index(split)


def make_track(track: int, seconds: float, *, sample_rate: int, seed: int) -> music_synth.Track:
  """Track `track` (an id from `track_id`), a function of (seed, track) only."""
  return music_synth.synthesize_track(np.random.default_rng([seed, track]), seconds, sample_rate)


def _check_args(split: str, count: int, seconds: float, start: int) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if count < 1:
    raise ValueError(f"count must be >= 1, got {count}")
  if start < 0:
    raise ValueError(f"start must be >= 0, got {start}")
  if not seconds >= MIN_SECONDS:
    raise ValueError(f"seconds must be >= {MIN_SECONDS} (a bar at 80 BPM), got {seconds}")
  if abs(seconds * FPS - round(seconds * FPS)) > 1e-6:
    raise ValueError(f"seconds must be a whole number of frames at {FPS} fps, got {seconds}")


def make_music_dance(
  split: str,
  count: int,
  *,
  seconds: float = 12.0,
  seed: int = 0,
  start: int = 0,
  sample_rate: int = music_synth.SAMPLE_RATE,
) -> dict[str, np.ndarray]:
  """Examples start .. start + count - 1 of `split`, each `seconds` long.

  Returns host arrays, with N = count, T = seconds · 20 frames, S = seconds ·
  sample_rate samples and B = `max_beats(seconds)`:
    audio (N, S) float32 mono in [-1, 1]; joints (N, T, 22, 3) float32
    metres, Y up, feet on the floor; beat_times (N, B) float64 seconds, PAD
    after num_beats (N,) int32; per beat, PAD-filled likewise: beat_in_bar
    int32 (0 on a bar's downbeat), beat_phrase int32, beat_intensity float32,
    beat_move int32 (index into MOVE_NAMES); genre (N,) int32 (index into
    music_synth.GENRE_NAMES); tempo (N,) float32 BPM; track_id (N,) int64.
  """
  _check_args(split, count, seconds, start)
  num_frames = round(seconds * FPS)
  width = max_beats(seconds)
  per_beat = {
    "beat_times": np.float64,
    "beat_in_bar": np.int32,
    "beat_phrase": np.int32,
    "beat_intensity": np.float32,
    "beat_move": np.int32,
  }
  out = {name: np.full((count, width), PAD, dtype) for name, dtype in per_beat.items()}
  out["audio"] = np.zeros((count, round(seconds * sample_rate)), np.float32)
  out["num_beats"] = np.zeros(count, np.int32)
  out["genre"] = np.zeros(count, np.int32)
  out["tempo"] = np.zeros(count, np.float32)
  out["track_id"] = np.zeros(count, np.int64)

  channels, offsets, headings = [], [], []
  music, music_id = None, None
  split_index = SPLITS.index(split)
  for row, index in enumerate(range(start, start + count)):
    track = track_id(split, index)
    if track != music_id:  # Neighbouring train examples share a track.
      music, music_id = make_track(track, seconds, sample_rate=sample_rate, seed=seed), track
    rng = np.random.default_rng([seed, split_index, index])
    # One frame more than kept: clip_joints holds its last frame still.
    curves, beat_move = dance_channels(rng, music, num_frames + 1)
    channels.append(curves)
    offsets.append(synthetic_motion.subject_offsets(rng, 1)[0])
    headings.append(rng.uniform(-np.pi, np.pi))
    audible = music.beat_times < seconds
    n = int(audible.sum())
    values = {
      "beat_times": music.beat_times,
      "beat_in_bar": music.beat_in_bar,
      "beat_phrase": music.beat_phrase,
      "beat_intensity": music.beat_intensity,
      "beat_move": beat_move,
    }
    for name, value in values.items():
      out[name][row, :n] = value[audible]
    out["num_beats"][row] = n
    out["audio"][row] = music.audio
    out["genre"][row] = music.genre
    out["tempo"][row] = music.bpm
    out["track_id"][row] = track

  stacked = {k: np.stack([c[k] for c in channels]) for k in synthetic_motion.CHANNELS}
  joints = synthetic_motion.clip_joints(
    stacked, np.stack(offsets), np.array(headings), np.zeros((count, 2))
  )
  out["joints"] = joints[:, :num_frames].astype(np.float32)
  return out
