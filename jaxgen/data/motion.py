"""Human motion representation of HumanML3D (Guo et al., 2022) and KIT-ML.

A motion is a sequence of skeleton poses at a fixed frame rate. Models see it
as the "redundant" feature vector of HumanML3D, per frame t:

  [0:1]   root angular velocity about Y (half-angle, radians per frame)
  [1:3]   root linear velocity in XZ, in the body's facing frame
  [3:4]   root height
  [4:4+3(J-1)]          joint positions relative to the root, rotated so the
                        body faces +Z ("rotation invariant", RIC)
  [..:..+6(J-1)]        continuous 6D rotations of every non-root joint
                        (first two columns of the rotation matrix), from
                        inverse kinematics of the kinematic chain
  [..:..+3J]            joint velocities, rotated into the facing frame
  [-4:]                 foot contacts (left heel, left toe, right heel,
                        right toe), 1 when the squared displacement per frame
                        is below a threshold

J = 22 (SMPL body, HumanML3D: D = 263) or 21 (KIT-ML: D = 251). Joint positions
-> features follows the reference preprocessing (`process_file` of HumanML3D's
`motion_representation`), including two quirks so that features computed here
match the released ones: the facing direction used for the per-frame root
rotation swaps the two hips (HumanML3D issue #131: across = (l_hip - r_hip) +
(r_shoulder - l_shoulder); the shoulders dominate so the direction is still
forward) and is smoothed over time with a Gaussian of sigma 20 frames. The
retargeting to one canonical skeleton (`uniform_skeleton`) is not done here:
joints are expected on the format's skeleton already.

Features -> joint positions is `recover_from_ric`: it integrates the root
rotation and velocity and places the RIC positions around the root. It runs on
NumPy arrays in NumPy (keeping float64) and on JAX arrays (or tracers) in
`jax.numpy`, so it works inside jitted losses. The recovered motion equals
the processed one up to the (yaw) facing of frame 0, so joints -> features ->
joints -> features reproduces the features (except the last frame, whose
velocities need one frame more).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage


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


def crop_motion(features: np.ndarray, rng: np.random.Generator, unit: int = 4) -> np.ndarray:
  """Random window of a clip, as the reference training data loader does.

  The length becomes a multiple of `unit` (one unit shorter with probability
  1/3, for augmentation); the window starts uniformly at random. Clips of
  196..199 frames thus never exceed 196.
  """
  length = features.shape[0]
  if length < unit:
    raise InvalidMotionError(
      f"features must have at least {unit} frames to crop to a multiple of {unit}, got {length}."
    )
  units = length // unit
  if units > 1 and rng.integers(3) == 2:
    units -= 1
  crop = units * unit
  start = int(rng.integers(0, length - crop + 1))
  return features[start : start + crop]


# ---------------------------------------------------------------------------
# Quaternions (w, x, y, z), written once for NumPy and jax.numpy (`xp`).


def _xp(x: Any):
  return np if isinstance(x, np.ndarray) else jnp


def qinv(q):
  return q * _xp(q).asarray([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def qmul(q, r):
  """Hamilton product q * r."""
  xp = _xp(q)
  w0, x0, y0, z0 = (q[..., i] for i in range(4))
  w1, x1, y1, z1 = (r[..., i] for i in range(4))
  return xp.stack(
    [
      w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1,
      w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
      w0 * y1 - x0 * z1 + y0 * w1 + z0 * x1,
      w0 * z1 + x0 * y1 - y0 * x1 + z0 * w1,
    ],
    axis=-1,
  )


def qrot(q, v):
  """Rotates vectors v (..., 3) by unit quaternions q (..., 4)."""
  xp = _xp(v)
  qvec = q[..., 1:]
  uv = xp.cross(qvec, v)
  uuv = xp.cross(qvec, uv)
  return v + 2.0 * (q[..., :1] * uv + uuv)


def qbetween(v0, v1):
  """Shortest-arc unit quaternion rotating direction v0 onto v1."""
  xp = _xp(v1)
  w = xp.sqrt((v0**2).sum(-1, keepdims=True) * (v1**2).sum(-1, keepdims=True)) + (v0 * v1).sum(
    -1, keepdims=True
  )
  q = xp.concatenate([w, xp.cross(v0, v1)], axis=-1)
  return q / xp.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_matrix(q):
  xp = _xp(q)
  r, i, j, k = (q[..., n] for n in range(4))
  two_s = 2.0 / (q * q).sum(-1)
  m = xp.stack(
    [
      1 - two_s * (j * j + k * k),
      two_s * (i * j - k * r),
      two_s * (i * k + j * r),
      two_s * (i * j + k * r),
      1 - two_s * (i * i + k * k),
      two_s * (j * k - i * r),
      two_s * (i * k - j * r),
      two_s * (j * k + i * r),
      1 - two_s * (i * i + j * j),
    ],
    axis=-1,
  )
  return m.reshape(q.shape[:-1] + (3, 3))


def quaternion_to_cont6d(q):
  """The first two columns of the rotation matrix, concatenated."""
  m = quaternion_to_matrix(q)
  return _xp(q).concatenate([m[..., 0], m[..., 1]], axis=-1)


# ---------------------------------------------------------------------------
# Joint positions -> features (host side, NumPy, batched over clips).


def _facing_direction(joints: np.ndarray, face_joints, swap_hips: bool) -> np.ndarray:
  """Unit forward direction (..., 3) in XZ from hips and shoulders."""
  r_hip, l_hip, r_shoulder, l_shoulder = face_joints
  if swap_hips:  # The reference IK's unpacking order (HumanML3D issue #131).
    r_hip, l_hip = l_hip, r_hip
  across = (joints[..., r_hip, :] - joints[..., l_hip, :]) + (
    joints[..., r_shoulder, :] - joints[..., l_shoulder, :]
  )
  across = across / np.linalg.norm(across, axis=-1, keepdims=True)
  return np.cross(np.array([0.0, 1.0, 0.0]), across)


def inverse_kinematics(
  joints: np.ndarray, fmt: MotionFormat = HUMANML3D, smooth_forward: bool = True
) -> np.ndarray:
  """Per-joint local quaternions (N, T, J, 4) of joints (N, T, J, 3).

  The reference's `Skeleton.inverse_kinematics_np`: the root quaternion turns
  the (time-smoothed) facing direction onto +Z; along each chain, a joint's
  quaternion is the shortest arc from its raw rest direction to its bone,
  expressed relative to the rotation accumulated along that chain (every
  chain, including the arms that start at the chest, starts from the root's).
  """
  forward = _facing_direction(joints, fmt.face_joints, swap_hips=True)
  if smooth_forward:
    forward = ndimage.gaussian_filter1d(forward, 20, axis=-2, mode="nearest")
  forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
  root_quat = qbetween(forward, np.broadcast_to([0.0, 0.0, 1.0], forward.shape))
  quats = np.zeros(joints.shape[:-1] + (4,))
  quats[..., 0, :] = root_quat
  raw = np.asarray(fmt.raw_offsets, np.float64)
  for chain in fmt.kinematic_chain:
    accumulated = root_quat
    for parent, child in zip(chain[:-1], chain[1:]):
      bone = joints[..., child, :] - joints[..., parent, :]
      bone = bone / np.linalg.norm(bone, axis=-1, keepdims=True)
      swing = qbetween(np.broadcast_to(raw[child], bone.shape), bone)
      local = qmul(qinv(accumulated), swing)
      quats[..., child, :] = local
      accumulated = qmul(accumulated, local)
  return quats


def _foot_contacts(positions: np.ndarray, fmt: MotionFormat) -> np.ndarray:
  """(N, T+1, J, 3) -> (N, T, 4) float contacts: left heel/toe, right."""
  feet = list(fmt.left_foot) + list(fmt.right_foot)
  step = positions[..., 1:, feet, :] - positions[..., :-1, feet, :]
  return ((step**2).sum(-1) < fmt.contact_threshold).astype(positions.dtype)


def joints_to_features_batch(joints: np.ndarray, fmt: MotionFormat = HUMANML3D) -> np.ndarray:
  """(N, T+1, J, 3) joint positions (Y up, metres) -> (N, T, D) features.

  Clips in a batch share one length; see `joints_to_features`.
  """
  positions = np.array(joints, dtype=np.float64)  # A copy we may modify.
  num_joints = fmt.num_joints

  # Floor at y = 0, root at the XZ origin, frame 0 facing +Z.
  positions[..., 1] -= positions[..., 1].min(axis=(-2, -1))[:, None, None]
  positions -= positions[:, :1, :1, :] * np.array([1.0, 0.0, 1.0])
  forward0 = _facing_direction(positions[:, 0], fmt.face_joints, swap_hips=False)
  forward0 = forward0 / np.linalg.norm(forward0, axis=-1, keepdims=True)
  face_quat = qbetween(forward0, np.broadcast_to([0.0, 0.0, 1.0], forward0.shape))
  positions = qrot(face_quat[:, None, None, :], positions)

  contacts = _foot_contacts(positions, fmt)

  quats = inverse_kinematics(positions, fmt, smooth_forward=True)
  rot6d = quaternion_to_cont6d(quats)[..., 1:, :]
  root_rot = quats[..., 0, :]  # (N, T+1, 4): facing -> +Z per frame.
  root_velocity = qrot(root_rot[:, 1:], positions[:, 1:, 0] - positions[:, :-1, 0])
  root_angular = qmul(root_rot[:, 1:], qinv(root_rot[:, :-1]))
  # The root quaternions flip sign where the facing passes through -Z; the
  # reference keeps the flipped product there (a wrong-signed angular step
  # that its own recovery integrates). Take the short way round instead.
  root_angular *= np.where(root_angular[..., :1] < 0, -1.0, 1.0)
  # Velocities of every joint, in the facing frame of the earlier frame.
  local_velocity = qrot(root_rot[:, :-1, None, :], positions[:, 1:] - positions[:, :-1])

  # Root-relative, facing-invariant positions.
  ric = positions - positions[:, :, :1, :] * np.array([1.0, 0.0, 1.0])
  ric = qrot(root_rot[:, :, None, :], ric)

  n, t = positions.shape[0], positions.shape[1] - 1
  return np.concatenate(
    [
      np.arcsin(root_angular[..., 2:3]),
      root_velocity[..., [0, 2]],
      ric[:, :-1, 0, 1:2],
      ric[:, :-1, 1:].reshape(n, t, 3 * (num_joints - 1)),
      rot6d[:, :-1].reshape(n, t, 6 * (num_joints - 1)),
      local_velocity.reshape(n, t, 3 * num_joints),
      contacts,
    ],
    axis=-1,
  )


def joints_to_features(joints: np.ndarray, fmt: MotionFormat = HUMANML3D) -> np.ndarray:
  """(T+1, J, 3) joint positions (Y up, metres) -> (T, D) features.

  Computed in float64; returned in float64 for float64 input, else float32.
  """
  joints = check_joints(joints, fmt)
  out_dtype = np.float64 if joints.dtype == np.float64 else np.float32
  return joints_to_features_batch(joints[None], fmt)[0].astype(out_dtype)


# ---------------------------------------------------------------------------
# Features -> joint positions (`recover_from_ric`), NumPy or jax.numpy.


def recover_root(features):
  """Root yaw quaternions (..., T, 4) and positions (..., T, 3)."""
  xp = _xp(features)
  angular = features[..., 0]
  angle = xp.cumsum(
    xp.concatenate([xp.zeros_like(angular[..., :1]), angular[..., :-1]], axis=-1), axis=-1
  )
  zeros = xp.zeros_like(angle)
  quat = xp.stack([xp.cos(angle), zeros, xp.sin(angle), zeros], axis=-1)

  velocity = features[..., :-1, 1:3]
  step = xp.stack([velocity[..., 0], xp.zeros_like(velocity[..., 0]), velocity[..., 1]], axis=-1)
  step = xp.concatenate([xp.zeros_like(features[..., :1, :3]), step], axis=-2)
  step = qrot(qinv(quat), step)
  position = xp.cumsum(step, axis=-2)
  position = xp.stack([position[..., 0], features[..., 3], position[..., 2]], axis=-1)
  return quat, position


def features_to_joints(features, fmt: MotionFormat = HUMANML3D):
  """(..., T, D) features -> (..., T, J, 3) joint positions.

  NumPy in, NumPy out (dtype kept); JAX arrays and tracers use jax.numpy, so
  this is traceable under jit. Frame 0 faces +Z with its root at XZ origin.
  """
  if not isinstance(features, (np.ndarray, jax.Array)):
    features = np.asarray(features)
  if features.ndim < 2 or features.shape[-1] != fmt.feature_dim:
    raise InvalidMotionError(
      f"features must have shape (..., T, {fmt.feature_dim}) ({fmt.name}), got {features.shape}."
    )
  xp = _xp(features)
  quat, root = recover_root(features)
  ric = features[..., fmt.slices["ric"]]
  ric = ric.reshape(ric.shape[:-1] + (fmt.num_joints - 1, 3))
  quat = xp.broadcast_to(qinv(quat)[..., None, :], ric.shape[:-1] + (4,))
  joints = qrot(quat, ric)
  joints = joints + root[..., None, :] * xp.asarray([1.0, 0.0, 1.0], dtype=joints.dtype)
  return xp.concatenate([root[..., None, :], joints], axis=-2)


# ---------------------------------------------------------------------------
# Normalisation.


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Per-dimension mean/std normalisation of (..., D) features."""

  mean: np.ndarray
  std: np.ndarray

  def __post_init__(self):
    mean = np.asarray(self.mean, np.float32)
    std = np.asarray(self.std, np.float32)
    if mean.ndim != 1 or mean.shape != std.shape:
      raise ValueError(f"mean and std must both have shape (D,), got {mean.shape} and {std.shape}.")
    if not (np.isfinite(std).all() and (std > 0).all()):
      raise ValueError(f"std must be finite and positive, got min {std.min()}.")
    object.__setattr__(self, "mean", mean)
    object.__setattr__(self, "std", std)

  def normalize(self, x):
    return (x - self.mean) / self.std

  def denormalize(self, x):
    return x * self.std + self.mean

  def save(self, directory: str | os.PathLike) -> None:
    """Writes Mean.npy and Std.npy (the HumanML3D file names)."""
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, "Mean.npy"), self.mean)
    np.save(os.path.join(directory, "Std.npy"), self.std)

  @classmethod
  def load(cls, directory: str | os.PathLike, fmt: MotionFormat | None = None) -> Normalizer:
    """Reads Mean.npy and Std.npy from `directory`."""
    paths = [os.path.join(directory, f) for f in ("Mean.npy", "Std.npy")]
    for path in paths:
      if not os.path.isfile(path):
        raise FileNotFoundError(
          f"normalizer directory {os.fspath(directory)!r} has no {os.path.basename(path)}."
        )
    normalizer = cls(np.load(paths[0]), np.load(paths[1]))
    if fmt is not None and normalizer.mean.shape != (fmt.feature_dim,):
      raise InvalidMotionError(
        f"Mean.npy in {os.fspath(directory)!r} must have shape "
        f"({fmt.feature_dim},) for {fmt.name}, got {normalizer.mean.shape}."
      )
    return normalizer


def fit_normalizer(
  features: np.ndarray,
  mask: np.ndarray,
  fmt: MotionFormat = HUMANML3D,
  feat_bias: float = 1.0,
  eps: float = 1e-6,
) -> Normalizer:
  """Mean/std over the real frames of (N, T, D) features, as HumanML3D.

  Each feature group's std is replaced by the group's mean std (the
  reference's `cal_mean_variance`), so e.g. all RIC coordinates share one
  scale. `feat_bias` > 1 divides the root and contact std by it, as the
  reference evaluator/VQ training does (feat_bias = 5). Groups without any
  variation get std `eps` so they normalise to zero rather than NaN.
  """
  features = np.asarray(features, np.float64)
  mask = np.asarray(mask, bool)
  if features.ndim != 3 or features.shape[-1] != fmt.feature_dim:
    raise InvalidMotionError(
      f"features must have shape (N, T, {fmt.feature_dim}), got {features.shape}."
    )
  if mask.shape != features.shape[:2]:
    raise ValueError(f"mask must have shape {features.shape[:2]}, got {mask.shape}.")
  if not mask.any():
    raise ValueError("mask must select at least one frame, got none.")
  frames = features[mask]
  mean = frames.mean(axis=0)
  std = frames.std(axis=0)
  for key, group in fmt.slices.items():
    std[group] = std[group].mean()
    if key in ("root_angular_velocity", "root_linear_velocity", "root_height", "foot_contact"):
      std[group] /= feat_bias
  return Normalizer(mean.astype(np.float32), np.maximum(std, eps).astype(np.float32))
