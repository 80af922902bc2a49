"""AIST++ / Bailando motion features behind FID_k and FID_g.

Both take one dance as (T, 24, 3) SMPL joint positions in metres, y up, with
its frame rate `fps` given explicitly, and return one vector per dance;
`dance.fid_k` / `fid_g` compare sets of these vectors. The reference runs on
AIST++ at 60 fps, and its frame windows (the +-2-frame averaging below) are
in 60 fps frames: values comparable to published ones need 60 fps input.
The one conversion for other data, e.g. text-to-motion joints (HumanML3D:
20 fps, 22 joints), is `to_aist_skeleton(joints, fps)`: cubic-spline
resampling to 60 fps and the two SMPL hand joints (absent from the 22-joint
skeleton) placed at the wrists; then call these with fps=60 and the beat
functions of `dance` with fps=60 too.

- Kinetic features (72 = 24 joints x 3), after Onuma et al. (2008) as coded
  in the AIST++ API (`extract_kinetic_features`): per joint, the mean over
  frames 1..T-1 of the squared horizontal and vertical speed, and the mean
  acceleration magnitude ("energy expenditure"). Velocity and acceleration at
  frame i are averaged over the finite differences in a window of +-2 frames
  clipped to the sequence; frame time 1/fps (1/60 s in the reference).
- Geometric features (32), the boolean relational features of Müller et al.
  (2005) as coded in the AIST++ API (`extract_manual_features`, Bailando's
  `manual_new`): 32 yes/no tests per frame 1..T-1 (is the right wrist above
  the neck, is the knee bent, is the root moving fast, ...), averaged over
  frames. Thresholds scale with the humerus length, shoulder and hip width of
  the SMPL template.

Reference quirks reproduced on purpose, so values equal the published code's:
the geometric velocity tests use half the frame time, 1/(2 fps) (the
reference's 1/120 s for AIST++'s 1/60);
the "move" tests measure the velocity of their *third* joint (the fourth is
unused); NaNs from zero-length directions compare False. Bailando evaluates
the first 1200 frames after subtracting the first frame's root position;
both features are translation invariant, so only the truncation is the
caller's.

Host numpy in float64; results are float32 like the reference's.
"""

from __future__ import annotations

import numpy as np
import scipy.interpolate

from jaxgen.metrics.frechet import TooFewSamplesError

SMPL_JOINT_NAMES = (
  "root",
  "lhip",
  "rhip",
  "belly",
  "lknee",
  "rknee",
  "spine",
  "lankle",
  "rankle",
  "chest",
  "ltoes",
  "rtoes",
  "neck",
  "linshoulder",
  "rinshoulder",
  "head",
  "lshoulder",
  "rshoulder",
  "lelbow",
  "relbow",
  "lwrist",
  "rwrist",
  "lhand",
  "rhand",
)
NUM_JOINTS = len(SMPL_JOINT_NAMES)
KINETIC_FEATURE_DIM = 3 * NUM_JOINTS
GEOMETRIC_FEATURE_DIM = 32
AIST_FPS = 60.0
SLIDING_WINDOW = 2  # Frames at AIST_FPS.
MIN_FRAMES = 3  # the acceleration window is empty at 2 frames

# Body proportions of the SMPL template joints the reference hard-codes.
_TEMPLATE = {
  "lshoulder": (1.99113488e-01, 2.36807942e-01, -1.80702247e-02),
  "rshoulder": (-1.91692337e-01, 2.36928746e-01, -1.23055102e-02),
  "lelbow": (4.54445392e-01, 2.21158922e-01, -4.10167128e-02),
  "lhip": (5.64076714e-02, -3.23069185e-01, 1.09197125e-02),
  "rhip": (-6.24834076e-02, -3.31302464e-01, 1.50412619e-02),
}


def _template_distance(a: str, b: str) -> float:
  return float(np.linalg.norm(np.subtract(_TEMPLATE[a], _TEMPLATE[b])))


HUMERUS_LENGTH = _template_distance("lshoulder", "lelbow")
SHOULDER_WIDTH = _template_distance("lshoulder", "rshoulder")
HIP_WIDTH = _template_distance("lhip", "rhip")

# The 32 relational features in the reference's order:
# (test, four points, threshold in metres (per second for velocities) or an
# open angle range in degrees). Points are joint names or the virtual points
# zero, y_unit, minus_y_unit and y_min (the lowest joint's height on the y axis).
_HL, _SW, _HW = HUMERUS_LENGTH, SHOULDER_WIDTH, HIP_WIDTH
GEOMETRIC_FEATURES = (
  ("nmove", ("neck", "rhip", "lhip", "rwrist"), 1.8 * _HL),
  ("nmove", ("neck", "lhip", "rhip", "lwrist"), 1.8 * _HL),
  ("nplane", ("chest", "neck", "neck", "rwrist"), 0.2 * _HL),
  ("nplane", ("chest", "neck", "neck", "lwrist"), 0.2 * _HL),
  ("move", ("belly", "chest", "chest", "rwrist"), 1.8 * _HL),
  ("move", ("belly", "chest", "chest", "lwrist"), 1.8 * _HL),
  ("angle", ("relbow", "rshoulder", "relbow", "rwrist"), (0.0, 110.0)),
  ("angle", ("lelbow", "lshoulder", "lelbow", "lwrist"), (0.0, 110.0)),
  ("nplane", ("lshoulder", "rshoulder", "lwrist", "rwrist"), 2.5 * _SW),
  ("move", ("lwrist", "rwrist", "rwrist", "lwrist"), 1.4 * _HL),
  ("move", ("rwrist", "root", "lwrist", "root"), 1.4 * _HL),
  ("move", ("lwrist", "root", "rwrist", "root"), 1.4 * _HL),
  ("fast", ("rwrist",), 2.5 * _HL),
  ("fast", ("lwrist",), 2.5 * _HL),
  ("plane", ("root", "lhip", "ltoes", "rankle"), 0.38 * _HL),
  ("plane", ("root", "rhip", "rtoes", "lankle"), 0.38 * _HL),
  ("nplane", ("zero", "y_unit", "y_min", "rankle"), 1.2 * _HL),
  ("nplane", ("zero", "y_unit", "y_min", "lankle"), 1.2 * _HL),
  ("nplane", ("lhip", "rhip", "lankle", "rankle"), 2.1 * _HW),
  ("angle", ("rknee", "rhip", "rknee", "rankle"), (0.0, 110.0)),
  ("angle", ("lknee", "lhip", "lknee", "lankle"), (0.0, 110.0)),
  ("fast", ("rankle",), 2.5 * _HL),
  ("fast", ("lankle",), 2.5 * _HL),
  ("angle", ("neck", "root", "rshoulder", "relbow"), (25.0, 180.0)),
  ("angle", ("neck", "root", "lshoulder", "lelbow"), (25.0, 180.0)),
  ("angle", ("neck", "root", "rhip", "rknee"), (50.0, 180.0)),
  ("angle", ("neck", "root", "lhip", "lknee"), (50.0, 180.0)),
  ("plane", ("rankle", "neck", "lankle", "root"), 0.5 * _HL),
  ("angle", ("neck", "root", "zero", "y_unit"), (70.0, 110.0)),
  ("nplane", ("zero", "minus_y_unit", "y_min", "rwrist"), -1.2 * _HL),
  ("nplane", ("zero", "minus_y_unit", "y_min", "lwrist"), -1.2 * _HL),
  ("fast", ("root",), 2.3 * _HL),
)
assert len(GEOMETRIC_FEATURES) == GEOMETRIC_FEATURE_DIM


def to_aist_skeleton(joints: np.ndarray, fps: float) -> np.ndarray:
  """(T, 22 or 24, 3) joints at `fps` -> (T', 24, 3) at 60 fps, the features' convention.

  The 22-joint skeleton (HumanML3D, SMPL order) lacks SMPL's hand joints 22
  and 23; they are placed at the wrists (20, 21). Time is resampled with a
  cubic spline through the frames: T' = floor((T - 1) * 60 / fps) + 1 frames
  spanning the same duration.
  """
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[1:] not in ((22, 3), (NUM_JOINTS, 3)):
    raise ValueError(
      f"joints must have shape (T, 22, 3) or (T, {NUM_JOINTS}, 3), got shape {joints.shape}"
    )
  if not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  if len(joints) < 2:
    raise TooFewSamplesError(f"joints must have at least 2 frames, got {len(joints)}")
  if not np.isfinite(joints).all():
    raise ValueError("joints must be finite, got NaN or inf")
  if joints.shape[1] == 22:
    joints = np.concatenate([joints, joints[:, 20:22]], axis=1)
  if fps == AIST_FPS:
    return joints
  duration = (len(joints) - 1) / fps
  times = np.arange(int(np.floor(duration * AIST_FPS + 1e-9)) + 1) / AIST_FPS
  return scipy.interpolate.CubicSpline(np.arange(len(joints)) / fps, joints, axis=0)(times)


def kinetic_features(
  joints: np.ndarray, *, fps: float, sliding_window: int = SLIDING_WINDOW, up_axis: str = "y"
) -> np.ndarray:
  """(72,) kinetic features of one (T, 24, 3) dance: per joint [E_horizontal, E_vertical, effort].

  E_horizontal / E_vertical: mean over frames i = 1..T-1 of the squared norm
  of the window-averaged velocity's horizontal / vertical part (units^2/s^2);
  effort: mean of the window-averaged acceleration's norm (units/s^2), with
  frame time 1/fps. `sliding_window` is in frames (the reference's 2 at
  60 fps; see `to_aist_skeleton` for other rates).
  """
  x = _as_dance(joints)
  if not fps > 0 or sliding_window < 0:
    raise ValueError(f"fps must be > 0 and sliding_window >= 0, got {fps} and {sliding_window}")
  frame_time = 1.0 / fps
  vertical = {"y": 1, "z": 2}.get(up_axis)
  if vertical is None:
    raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
  num_frames = len(x)
  i = np.arange(1, num_frames)
  # The window's finite differences x[m] - x[m-1], m in [lo, hi], telescope to
  # x[hi] - x[lo - 1]; the reference sums them one by one.
  lo = np.maximum(i - sliding_window, 1)
  hi = np.minimum(i + sliding_window, num_frames - 1)
  velocity = (x[hi] - x[lo - 1]) / ((hi - lo + 1)[:, None, None] * frame_time)
  horizontal = np.delete(velocity, vertical, axis=-1)
  energy_horizontal = (horizontal**2).sum(-1).mean(0)
  energy_vertical = (velocity[..., vertical] ** 2).mean(0)
  # Second differences x[m+1] - 2 x[m] + x[m-1], m in [lo, hi], telescope likewise.
  hi = np.minimum(i + sliding_window, num_frames - 2)
  acceleration = ((x[hi + 1] - x[hi]) - (x[lo] - x[lo - 1])) / (
    (hi - lo + 1)[:, None, None] * frame_time**2
  )
  effort = np.linalg.norm(acceleration, axis=-1).mean(0)
  return np.stack([energy_horizontal, energy_vertical, effort], -1).reshape(-1).astype(np.float32)


def geometric_features(joints: np.ndarray, *, fps: float) -> np.ndarray:
  """(32,) geometric features of one (T, 24, 3) dance, y up: the fraction of frames 1..T-1
  for which each relational test of `GEOMETRIC_FEATURES` holds.

  Velocities are displacement per frame over 1/(2 fps), the reference's
  1/120 s at 60 fps.
  """
  x = _as_dance(joints)
  if not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  frame_time = 0.5 / fps
  current, previous = x[1:], x[:-1]
  tests = np.stack(
    [
      _relational_test(kind, points, param, current, previous, frame_time)
      for kind, points, param in GEOMETRIC_FEATURES
    ],
    axis=-1,
  )
  return tests.astype(np.float32).mean(0)


def dance_features(joints: np.ndarray, *, fps: float) -> tuple[np.ndarray, np.ndarray]:
  """(kinetic (72,), geometric (32,)) of one dance, as Bailando's evaluation computes them."""
  return kinetic_features(joints, fps=fps), geometric_features(joints, fps=fps)


def _point(name: str, frames: np.ndarray) -> np.ndarray:
  """(T', 3) positions of a joint or of a virtual point in each frame."""
  if name == "zero":
    return np.zeros((len(frames), 3))
  if name in ("y_unit", "minus_y_unit"):
    return np.tile([0.0, 1.0 if name == "y_unit" else -1.0, 0.0], (len(frames), 1))
  if name == "y_min":
    lowest = np.zeros((len(frames), 3))
    lowest[:, 1] = frames[:, :, 1].min(1)
    return lowest
  return frames[:, SMPL_JOINT_NAMES.index(name)]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(-1)


def _norm(a: np.ndarray) -> np.ndarray:
  return np.linalg.norm(a, axis=-1)


def _relational_test(kind, points, param, current, previous, frame_time) -> np.ndarray:
  """(T-1,) booleans of one relational feature; NaN (degenerate geometry) compares False."""
  now = [_point(p, current) for p in points]
  with np.errstate(invalid="ignore", divide="ignore"):
    if kind == "fast":
      before = _point(points[0], previous)
      return _norm(now[0] - before) / frame_time > param
    if kind in ("move", "nmove"):
      before = [_point(p, previous) for p in points]
      # "move" tracks the third point along j1 -> j2; "nmove" the fourth along
      # the normal of the plane (j1, j2, j3).
      moving = 2 if kind == "move" else 3
      velocity = (now[moving] - now[0]) - (before[moving] - before[0])
      if kind == "move":
        direction = now[1] - now[0]
      else:
        direction = np.cross(now[2] - now[0], now[1] - now[0])
      return _dot(velocity, direction) / _norm(direction) / frame_time > param
    if kind == "plane":
      normal = np.cross(now[2] - now[0], now[1] - now[0])
      return _dot(normal, now[3] - now[0]) / _norm(normal) > param
    if kind == "nplane":
      normal = now[1] - now[0]
      return _dot(normal, now[3] - now[2]) / _norm(normal) > param
    if kind == "angle":
      a, b = now[1] - now[0], now[3] - now[2]
      # Clipping only turns NaN from rounding past +-1 into 0 or 180 degrees,
      # which every (open) range here excludes just as NaN does.
      cosine = np.clip(_dot(a, b) / (_norm(a) * _norm(b)), -1.0, 1.0)
      angle = np.degrees(np.arccos(cosine))
      low, high = param
      return (angle > low) & (angle < high)
  raise ValueError(f"unknown relational feature kind {kind!r}")


def _as_dance(joints: np.ndarray) -> np.ndarray:
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
    raise ValueError(
      f"joints must have shape (T, {NUM_JOINTS}, 3) (SMPL joints), got shape {joints.shape}"
    )
  if len(joints) < MIN_FRAMES:
    raise TooFewSamplesError(f"joints must have at least {MIN_FRAMES} frames, got {len(joints)}")
  if not np.isfinite(joints).all():
    raise ValueError("joints must be finite, got NaN or inf")
  return joints
