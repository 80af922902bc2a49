"""Motion data set formats (HumanML3D, KIT-ML): skeletons, feature layouts, input checks.

A `MotionFormat` holds what `jaxgen.data.motion` needs to turn one data set's
joint positions into its feature vectors and back: the joint count and
feature width, frame rate and clip lengths, the rest directions and
kinematic chains of the skeleton, the hip/shoulder joints that define the
facing direction and the foot joints of the contact features. The checks
below validate feature and joint arrays against a format before anything
is computed, and pad, crop and mask clips to the lengths models see.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class InvalidMotionError(ValueError):
  """A motion array does not fit its format (width, length, NaN frames)."""


@dataclasses.dataclass(frozen=True)
class MotionFormat:
  """Skeleton and feature layout of one motion data set.

  Attributes:
    name: data set name.
    num_joints: J.
    feature_dim: D = 4 + 3(J-1) + 6(J-1) + 3J + 4.
    fps: frames per second.
    max_frames: longest clip models see (HumanML3D crops to 196).
    min_frames: shortest clip the reference data loader keeps.
    raw_offsets: (J, 3) unit rest direction of the bone ending at each joint
      (the reference `*_raw_offsets`), the targets of inverse kinematics.
    kinematic_chain: joint index chains, each starting at its parent joint.
    face_joints: (right hip, left hip, right shoulder, left shoulder).
    left_foot, right_foot: (heel/ankle, toe) joint indices.
    contact_threshold: squared per-frame displacement below which a foot
      joint counts as in contact.
    joint_names: one name per joint.
  """

  name: str
  num_joints: int
  feature_dim: int
  fps: float
  max_frames: int
  min_frames: int = 40
  raw_offsets: tuple[tuple[float, float, float], ...] = ()
  kinematic_chain: tuple[tuple[int, ...], ...] = ()
  face_joints: tuple[int, int, int, int] = (0, 0, 0, 0)
  left_foot: tuple[int, int] = (0, 0)
  right_foot: tuple[int, int] = (0, 0)
  contact_threshold: float = 0.002
  joint_names: tuple[str, ...] = ()

  def __post_init__(self):
    j = self.num_joints
    expected = 4 + 9 * (j - 1) + 3 * j + 4
    if self.feature_dim != expected:
      raise ValueError(
        f"feature_dim of format {self.name!r} must be "
        f"4 + 9(J-1) + 3J + 4 = {expected} for {j} joints, got "
        f"{self.feature_dim}."
      )
    if self.raw_offsets and len(self.raw_offsets) != j:
      raise ValueError(
        f"raw_offsets of format {self.name!r} must have {j} rows, got {len(self.raw_offsets)}."
      )

  @property
  def parents(self) -> tuple[int, ...]:
    """Parent joint of every joint (-1 for the root), from the chains."""
    parents = [-1] * self.num_joints
    for chain in self.kinematic_chain:
      for parent, child in zip(chain[:-1], chain[1:]):
        parents[child] = parent
    return tuple(parents)

  @property
  def slices(self) -> dict[str, slice]:
    """Where each feature group lies in the D-dim vector."""
    j = self.num_joints
    bounds = {
      "root_angular_velocity": 1,
      "root_linear_velocity": 2,
      "root_height": 1,
      "ric": 3 * (j - 1),
      "rot6d": 6 * (j - 1),
      "local_velocity": 3 * j,
      "foot_contact": 4,
    }
    out, start = {}, 0
    for key, width in bounds.items():
      out[key] = slice(start, start + width)
      start += width
    return out


_T2M_RAW_OFFSETS = (
  (0, 0, 0),
  (1, 0, 0),
  (-1, 0, 0),
  (0, 1, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, 1, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, 1, 0),
  (0, 0, 1),
  (0, 0, 1),
  (0, 1, 0),
  (1, 0, 0),
  (-1, 0, 0),
  (0, 0, 1),
  (0, -1, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, -1, 0),
)
_KIT_RAW_OFFSETS = (
  (0, 0, 0),
  (0, 1, 0),
  (0, 1, 0),
  (0, 1, 0),
  (0, 1, 0),
  (1, 0, 0),
  (0, -1, 0),
  (0, -1, 0),
  (-1, 0, 0),
  (0, -1, 0),
  (0, -1, 0),
  (1, 0, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, 0, 1),
  (0, 0, 1),
  (-1, 0, 0),
  (0, -1, 0),
  (0, -1, 0),
  (0, 0, 1),
  (0, 0, 1),
)

SMPL_JOINT_NAMES = (
  "pelvis",
  "left_hip",
  "right_hip",
  "spine1",
  "left_knee",
  "right_knee",
  "spine2",
  "left_ankle",
  "right_ankle",
  "spine3",
  "left_foot",
  "right_foot",
  "neck",
  "left_collar",
  "right_collar",
  "head",
  "left_shoulder",
  "right_shoulder",
  "left_elbow",
  "right_elbow",
  "left_wrist",
  "right_wrist",
)
KIT_JOINT_NAMES = (
  "root",
  "torso",
  "chest",
  "neck",
  "head",
  "left_shoulder",
  "left_elbow",
  "left_wrist",
  "right_shoulder",
  "right_elbow",
  "right_wrist",
  "right_hip",
  "right_knee",
  "right_ankle",
  "right_heel",
  "right_toe",
  "left_hip",
  "left_knee",
  "left_ankle",
  "left_heel",
  "left_toe",
)

HUMANML3D = MotionFormat(
  name="humanml3d",
  num_joints=22,
  feature_dim=263,
  fps=20,
  max_frames=196,
  min_frames=40,
  raw_offsets=_T2M_RAW_OFFSETS,
  kinematic_chain=(
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
  ),
  face_joints=(2, 1, 17, 16),
  left_foot=(7, 10),
  right_foot=(8, 11),
  contact_threshold=0.002,
  joint_names=SMPL_JOINT_NAMES,
)

# KIT-ML positions are not in metres (its skeleton is several times larger), so
# the reference uses a contact threshold of 0.05 and keeps clips >= 24 frames.
KIT_ML = MotionFormat(
  name="kit_ml",
  num_joints=21,
  feature_dim=251,
  fps=12.5,
  max_frames=196,
  min_frames=24,
  raw_offsets=_KIT_RAW_OFFSETS,
  kinematic_chain=(
    (0, 11, 12, 13, 14, 15),
    (0, 16, 17, 18, 19, 20),
    (0, 1, 2, 3, 4),
    (3, 5, 6, 7),
    (3, 8, 9, 10),
  ),
  face_joints=(11, 16, 5, 8),
  left_foot=(19, 20),
  right_foot=(14, 15),
  contact_threshold=0.05,
  joint_names=KIT_JOINT_NAMES,
)

FORMATS: dict[str, MotionFormat] = {f.name: f for f in (HUMANML3D, KIT_ML)}


def get_format(name: str | MotionFormat) -> MotionFormat:
  """The format called `name` ("humanml3d" or "kit_ml")."""
  if isinstance(name, MotionFormat):
    return name
  if name not in FORMATS:
    raise ValueError(f"motion format must be one of {sorted(FORMATS)}, got {name!r}.")
  return FORMATS[name]


# ---------------------------------------------------------------------------
# Input checks.


def check_motion(features: Any, fmt: MotionFormat = HUMANML3D, name: str = "motion") -> np.ndarray:
  """Checks a (..., T, D) feature array; returns it as a NumPy array.

  Raises InvalidMotionError naming `name` for a wrong width, zero frames,
  more than `fmt.max_frames` frames or non-finite frames.
  """
  features = np.asarray(features)
  if features.ndim < 2:
    raise InvalidMotionError(
      f"{name} must have shape (..., T, {fmt.feature_dim}), got shape {features.shape}."
    )
  if features.shape[-1] != fmt.feature_dim:
    raise InvalidMotionError(
      f"{name} must have {fmt.feature_dim} features per frame "
      f"({fmt.name}), got width {features.shape[-1]} (shape "
      f"{features.shape})."
    )
  length = features.shape[-2]
  if length == 0:
    raise InvalidMotionError(
      f"{name} must have at least one frame, got 0 (shape {features.shape})."
    )
  if length > fmt.max_frames:
    raise InvalidMotionError(
      f"{name} must have at most {fmt.max_frames} frames ({fmt.name}), got {length}."
    )
  finite = np.isfinite(features).all(axis=-1)
  if not finite.all():
    frames = np.unique(np.nonzero(finite.reshape(-1, length) == 0)[1])
    raise InvalidMotionError(
      f"{name} must be finite, got NaN/inf in frames {frames[:10].tolist()}."
    )
  return features


def check_joints(joints: Any, fmt: MotionFormat = HUMANML3D, name: str = "joints") -> np.ndarray:
  """Checks a (T, J, 3) joint-position array of at least two frames."""
  joints = np.asarray(joints)
  if joints.ndim != 3 or joints.shape[1:] != (fmt.num_joints, 3):
    raise InvalidMotionError(
      f"{name} must have shape (T, {fmt.num_joints}, 3) ({fmt.name}), got {joints.shape}."
    )
  if joints.shape[0] < 2:
    raise InvalidMotionError(
      f"{name} must have at least 2 frames (features need one frame more), got {joints.shape[0]}."
    )
  if not np.isfinite(joints).all():
    frames = np.nonzero(~np.isfinite(joints).all(axis=(1, 2)))[0]
    raise InvalidMotionError(
      f"{name} must be finite, got NaN/inf in frames {frames[:10].tolist()}."
    )
  return joints


def length_mask(lengths: Any, max_frames: int) -> np.ndarray:
  """(N,) lengths -> (N, max_frames) bool mask, True on real frames."""
  lengths = np.asarray(lengths)
  if lengths.ndim != 1:
    raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}.")
  if (lengths < 1).any() or (lengths > max_frames).any():
    raise InvalidMotionError(
      f"lengths must be in [1, {max_frames}], got min {lengths.min()} max {lengths.max()}."
    )
  return np.arange(max_frames)[None, :] < lengths[:, None]


def pad_motion(features: np.ndarray, max_frames: int) -> np.ndarray:
  """Zero-pads (T, D) features to (max_frames, D)."""
  if features.shape[0] > max_frames:
    raise InvalidMotionError(
      f"features must have at most {max_frames} frames, got {features.shape[0]}."
    )
  out = np.zeros((max_frames,) + features.shape[1:], features.dtype)
  out[: features.shape[0]] = features
  return out


def crop_motion(
  features: np.ndarray, rng: np.random.Generator, unit: int = 4, max_frames: int = 196
) -> np.ndarray:
  """Random window of a clip, as the reference training data loader does.

  The length becomes a multiple of `unit`, at most `max_frames` (the
  format's `max_frames`, 196 for both formats), and one unit shorter with
  probability 1/3, for augmentation; the window starts uniformly at random.
  Clips of 196..199 frames thus give 196 or 192 frames as in the reference
  (whose loader never sees 200 frames or more); longer clips give a random
  196- or 192-frame window instead of exceeding the cap.
  """
  length = features.shape[0]
  if unit < 1 or max_frames < unit:
    raise ValueError(f"unit must be in [1, max_frames={max_frames}], got {unit}.")
  if length < unit:
    raise InvalidMotionError(
      f"features must have at least {unit} frames to crop to a multiple of {unit}, got {length}."
    )
  units = min(length, max_frames) // unit
  if units > 1 and rng.integers(3) == 2:
    units -= 1
  crop = units * unit
  start = int(rng.integers(0, length - crop + 1))
  return features[start : start + crop]
