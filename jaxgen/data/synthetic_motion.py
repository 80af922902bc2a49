"""Procedural text-to-motion data in HumanML3D's 263-d format, fully offline.

Each clip is one or two actions performed by a skinless SMPL-22 skeleton
(human bone lengths, a deterministic per-subject height and limb variation):
walk, run, jump, wave the left/right hand, turn left/right, sit down, kick
with the left/right leg, with speeds (slowly / normally / quickly), travel
directions (forward / backward / left / right), repetitions (once / twice /
three times) and pairs ("a person walks forward then waves the right hand").
Captions come from templates with synonyms (`jaxgen.data.synthetic_captions`).
Actions are driven by joint-angle curves (gait cycles, keyframed jumps, kicks,
waves, a seated end pose) and a root velocity / yaw-rate track; forward
kinematics gives joint positions, every frame is grounded (lowest joint on
the floor, plus flight height for jumps and runs), and
`motion.joints_to_features` turns them into features by the same path as the
real data.

Lengths are multiples of 4 in [40, 196] frames at 20 fps. The last joint frame
repeats the one before it (the clip ends at rest), so recovering joints from
the features and computing features again reproduces them exactly: the
reference smooths the facing direction over time and takes the floor as the
lowest point of the clip, and a held last frame leaves both unchanged when
the recovered motion (one frame shorter) is processed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from jaxgen.data import motion as motion_lib
from jaxgen.data import motion_formats, synthetic_captions

# The caption vocabulary is part of this dataset's public API (tokenizers are built from it).
CAPTION_WORDS = synthetic_captions.CAPTION_WORDS

ACTIONS: tuple[str, ...] = (
  "walk",
  "run",
  "jump",
  "wave_left_hand",
  "wave_right_hand",
  "turn_left",
  "turn_right",
  "sit_down",
  "kick_left",
  "kick_right",
)
SPEEDS: tuple[str, ...] = ("slowly", "normally", "quickly")
DIRECTIONS: tuple[str, ...] = ("forward", "backward", "left", "right")
REPETITIONS: tuple[str, ...] = ("once", "twice", "three times")
SPLITS: dict[str, int] = {"train": 3000, "test": 600}

FPS = 20
_DT = 1.0 / FPS
_MIN_FRAMES, _MAX_FRAMES, _UNIT = 40, 196, 4

# Rest-pose offsets (metres) of each SMPL-22 joint from its parent, Y up,
# facing +Z, the person's left at +X: roughly the SMPL neutral body.
_REST_OFFSETS = np.array(
  [
    [0.0, 0.0, 0.0],  # 0 pelvis
    [0.085, -0.075, 0.0],  # 1 left hip
    [-0.085, -0.075, 0.0],  # 2 right hip
    [0.0, 0.11, -0.01],  # 3 spine1
    [0.0, -0.41, 0.0],  # 4 left knee
    [0.0, -0.41, 0.0],  # 5 right knee
    [0.0, 0.13, 0.0],  # 6 spine2
    [0.0, -0.41, -0.02],  # 7 left ankle
    [0.0, -0.41, -0.02],  # 8 right ankle
    [0.0, 0.06, 0.02],  # 9 spine3
    [0.0, -0.06, 0.13],  # 10 left foot (toes)
    [0.0, -0.06, 0.13],  # 11 right foot
    [0.0, 0.21, -0.02],  # 12 neck
    [0.07, 0.12, -0.01],  # 13 left collar
    [-0.07, 0.12, -0.01],  # 14 right collar
    [0.0, 0.09, 0.05],  # 15 head
    [0.11, 0.03, -0.01],  # 16 left shoulder
    [-0.11, 0.03, -0.01],  # 17 right shoulder
    [0.0, -0.27, 0.0],  # 18 left elbow
    [0.0, -0.27, 0.0],  # 19 right elbow
    [0.0, -0.25, 0.0],  # 20 left wrist
    [0.0, -0.25, 0.0],  # 21 right wrist
  ]
)
_PARENTS = motion_formats.HUMANML3D.parents
_LEG_JOINTS = (4, 5, 7, 8, 10, 11)
_ARM_JOINTS = (18, 19, 20, 21)
_LEG_LENGTH = 0.84

# Joint-angle channels (radians) and root channels; all default to 0.
CHANNELS = (
  "hip_flex_l",
  "hip_flex_r",
  "hip_abd_l",
  "hip_abd_r",
  "knee_l",
  "knee_r",
  "toe_l",
  "toe_r",
  "pelvis_yaw",
  "spine_bend",
  "spine_twist",
  "head_pitch",
  "shoulder_flex_l",
  "shoulder_flex_r",
  "shoulder_abd_l",
  "shoulder_abd_r",
  "elbow_l",
  "elbow_r",
  "forearm_raise_l",
  "forearm_raise_r",
  "forward_speed",
  "side_speed",
  "yaw_rate",
  "lift",
)


# Actions performed a number of times (REPETITIONS); the others take their own time.
_REPEATED = ("jump", "wave_left_hand", "wave_right_hand", "kick_left", "kick_right")


# ---------------------------------------------------------------------------
# One action = joint-angle and root curves over its frames.


class _Action:
  """An action's attributes, its caption phrase and its channel curves."""

  def __init__(self, name: str, rng: np.random.Generator, first: bool, last: bool):
    self.name = name
    self.speed = SPEEDS[rng.integers(3)]
    self.direction = ""
    self.reps = 1
    kind = name.split("_")[0]
    if name in ("walk", "run"):
      self.direction = DIRECTIONS[rng.integers(4)]
    elif name == "jump":
      self.direction = ("in_place", "forward")[rng.integers(2)]
    elif kind == "turn":
      self.direction = ("90", "180")[rng.integers(2)]
    if name in _REPEATED:
      self.reps = int(rng.integers(1, 4))
    self.first, self.last = first, last
    self.phrase = synthetic_captions.action_phrase(
      rng, name, self.direction, self.speed, self.reps if name in _REPEATED else None
    )
    # Free-length actions get a random duration; others have their own.
    self.free_seconds = float(rng.uniform(2.0, 5.0))
    self.phase0 = float(rng.uniform(0, 2 * np.pi))

  def seconds(self) -> float:
    """Duration of the action itself."""
    slow = {"slowly": 1.35, "normally": 1.0, "quickly": 0.7}[self.speed]
    if self.name in ("walk", "run"):
      return self.free_seconds
    if self.name == "jump":
      return 0.3 + self.reps * 1.05 * slow
    if self.name.startswith("wave"):
      return 1.2 * slow + self.reps * 0.55 * slow + 0.2
    if self.name.startswith("kick"):
      return 0.3 + self.reps * 1.2 * slow
    if self.name.startswith("turn"):
      return (0.4 + float(self.direction) / 90.0 * 0.9) * slow
    return 1.6 * slow + 1.2  # sit_down, then stays seated.

  def curves(self, n: int) -> dict[str, np.ndarray]:
    t = np.arange(n) * _DT
    out = _standing(t)
    kind = self.name.split("_")[0]
    build: Callable = {
      "walk": _walk,
      "run": _run,
      "jump": _jump,
      "wave": _wave,
      "turn": _turn,
      "sit": _sit,
      "kick": _kick,
    }[kind]
    build(self, t, out)
    return out


def ease(u: np.ndarray, times, values) -> np.ndarray:
  """Cosine-eased interpolation through keyframes (times increasing)."""
  times = np.asarray(times, np.float64)
  values = np.asarray(values, np.float64)
  idx = np.clip(np.searchsorted(times, u, side="right") - 1, 0, len(times) - 2)
  span = times[idx + 1] - times[idx]
  s = np.clip((u - times[idx]) / span, 0.0, 1.0)
  w = 0.5 - 0.5 * np.cos(np.pi * s)
  return values[idx] + (values[idx + 1] - values[idx]) * w


def _envelope(t: np.ndarray, ramp: float) -> np.ndarray:
  """0 -> 1 over `ramp` seconds at the start, 1 -> 0 at the end."""
  end = t[-1] + _DT
  return ease(t, [0, ramp, max(ramp, end - ramp), end], [0, 1, 1, 0])


def _standing(t: np.ndarray) -> dict[str, np.ndarray]:
  out = {c: np.zeros_like(t) for c in CHANNELS}
  breath = np.sin(2 * np.pi * 0.25 * t)
  out["spine_bend"] += 0.02 * breath
  out["shoulder_abd_l"] += 0.12
  out["shoulder_abd_r"] += 0.12
  out["elbow_l"] += 0.2
  out["elbow_r"] += 0.2
  return out


def _speed_factor(action: _Action, slow, normal, quick) -> float:
  return {"slowly": slow, "normally": normal, "quickly": quick}[action.speed]


def _gait(out, phase, env, hip_amp, knee_amp, knee_base, arm_amp):
  """Alternating leg swing; a knee bends while its thigh swings forward."""
  sin, cos = np.sin(phase), np.cos(phase)
  out["hip_flex_l"] += env * hip_amp * sin
  out["hip_flex_r"] -= env * hip_amp * sin
  out["knee_l"] += env * (knee_base + knee_amp * np.maximum(cos, 0) ** 1.5)
  out["knee_r"] += env * (knee_base + knee_amp * np.maximum(-cos, 0) ** 1.5)
  out["shoulder_flex_l"] -= env * arm_amp * sin
  out["shoulder_flex_r"] += env * arm_amp * sin
  out["pelvis_yaw"] += env * 0.25 * hip_amp * sin
  out["spine_twist"] -= env * 0.4 * hip_amp * sin


def _walk(action: _Action, t, out):
  speed = _speed_factor(action, 0.6, 1.1, 1.6)
  freq = _speed_factor(action, 0.75, 0.95, 1.15)  # Strides per second.
  env = _envelope(t, 0.4)
  direction = action.direction
  phase = 2 * np.pi * freq * t + action.phase0
  if direction in ("forward", "backward"):
    sign = 1.0 if direction == "forward" else -1.0
    speed *= 1.0 if direction == "forward" else 0.7
    hip = np.arcsin(min(0.6, speed / freq / (4 * _LEG_LENGTH)))
    # Walking backward is walking forward played in reverse.
    _gait(out, sign * phase, env, hip, 0.9, 0.05, 0.8 * hip)
    out["forward_speed"] += sign * speed * env
  else:  # Side steps: the legs spread and close, the leading knee lifts.
    sign = 1.0 if direction == "left" else -1.0
    side = speed * 0.45
    spread = np.arcsin(min(0.5, side / freq / (2 * _LEG_LENGTH)))
    opening = 0.5 - 0.5 * np.cos(phase)
    lead, trail = ("l", "r") if sign > 0 else ("r", "l")
    out[f"hip_abd_{lead}"] += env * spread * opening
    out[f"hip_abd_{trail}"] += env * spread * opening
    out[f"knee_{lead}"] += env * 0.5 * np.maximum(np.sin(phase), 0)
    out[f"hip_flex_{lead}"] += env * 0.25 * np.maximum(np.sin(phase), 0)
    out[f"knee_{trail}"] += env * 0.5 * np.maximum(-np.sin(phase), 0)
    out[f"hip_flex_{trail}"] += env * 0.25 * np.maximum(-np.sin(phase), 0)
    out["side_speed"] += sign * side * env
    out["shoulder_abd_l"] += env * 0.1 * opening
    out["shoulder_abd_r"] += env * 0.1 * opening


def _run(action: _Action, t, out):
  speed = _speed_factor(action, 2.0, 2.8, 3.8)
  freq = _speed_factor(action, 1.25, 1.4, 1.55)
  env = _envelope(t, 0.5)
  phase = 2 * np.pi * freq * t + action.phase0
  direction = action.direction
  sign = -1.0 if direction == "backward" else 1.0
  if direction == "backward":
    speed *= 0.45
  hip = np.arcsin(min(0.62, speed / freq / (4 * _LEG_LENGTH)))
  _gait(out, sign * phase, env, hip, 1.5, 0.25, 0.9 * hip)
  out["elbow_l"] += env * 1.3
  out["elbow_r"] += env * 1.3
  out["spine_bend"] += env * 0.18 * sign
  out["lift"] += env * 0.05 * np.maximum(np.sin(2 * phase), 0)
  out["forward_speed"] += sign * speed * env
  if direction in ("left", "right"):  # Turn 90 degrees while speeding up.
    turn = 1.0 if direction == "left" else -1.0
    out["yaw_rate"] += turn * (np.pi / 2) * ease(t, [0, 0.45, 0.9, 10], [0, 1.0 / 0.45, 0, 0])


def _repeated(action: _Action, t, lead_in: float, period: float):
  """Phase in [0, 1) of each repetition, and whether a repetition is on."""
  u = (t - lead_in) / period
  active = (u >= 0) & (u < action.reps)
  return np.where(active, u - np.floor(u), 0.0), active


def _jump(action: _Action, t, out):
  slow = _speed_factor(action, 1.35, 1.0, 0.7)
  u, active = _repeated(action, t, 0.15, 1.05 * slow)
  keys = [0, 0.3, 0.42, 0.5, 0.72, 0.85, 1.0]
  crouch = ease(u, keys, [0, 1, 0, 0.15, 0.2, 0.8, 0]) * active
  air = np.clip((u - 0.42) / 0.34, 0, 1) * active
  airborne = (air > 0) & (air < 1)
  out["lift"] += np.where(airborne, 0.32 * 4 * air * (1 - air), 0.0)
  out["hip_flex_l"] += 1.0 * crouch
  out["hip_flex_r"] += 1.0 * crouch
  out["knee_l"] += 1.5 * crouch
  out["knee_r"] += 1.5 * crouch
  out["spine_bend"] += 0.45 * crouch
  arms = ease(u, keys, [0, -0.7, 2.4, 1.2, 0.4, -0.3, 0]) * active
  out["shoulder_flex_l"] += arms
  out["shoulder_flex_r"] += arms
  out["toe_l"] += 0.5 * airborne
  out["toe_r"] += 0.5 * airborne
  if action.direction == "forward":
    out["forward_speed"] += np.where(airborne, 1.6, 0.0)


def _wave(action: _Action, t, out):
  side = "l" if "left" in action.name else "r"
  slow = _speed_factor(action, 1.35, 1.0, 0.7)
  raise_time, period = 0.6 * slow, 0.55 * slow
  end = t[-1] + _DT
  hold_end = raise_time + action.reps * period
  up = ease(t, [0, raise_time, hold_end, min(end, hold_end + raise_time), end + 1], [0, 1, 1, 0, 0])
  out[f"shoulder_abd_{side}"] += 1.25 * up
  out[f"shoulder_flex_{side}"] += 0.35 * up
  swing = np.where(
    (t >= raise_time) & (t < hold_end), np.sin(2 * np.pi * (t - raise_time) / period), 0.0
  )
  out[f"forearm_raise_{side}"] += up * (1.7 + 0.45 * swing)
  out["head_pitch"] -= 0.1 * up


def _turn(action: _Action, t, out):
  sign = 1.0 if action.name == "turn_left" else -1.0
  total = np.deg2rad(float(action.direction))
  duration = t[-1] + _DT
  # Yaw rate with a sin^2 profile integrating to `total` over the action.
  s = t / duration
  out["yaw_rate"] += sign * total / duration * 2 * np.sin(np.pi * s) ** 2
  steps = np.sin(2 * np.pi * 1.6 * t + action.phase0)
  env = np.sin(np.pi * s) ** 0.5
  out["knee_l"] += env * 0.45 * np.maximum(steps, 0)
  out["hip_flex_l"] += env * 0.3 * np.maximum(steps, 0)
  out["knee_r"] += env * 0.45 * np.maximum(-steps, 0)
  out["hip_flex_r"] += env * 0.3 * np.maximum(-steps, 0)
  out["spine_twist"] += sign * 0.25 * np.sin(np.pi * s)
  out["head_pitch"] += 0.05 * np.sin(np.pi * s)


def _sit(action: _Action, t, out):
  slow = _speed_factor(action, 1.35, 1.0, 0.7)
  down = 1.6 * slow
  seat = ease(t, [0, 0.2, 0.2 + down, 100], [0, 0, 1, 1])
  lean = ease(t, [0, 0.2, 0.2 + 0.6 * down, 0.2 + down, 100], [0, 0, 0.55, 0.2, 0.2])
  out["hip_flex_l"] += 1.45 * seat
  out["hip_flex_r"] += 1.45 * seat
  out["knee_l"] += 1.55 * seat
  out["knee_r"] += 1.55 * seat
  out["hip_abd_l"] += 0.12 * seat
  out["hip_abd_r"] += 0.12 * seat
  out["spine_bend"] += lean
  out["shoulder_flex_l"] += 0.5 * seat
  out["shoulder_flex_r"] += 0.5 * seat
  out["elbow_l"] += 0.6 * seat
  out["elbow_r"] += 0.6 * seat
  out["forward_speed"] -= 0.12 * np.gradient(seat, _DT)


def _kick(action: _Action, t, out):
  side, other = ("l", "r") if action.name == "kick_left" else ("r", "l")
  slow = _speed_factor(action, 1.35, 1.0, 0.7)
  u, active = _repeated(action, t, 0.15, 1.2 * slow)
  keys = [0, 0.3, 0.5, 0.62, 0.9, 1.0]
  out[f"hip_flex_{side}"] += ease(u, keys, [0, -0.3, 1.35, 1.2, 0, 0]) * active
  out[f"knee_{side}"] += ease(u, keys, [0, 1.3, 0.05, 0.3, 0.1, 0]) * active
  out[f"toe_{side}"] -= ease(u, keys, [0, 0, 0.5, 0.3, 0, 0]) * active
  out["spine_bend"] += ease(u, keys, [0, 0.1, -0.25, -0.15, 0, 0]) * active
  out[f"shoulder_flex_{other}"] += ease(u, keys, [0, -0.2, 0.7, 0.5, 0, 0]) * active
  out[f"shoulder_abd_{side}"] += ease(u, keys, [0, 0.2, 0.5, 0.4, 0, 0]) * active


# ---------------------------------------------------------------------------
# Skeleton: local joint angles -> positions.


def _rotation(x, y, z) -> np.ndarray:
  """Ry(y) @ Rx(x) @ Rz(z), batched: (...,) angles -> (..., 3, 3)."""
  cx, sx, cy, sy, cz, sz = (np.cos(x), np.sin(x), np.cos(y), np.sin(y), np.cos(z), np.sin(z))
  m = np.stack(
    [
      cy * cz + sy * sx * sz,
      sy * sx * cz - cy * sz,
      sy * cx,
      cx * sz,
      cx * cz,
      -sx,
      cy * sx * sz - sy * cz,
      sy * sz + cy * sx * cz,
      cy * cx,
    ],
    -1,
  )
  return m.reshape(x.shape + (3, 3))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Batched 3x3 products (NumPy's matmul is slow on tiny matrices)."""
  return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _local_angles(c: dict[str, np.ndarray]) -> np.ndarray:
  """Channels (each (..., T)) -> per-joint (x, y, z) angles (..., T, 22, 3).

  Signs: +X is the person's left, +Z forward. A negative X rotation swings a
  downward limb forward; a positive Z rotation swings it to the left.
  """
  shape = c["knee_l"].shape
  angles = np.zeros(shape + (22, 3))
  # Feet stay parallel to the floor unless the toes are actively pointed.
  for side, hip, knee, ankle, sign in (("l", 1, 4, 7, 1.0), ("r", 2, 5, 8, -1.0)):
    flex, bend = c[f"hip_flex_{side}"], c[f"knee_{side}"]
    angles[..., hip, 0] = -flex
    angles[..., hip, 2] = sign * c[f"hip_abd_{side}"]
    angles[..., knee, 0] = bend
    angles[..., ankle, 0] = flex - bend + c[f"toe_{side}"]
  angles[..., 0, 1] = c["pelvis_yaw"]
  for joint in (3, 6, 9):
    angles[..., joint, 0] = c["spine_bend"] / 3
    angles[..., joint, 1] = c["spine_twist"] / 3
  angles[..., 12, 0] = c["head_pitch"]
  for side, shoulder, elbow, sign in (("l", 16, 18, 1.0), ("r", 17, 19, -1.0)):
    angles[..., shoulder, 0] = -c[f"shoulder_flex_{side}"]
    angles[..., shoulder, 2] = sign * c[f"shoulder_abd_{side}"]
    angles[..., elbow, 0] = -c[f"elbow_{side}"]
    angles[..., elbow, 2] = sign * c[f"forearm_raise_{side}"]
  return angles


def forward_kinematics(angles: np.ndarray, heading: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Joint positions relative to the root: (N, T, 22, 3).

  Args:
    angles: (N, T, 22, 3) local (x, y, z) angles; joint j's rotation turns
      the bones to its children.
    heading: (N, T) yaw of the body.
    offsets: (N, 22, 3) rest offsets of each joint from its parent.
  """
  local = _rotation(angles[..., 0], angles[..., 1], angles[..., 2])
  zero = np.zeros_like(heading)
  frames = [_matmul(_rotation(zero, heading, zero), local[:, :, 0])]
  positions = [np.zeros(heading.shape + (3,))]
  for joint in range(1, 22):
    parent = _PARENTS[joint]
    offset = offsets[:, None, None, joint, :]
    positions.append(positions[parent] + (frames[parent] * offset).sum(-1))
    frames.append(_matmul(frames[parent], local[:, :, joint]))
  return np.stack(positions, axis=2)


def subject_offsets(rng: np.random.Generator, n: int) -> np.ndarray:
  """Per-subject bone offsets: height scale and leg/arm proportions."""
  height = rng.uniform(0.9, 1.1, size=(n, 1, 1))
  legs = rng.uniform(0.96, 1.04, size=(n, 1, 1))
  arms = rng.uniform(0.95, 1.05, size=(n, 1, 1))
  scale = np.ones((n, 22, 1))
  scale[:, list(_LEG_JOINTS)] *= legs
  scale[:, list(_ARM_JOINTS)] *= arms
  return _REST_OFFSETS[None] * height * scale


# ---------------------------------------------------------------------------
# Clips and splits.


def _sample_clip(rng: np.random.Generator):
  """(actions, caption, frames) of one clip, lengths within [40, 196]."""
  while True:
    if rng.random() < 0.7:
      names = [ACTIONS[rng.integers(len(ACTIONS))]]
    else:  # A pair; sitting down only ends a clip.
      first = [a for a in ACTIONS if a != "sit_down"]
      a = first[rng.integers(len(first))]
      rest = [b for b in ACTIONS if b != a]
      names = [a, rest[rng.integers(len(rest))]]
    actions = [_Action(name, rng, i == 0, i == len(names) - 1) for i, name in enumerate(names)]
    frames = [int(round(a.seconds() * FPS)) for a in actions]
    total = sum(frames)
    if total > _MAX_FRAMES:
      continue
    length = max(_MIN_FRAMES, -(-total // _UNIT) * _UNIT)
    caption = synthetic_captions.clip_caption(rng, [a.phrase for a in actions])
    return actions, caption, frames, length


def _clip_channels(actions, frames, length) -> dict[str, np.ndarray]:
  """Concatenated channel curves over `length` frames plus a held frame."""
  pieces = [a.curves(n) for a, n in zip(actions, frames)]
  idle = length - sum(frames)
  if idle:  # Stand (or stay seated) for the rest of the clip.
    last = pieces[-1]
    hold = {k: np.full(idle, v[-1]) for k, v in last.items()}
    for k in ("forward_speed", "side_speed", "yaw_rate", "lift"):
      hold[k][:] = 0.0
    pieces.append(hold)
  channels = {k: np.concatenate([p[k] for p in pieces]) for k in CHANNELS}
  # Hold the final pose for one extra frame (see the module docstring).
  return {k: np.concatenate([v, v[-1:]]) for k, v in channels.items()}


def clip_joints(
  channels: dict[str, np.ndarray],
  offsets: np.ndarray,
  start_heading: np.ndarray,
  start_xz: np.ndarray,
) -> np.ndarray:
  """Batched (N, T+1) channels -> grounded world joints (N, T+1, 22, 3)."""
  yaw_rate = channels["yaw_rate"].copy()
  yaw_rate[:, -1] = 0.0  # The held last frame does not turn.
  heading = start_heading[:, None] + np.cumsum(yaw_rate, axis=1) * _DT
  angles = _local_angles(channels)
  joints = forward_kinematics(angles, heading, offsets)
  sin, cos = np.sin(heading), np.cos(heading)
  fwd, side = channels["forward_speed"], channels["side_speed"]
  # Body frame: +Z forward, +X left; rotate by the heading about +Y.
  vx = cos * side + sin * fwd
  vz = -sin * side + cos * fwd
  step = np.stack([vx, vz], axis=-1) * _DT
  step[:, -1] = 0.0  # The held last frame does not move.
  xz = start_xz[:, None, :] + np.cumsum(step, axis=1) - step[:, :1]
  height = -joints[..., 1].min(axis=2) + channels["lift"]
  joints[..., 0] += xz[:, :, None, 0]
  joints[..., 2] += xz[:, :, None, 1]
  joints[..., 1] += height[:, :, None]
  return joints


def make_split(
  split: str,
  fmt: motion_formats.MotionFormat = motion_formats.HUMANML3D,
  seed: int = 0,
  num_examples: int | None = None,
  return_joints: bool = False,
) -> dict:
  """Generates one split, deterministically in (split, seed, num_examples).

  Returns dict(motion=(N, 196, 263) float32 features zero-padded,
  length=(N,) int32, caption=list of N str, action=(N,) int32 index into
  ACTIONS of the first action, second_action=(N,) int32 (-1 for one action));
  with `return_joints`, also joints: list of N float64 (length+1, 22, 3)
  world positions the features were computed from.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
  if fmt != motion_formats.HUMANML3D:
    raise ValueError(
      f"fmt must be the humanml3d format (the synthetic skeleton is SMPL-22), got {fmt.name!r}."
    )
  n = SPLITS[split] if num_examples is None else int(num_examples)
  if n < 1:
    raise ValueError(f"num_examples must be >= 1, got {n}.")
  started = time.perf_counter()
  rng = np.random.default_rng([seed, list(SPLITS).index(split)])
  clips = [_sample_clip(rng) for _ in range(n)]
  offsets = subject_offsets(rng, n)
  start_heading = rng.uniform(-np.pi, np.pi, size=n)
  start_xz = rng.uniform(-2.0, 2.0, size=(n, 2))
  lengths = np.array([c[3] for c in clips], np.int32)

  features = np.zeros((n, _MAX_FRAMES, fmt.feature_dim), np.float32)
  joints_out = [None] * n
  for length in np.unique(lengths):
    idx = np.nonzero(lengths == length)[0]
    per_clip = [_clip_channels(clips[i][0], clips[i][2], length) for i in idx]
    channels = {k: np.stack([c[k] for c in per_clip]) for k in CHANNELS}
    joints = clip_joints(channels, offsets[idx], start_heading[idx], start_xz[idx])
    features[idx, :length] = motion_lib.joints_to_features_batch(joints, fmt)
    if return_joints:
      for k, i in enumerate(idx):
        joints_out[i] = joints[k]
  logging.info("synthetic motion %s: %d clips in %.1f s", split, n, time.perf_counter() - started)
  out = {
    "motion": features,
    "length": lengths,
    "caption": [c[1] for c in clips],
    "action": np.array([ACTIONS.index(c[0][0].name) for c in clips], np.int32),
    "second_action": np.array(
      [ACTIONS.index(c[0][1].name) if len(c[0]) > 1 else -1 for c in clips], np.int32
    ),
  }
  if return_joints:
    out["joints"] = joints_out
  return out
