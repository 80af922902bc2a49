"""The SMPL skeleton from a user-given model file, forward kinematics in NumPy, safe pickles.

SMPL's weights are licensed, so jaxgen ships none: joint positions come from
the model file the user points at. Only the skeleton is read from it: the
rest-pose joints J = J_regressor @ v_template (zero shape coefficients, what
the dance references pose) — or the file's own `J` when it has no regressor —
and the parents from `kintree_table[0]`.

Accepted files:
  * `.npz` (read with `allow_pickle=False`), e.g. the `SMPL_NEUTRAL.npz` of the
    `smplx` package's layout;
  * `.pkl` without chumpy objects (e.g. after `smplx`'s `tools/clean_ch.py`),
    read by `load_numpy_pickle`: a scipy-sparse `J_regressor` is allowed. The
    official pickles hold chumpy arrays and are refused; convert one once, in
    an environment that trusts it and has chumpy installed:

      python -c "import pickle,numpy as np; d=pickle.load(open('SMPL_NEUTRAL.pkl','rb'),
        encoding='latin1'); np.savez('SMPL_NEUTRAL.npz', v_template=np.array(d['v_template']),
        J_regressor=d['J_regressor'].toarray(), kintree_table=d['kintree_table'])"

Posing follows `smplx.SMPL`: each joint turns its children about itself,
joint 0 ends at its rest position plus the translation, and rotations are
local (relative to the parent) and act on column vectors. Two rotation
encodings come in: axis-angle (AIST++) and the 6-D encoding of the dance
references (pytorch3d's `matrix_to_rotation_6d`: the first two ROWS of the
matrix; HumanML3D's `quaternion_to_cont6d` takes columns instead).
"""

from __future__ import annotations

import codecs
import copyreg
import dataclasses
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from jaxgen.data import motion_formats

SMPL_NUM_JOINTS = 24
SMPL_JOINT_NAMES = (*motion_formats.SMPL_JOINT_NAMES, "left_hand", "right_hand")
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle names a global outside the NumPy / container allowlist (it could run code)."""


class SmplModelError(ValueError):
  """An SMPL model file is absent or lacks what the skeleton needs."""


def _safe_globals() -> dict[tuple[str, str], Any]:
  """(module, name) -> object: what NumPy arrays, scalars, dtypes and scipy sparse need."""
  from numpy._core import multiarray, numeric  # NumPy 2; old pickles say `numpy.core`.

  allowed = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # Protocol 2 writes bytes as encode(str, 'latin1').
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,  # Python 2, protocol 0/1 objects.
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
  }
  for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    allowed[(module, "_reconstruct")] = multiarray._reconstruct
    allowed[(module, "scalar")] = multiarray.scalar
  for module in ("numpy.core.numeric", "numpy._core.numeric"):
    allowed[(module, "_frombuffer")] = numeric._frombuffer  # Protocol 5.
  try:
    from scipy import sparse
  except ImportError:  # Without scipy a sparse J_regressor is refused like any other global.
    return allowed
  for kind in ("csc", "csr"):
    cls = getattr(sparse, f"{kind}_matrix")
    for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}"):
      allowed[(module, f"{kind}_matrix")] = cls
  return allowed


class NumpyUnpickler(pickle.Unpickler):
  """Unpickles NumPy arrays in plain containers and refuses every other global by name.

  Dicts, lists, tuples, strings and numbers need no global; a global is what
  lets a pickle call a function (`os.system`, `builtins.eval`), so only
  NumPy's array reconstructors, dtypes and scalars (and scipy's CSC/CSR
  matrices, the SMPL `J_regressor`) are found.
  """

  _allowed = None

  def find_class(self, module: str, name: str) -> Any:
    if NumpyUnpickler._allowed is None:
      NumpyUnpickler._allowed = _safe_globals()
    try:
      return NumpyUnpickler._allowed[(module, name)]
    except KeyError:
      raise UnsafePickleError(
        f"pickle refers to global {module}.{name}; only NumPy arrays, dtypes, scalars, "
        f"scipy CSC/CSR matrices and plain containers are read (a pickle naming other "
        f"globals could run code). Convert the file to .npz in an environment you trust."
      ) from None


def load_numpy_pickle(file: str | os.PathLike | BinaryIO) -> Any:
  """The object in a pickle of NumPy arrays and plain containers (never a plain pickle.load).

  `encoding="latin1"` reads Python 2 NumPy pickles too. Raises UnsafePickleError
  for any other global.
  """
  if isinstance(file, (str, os.PathLike)):
    with open(file, "rb") as f:
      return NumpyUnpickler(f, encoding="latin1").load()
  return NumpyUnpickler(file, encoding="latin1").load()


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """Rest-pose joint positions (J, 3) and each joint's parent (-1 for the root)."""

  rest_joints: np.ndarray
  parents: tuple[int, ...]

  def __post_init__(self):
    rest = np.asarray(self.rest_joints, np.float64)
    if rest.ndim != 2 or rest.shape[1] != 3 or rest.shape[0] != len(self.parents):
      raise SmplModelError(
        f"rest_joints must have shape ({len(self.parents)}, 3) (one row per parent), "
        f"got {rest.shape}."
      )
    for joint, parent in enumerate(self.parents):
      if not (parent == -1 if joint == 0 else 0 <= parent < joint):
        raise SmplModelError(
          f"parents must list joint 0 as the root (-1) and every other joint after its "
          f"parent; joint {joint} has parent {parent} (parents {self.parents})."
        )
    object.__setattr__(self, "rest_joints", rest)

  @property
  def num_joints(self) -> int:
    return len(self.parents)

  @property
  def offsets(self) -> np.ndarray:
    """(J, 3) rest vector from each joint's parent to it (joint 0: its rest position)."""
    parents = np.array([max(p, 0) for p in self.parents])
    offsets = self.rest_joints - self.rest_joints[parents]
    offsets[0] = self.rest_joints[0]
    return offsets


def _read_model_file(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise SmplModelError(
      f"SMPL model file {path!r} does not exist: pass the path of a downloaded SMPL model "
      f"(.npz, or a chumpy-free .pkl), e.g. SMPL_NEUTRAL.npz."
    )
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  if path.endswith(".pkl"):
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
      raise SmplModelError(f"SMPL model file {path!r} must hold a dict, got {type(data).__name__}.")
    return data
  raise SmplModelError(f"SMPL model file {path!r} must end in .npz or .pkl.")


def _dense(value: Any) -> np.ndarray:
  return np.asarray(value.toarray() if hasattr(value, "toarray") else value, np.float64)


def load_skeleton(path: str | os.PathLike) -> Skeleton:
  """The rest skeleton of an SMPL-format model file (see the module docstring)."""
  path = os.fspath(path)
  data = _read_model_file(path)
  if "kintree_table" not in data:
    raise SmplModelError(
      f"SMPL model file {path!r} lacks 'kintree_table'; its keys: {sorted(data)}."
    )
  kintree = np.asarray(data["kintree_table"])
  if kintree.ndim != 2 or kintree.shape[0] != 2:
    raise SmplModelError(
      f"'kintree_table' in {path!r} must have shape (2, J), got {kintree.shape}."
    )
  num_joints = kintree.shape[1]
  if "J_regressor" in data and "v_template" in data:
    regressor, template = _dense(data["J_regressor"]), _dense(data["v_template"])
    if regressor.shape[0] != num_joints or template.shape != (regressor.shape[1], 3):
      raise SmplModelError(
        f"SMPL model file {path!r}: 'J_regressor' {regressor.shape} and 'v_template' "
        f"{template.shape} must be (J, V) and (V, 3) with J = {num_joints} joints."
      )
    rest = regressor @ template
  elif "J" in data:
    rest = _dense(data["J"])
  else:
    raise SmplModelError(
      f"SMPL model file {path!r} lacks 'J_regressor' and 'v_template' (or 'J', the rest "
      f"joints); its keys: {sorted(data)}."
    )
  # The root's parent is stored as -1 or as the uint32 wrap-around 2**32 - 1.
  parents = tuple(-1 if p in (-1, 2**32 - 1) else int(p) for p in kintree[0].astype(np.int64))
  return Skeleton(rest_joints=rest, parents=parents)


def check_smpl_skeleton(skeleton: Skeleton, source: str = "skeleton") -> Skeleton:
  """Named error unless `skeleton` has SMPL's 24-joint tree."""
  if skeleton.parents != SMPL_PARENTS:
    raise SmplModelError(
      f"{source} must be the 24-joint SMPL body (parents {SMPL_PARENTS}), got "
      f"{skeleton.num_joints} joints with parents {skeleton.parents}."
    )
  return skeleton


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
  """(..., 3) rotation vectors -> (..., 3, 3) matrices (Rodrigues; exact at angle 0)."""
  v = np.asarray(axis_angle, np.float64)
  angle = np.linalg.norm(v, axis=-1, keepdims=True)
  axis = v / np.where(angle > 0, angle, 1.0)
  x, y, z = (axis[..., i] for i in range(3))
  zero = np.zeros_like(x)
  cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(v.shape[:-1] + (3, 3))
  sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
  return np.eye(3) + sin * cross + (1 - cos) * (cross @ cross)


def rotation_6d_to_matrix(rotation_6d: np.ndarray) -> np.ndarray:
  """(..., 6) first two matrix rows -> (..., 3, 3), Gram-Schmidt as pytorch3d."""
  d6 = np.asarray(rotation_6d, np.float64)
  b1 = d6[..., :3] / np.linalg.norm(d6[..., :3], axis=-1, keepdims=True)
  b2 = d6[..., 3:] - (b1 * d6[..., 3:]).sum(-1, keepdims=True) * b1
  b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
  return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
  """(..., 3, 3) -> (..., 6): the first two rows, as pytorch3d."""
  matrix = np.asarray(matrix)
  return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def forward_kinematics(
  rotations: np.ndarray, translation: np.ndarray, skeleton: Skeleton
) -> np.ndarray:
  """World joint positions (..., J, 3) from local rotations (..., J, 3, 3) and root translation (..., 3)."""
  rotations = np.asarray(rotations, np.float64)
  translation = np.asarray(translation, np.float64)
  j = skeleton.num_joints
  if rotations.shape[-3:] != (j, 3, 3) or translation.shape != rotations.shape[:-3] + (3,):
    raise ValueError(
      f"rotations must have shape (..., {j}, 3, 3) and translation (..., 3) with the same "
      f"leading shape, got {rotations.shape} and {translation.shape}."
    )
  offsets = skeleton.offsets
  world_rotations = [rotations[..., 0, :, :]]
  positions = [offsets[0] + translation]
  for joint in range(1, j):
    parent = skeleton.parents[joint]
    positions.append(positions[parent] + world_rotations[parent] @ offsets[joint])
    world_rotations.append(world_rotations[parent] @ rotations[..., joint, :, :])
  return np.stack(positions, axis=-2)


def joints_from_axis_angle(poses: np.ndarray, translation: np.ndarray, skeleton: Skeleton):
  """(..., J, 3) axis-angle (or flat (..., 3J)) + translation -> (..., J, 3) joints."""
  poses = np.asarray(poses, np.float64)
  poses = poses.reshape(poses.shape[:-1] + (-1, 3)) if poses.shape[-1] != 3 else poses
  return forward_kinematics(axis_angle_to_matrix(poses), translation, skeleton)


def joints_from_rotation_6d(rotations: np.ndarray, translation: np.ndarray, skeleton: Skeleton):
  """(..., J, 6) 6-D rotations + translation -> (..., J, 3) joints."""
  return forward_kinematics(rotation_6d_to_matrix(rotations), translation, skeleton)
