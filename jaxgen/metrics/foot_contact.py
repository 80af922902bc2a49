"""EDGE's Physical Foot Contact score (PFC): do the feet stay put while the body accelerates?

A dancer's root can only accelerate (other than falling) while a foot pushes
against the floor, and a pushing foot does not slide. EDGE (`eval/eval_pfc.py`)
scores each clip as the mean over frames of

    min(speed of the left foot joints) · min(speed of the right foot joints) · a_t / max_t a_t

where a_t is the norm of the root's acceleration with its upward component
clamped at >= 0 (falling needs no contact), foot speeds are horizontal, and
the minimum over a foot's joints (ankle, toes) means one planted joint
suffices. PFC is 10^4 times the mean over clips; lower is better.

As the reference: the root's acceleration at frame t + 1 is its second
difference x_{t+2} - 2 x_{t+1} + x_t; it is paired with the feet's
displacement x_{t+2} - x_{t+1}, so a clip of T frames has T - 2 terms. The
reference runs on joints in metres at 30 fps with z up; here joints are y up
by default (`up_axis`) and any `fps` works: foot speeds are in metres per
1/30 s (the per-frame displacement times fps / 30), so at 30 fps the values
are the reference's and at other rates they measure the same speed. The
acceleration is divided by its own maximum, so its units and the frame rate
cancel. Unlike the reference, which divides 0 by 0 (or scales rounding noise
up to 1), a clip whose root acceleration is zero up to the rounding of its
coordinates scores 0: nothing needs a planted foot. The reference scores a random sample of at
most 1000 clips; here every clip given is scored.

Host numpy in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxgen.data.motion_formats import HUMANML3D
from jaxgen.metrics.frechet import TooFewSamplesError

EDGE_FPS = 30.0  # EDGE's motion rate; foot speeds are displacements per 1/EDGE_FPS s.
PFC_SCALE = 1e4
MIN_FRAMES = 3  # one second difference

# (left foot joints, right foot joints) = ((ankle, toes), (ankle, toes)). The
# 22-joint HumanML3D rig is SMPL's first 22 joints, so both rigs share them.
SMPL_FEET = ((7, 10), (8, 11))
FEET_BY_NUM_JOINTS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
  HUMANML3D.num_joints: (HUMANML3D.left_foot, HUMANML3D.right_foot),
  24: SMPL_FEET,
}
_UP_AXES = {"y": 1, "z": 2}
# Rounding of a coordinate x is at most eps/2 · |x|; a second difference sums
# four such errors per axis, so 2·sqrt(3)·eps·|x| bounds its norm.
_ROUNDING_FACTOR = 4.0


def feet_of(num_joints: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(left, right) foot joint indices of the 22-joint HumanML3D or 24-joint SMPL rig."""
  if num_joints not in FEET_BY_NUM_JOINTS:
    raise ValueError(
      f"joints: the foot joints are known for {sorted(FEET_BY_NUM_JOINTS)} joints (SMPL order), "
      f"got {num_joints} joints; pass feet=((left...), (right...))"
    )
  return FEET_BY_NUM_JOINTS[num_joints]


def clip_foot_contact(
  joints: np.ndarray,
  *,
  fps: float,
  feet: tuple[Sequence[int], Sequence[int]] | None = None,
  up_axis: str = "y",
) -> float:
  """One clip's PFC term (before the 10^4 scale): mean_t minL_t · minR_t · a_t / max a.

  `joints` (T, J, 3) in metres at `fps`, `up_axis` up; `feet` the (left,
  right) joint indices, by default those of the 22- or 24-joint SMPL rig.
  """
  joints, dtype = _as_clip(joints)
  if not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  up = _UP_AXES.get(up_axis)
  if up is None:
    raise ValueError(f"up_axis must be one of {sorted(_UP_AXES)}, got {up_axis!r}")
  left, right = _check_feet(feet, joints.shape[1])

  root = joints[:, 0]
  acceleration = root[2:] - 2 * root[1:-1] + root[:-2]  # per frame^2; the scale cancels below
  acceleration[:, up] = np.maximum(acceleration[:, up], 0.0)
  magnitude = np.linalg.norm(acceleration, axis=-1)
  rounding = _ROUNDING_FACTOR * np.finfo(dtype).eps * np.abs(root).max()
  if magnitude.max() <= rounding:
    return 0.0
  normalized = magnitude / magnitude.max()

  horizontal = [axis for axis in range(3) if axis != up]
  step = joints[2:] - joints[1:-1]
  foot_speed = np.linalg.norm(step[..., horizontal], axis=-1) * (fps / EDGE_FPS)
  slowest_left = foot_speed[:, list(left)].min(-1)
  slowest_right = foot_speed[:, list(right)].min(-1)
  return float((slowest_left * slowest_right * normalized).mean())


def physical_foot_contact(
  clips: Sequence[np.ndarray],
  *,
  fps: float,
  feet: tuple[Sequence[int], Sequence[int]] | None = None,
  up_axis: str = "y",
) -> float:
  """PFC: 10^4 × the mean of `clip_foot_contact` over `clips` (each (T_i, J, 3) at `fps`)."""
  if len(clips) == 0:
    raise TooFewSamplesError("clips must hold at least one clip, got none")
  scores = [clip_foot_contact(c, fps=fps, feet=feet, up_axis=up_axis) for c in clips]
  return PFC_SCALE * float(np.mean(scores))


def _as_clip(joints: np.ndarray) -> tuple[np.ndarray, np.dtype]:
  joints = np.asarray(joints)
  if joints.ndim != 3 or joints.shape[-1] != 3:
    raise ValueError(f"joints must have shape (T, J, 3), got shape {joints.shape}")
  if len(joints) < MIN_FRAMES:
    raise TooFewSamplesError(
      f"joints must have at least {MIN_FRAMES} frames (a second difference), got {len(joints)}"
    )
  if not np.isfinite(joints).all():
    raise ValueError("joints must be finite, got NaN or inf")
  dtype = joints.dtype if np.issubdtype(joints.dtype, np.floating) else np.dtype(np.float64)
  return joints.astype(np.float64), dtype


def _check_feet(feet, num_joints: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  if feet is None:
    return feet_of(num_joints)
  if len(feet) != 2 or not all(len(foot) > 0 for foot in feet):
    raise ValueError(f"feet must be (left joints, right joints), each non-empty, got {feet!r}")
  indices = [int(i) for foot in feet for i in foot]
  if min(indices) < 0 or max(indices) >= num_joints:
    raise ValueError(f"feet must index the {num_joints} joints, got {feet!r}")
  return tuple(int(i) for i in feet[0]), tuple(int(i) for i in feet[1])
