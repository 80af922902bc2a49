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
`jax.numpy`, so it works inside jitted losses. T feature frames hold T + 1
joint frames (the last one only through the joint velocities of frame T - 1);
`recover_from_ric` returns the first T.

Round-trip guarantee. The features of a clip are relative to its facing
direction smoothed over the *whole* clip, so they depend on every frame:
  - joints (T+1) -> features (T) -> `features_to_joints(..., with_last_frame=True)`
    (T+1) -> features (T) reproduces the features exactly (float64: ~1e-12;
    float32 features: ~1e-6): the recovered clip is the processed one, turned
    about Y and moved on the floor, to which the features are invariant.
  - with the default T recovered frames the smoothing and the floor see one
    frame fewer, so the re-computed T - 1 frames match only where the clip
    does not turn within ~80 frames of its end and its lowest point is not in
    the last frame (e.g. it holds its last pose, as the synthetic data does);
    a clip turning 0.05 rad per frame throughout differs by ~0.02-0.03.

The formats (skeletons, feature layouts) and the input checks live in
`jaxgen.data.motion_formats`, the quaternion math in `jaxgen.data.quaternions`.
Host arrays are checked for frames that hold NaN/inf (`check_finite_frames`,
also used by the motion metrics); traced arrays cannot raise and pass as they
are.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from scipy import ndimage

from jaxgen.data.motion_formats import (
  HUMANML3D,
  KIT_ML,  # noqa: F401  (re-exported: jaxgen.tasks.motion)
  InvalidMotionError,
  MotionFormat,
  check_joints,
)
from jaxgen.data.quaternions import array_module, qbetween, qinv, qmul, qrot, quaternion_to_cont6d


class NonFiniteMotionError(InvalidMotionError):
  """A host motion array (features or joints) holds NaN or inf in some frames."""


class EmptyMotionError(InvalidMotionError):
  """A motion array has no frames."""


def check_finite_frames(values, name: str, frame_ndim: int, keep=None) -> None:
  """Raises `NonFiniteMotionError` naming `name` if a frame holds NaN/inf.

  A frame is the trailing `frame_ndim` axes (1 for (..., T, D) features, 2 for
  (..., T, J, 3) joints); `keep` (the leading axes' shape, bool) limits the
  check to the frames a mask keeps. Host values only: call it outside jit.
  """
  values = np.asarray(values)
  finite = np.isfinite(values)
  bad = ~finite.all(axis=tuple(range(values.ndim - frame_ndim, values.ndim)))
  if keep is not None:
    bad &= np.asarray(keep, bool)
  if bad.any():
    kinds = [k for k, test in (("NaN", np.isnan), ("inf", np.isinf)) if test(values[bad]).any()]
    first = [
      str(int(i[0])) if len(i) == 1 else str(tuple(int(j) for j in i)) for i in np.argwhere(bad)[:3]
    ]
    raise NonFiniteMotionError(
      f"{name}: {int(bad.sum())} of {bad.size} frames hold {' and '.join(kinds)} "
      f"(first ones at index {', '.join(first)}); expected finite values"
    )


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
  xp = array_module(features)
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


def features_to_joints(features, fmt: MotionFormat = HUMANML3D, with_last_frame: bool = False):
  """(..., T, D) features -> (..., T, J, 3) joint positions (the reference's).

  NumPy in, NumPy out (dtype kept); JAX arrays and tracers use jax.numpy, so
  this is traceable under jit. Frame 0 has its root at the XZ origin and its
  *smoothed* facing (the one the features are relative to: hips and
  shoulders, Gaussian-smoothed over the clip with sigma 20 frames) along +Z;
  on a turning clip frame 0's own hip/shoulder facing differs from +Z by up
  to the smoothing lag (about 20 degrees for a steady turn of 0.05 rad per
  frame). With `with_last_frame`, the joint frame after the last one is
  appended, placed by the last frame's joint velocities: (..., T+1, J, 3),
  the exact inverse of `joints_to_features` (see the module docstring).
  Host arrays with NaN/inf frames raise `NonFiniteMotionError`; T = 0 raises
  `EmptyMotionError`.
  """
  if not isinstance(features, (np.ndarray, jax.Array)):
    features = np.asarray(features)
  if features.ndim < 2 or features.shape[-1] != fmt.feature_dim:
    raise InvalidMotionError(
      f"features must have shape (..., T, {fmt.feature_dim}) ({fmt.name}), got {features.shape}."
    )
  if features.shape[-2] == 0:
    raise EmptyMotionError(f"features: expected at least 1 frame, found 0 (shape {features.shape})")
  if not isinstance(features, jax.core.Tracer):  # A traced array cannot raise.
    check_finite_frames(features, "features", frame_ndim=1)
  xp = array_module(features)
  quat, root = recover_root(features)
  ric = features[..., fmt.slices["ric"]]
  ric = ric.reshape(ric.shape[:-1] + (fmt.num_joints - 1, 3))
  inverse = xp.broadcast_to(qinv(quat)[..., None, :], ric.shape[:-1] + (4,))
  joints = qrot(inverse, ric)
  joints = joints + root[..., None, :] * xp.asarray([1.0, 0.0, 1.0], dtype=joints.dtype)
  joints = xp.concatenate([root[..., None, :], joints], axis=-2)
  if not with_last_frame:
    return joints
  # Velocities of frame T-1 are x_T - x_{T-1} in frame T-1's facing.
  velocity = features[..., -1, fmt.slices["local_velocity"]]
  velocity = velocity.reshape(velocity.shape[:-1] + (fmt.num_joints, 3))
  last_inverse = xp.broadcast_to(qinv(quat[..., -1, None, :]), velocity.shape[:-1] + (4,))
  last = joints[..., -1, :, :] + qrot(last_inverse, velocity)
  return xp.concatenate([joints, last[..., None, :, :]], axis=-3)


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
