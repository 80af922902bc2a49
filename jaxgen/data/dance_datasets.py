"""Readers of the released AIST++ and FineDance folders: motions, music, splits, joints.

AIST++ (`google/aistplusplus_api`, `aist_plusplus/loader.py`), the annotation
folder:

    <root>/motions/<seq>.pkl     {smpl_poses (N, 72) axis-angle, smpl_trans (N, 3),
                                  smpl_scaling (1,)} at 60 fps
    <root>/splits/crossmodal_{train,val,test}.txt, <root>/ignore_list.txt
                                 (EDGE's copies live in data/splits/ and have no val file)
    <music_dir>/<music id>.wav   AIST's wav.zip (`mBR0.wav`); default <root>/wav

Sequence names read `g{genre}_s{BM|FM}_cAll_d{dancer}_m{genre}{0-5}_ch{choreo}`.
Motion pickles are read with `smpl.load_numpy_pickle` (NumPy arrays only).
Ignore-listed sequences are skipped and counted. Joints are posed as EDGE and
Bailando pose them: translation smpl_trans / smpl_scaling (body units, metres
of the standard SMPL body) on the user's SMPL skeleton.

FineDance (`li-ronghui/FineDance`, README and `data/code/pre_motion.py`):

    <root>/motion/<name>.npy      (T, 315) = root position 3 + 52 SMPL-X joints x 6-D
                                  rotation (22 body + 30 hand), 30 fps; names 001..211
    <root>/music_wav/<name>.wav
    <root>/label_json/<name>.json song name, style, genre (optional; kept verbatim)

Its splits are hard-coded id lists in `dataset/FineDance_dataset.py`
(`get_train_test_list`, commit 06a3dfc, 2023-12-13): FineDance@Genre
("cross_genre", the recommended one: 20 test ids) and FineDance@Dancer
("cross_dancer", 18 test ids); the ignore list (which holds @Dancer's val
ids) is skipped in both splits, so test ids that are also ignored ("120",
"130") are dropped there too, as the reference loop does. The public
download is part of the data set, so listed ids without a motion file are
skipped and counted.
FineDance's joints use the 22 body rotations on the SMPL skeleton (SMPL's body
tree is SMPL-X's; bone lengths are SMPL's): joints 22-23 (hands) follow the
wrists with no rotation of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np

from jaxgen.data import smpl

_log = logging.getLogger(__name__)

AIST_FPS = 60
AIST_GENRES = {
  "BR": "break",
  "PO": "pop",
  "LO": "lock",
  "MH": "middle hip-hop",
  "LH": "LA-style hip-hop",
  "HO": "house",
  "WA": "waack",
  "KR": "krump",
  "JS": "street jazz",
  "JB": "ballet jazz",
}
AIST_SPLIT_FILES = {
  "train": "crossmodal_train.txt",
  "validation": "crossmodal_val.txt",
  "test": "crossmodal_test.txt",
}
_AIST_NAME = re.compile(
  r"g(?P<genre>[A-Z]{2})_s(?:BM|FM)_c(?:All|\d\d)_d\d\d_(?P<music>m(?P<music_genre>[A-Z]{2})\d)_ch\d\d"
)

FINEDANCE_FPS = 30
FINEDANCE_WIDTH = 3 + 52 * 6
FINEDANCE_BODY_JOINTS = 22
FINEDANCE_NAMES = tuple(f"{i:03d}" for i in range(1, 212))
_FINEDANCE_IGNORE = ("116", "117", "118", "119", "120", "121", "122", "123", "202", "130")
FINEDANCE_SPLITS = {
  "cross_genre": {
    "test": ("063", "132", "143", "036", "098", "198", "130", "012", "211", "193")
    + ("179", "065", "137", "161", "092", "120", "037", "109", "204", "144"),
    "ignore": _FINEDANCE_IGNORE,
  },
  "cross_dancer": {
    "test": tuple(f"{i:03d}" for i in range(1, 14)) + ("124", "126", "128", "130", "132"),
    # @Dancer's val ids, then the ids ignored everywhere.
    "ignore": ("115", "117", "119", "121", "122", "135", "137", "139", "141", "143", "145")
    + ("147", "116", "118", "120", "123", "202", "159", "130"),
  },
}


class DanceDataError(ValueError):
  """A dance folder or file is not in its released layout."""


@dataclasses.dataclass(frozen=True)
class AistName:
  genre: str  # Two-letter code, a key of AIST_GENRES.
  music_id: str  # e.g. "mBR0", the stem of its WAV.


def parse_aist_name(name: str) -> AistName:
  match = _AIST_NAME.fullmatch(name)
  if match is None or match["genre"] not in AIST_GENRES:
    raise DanceDataError(
      f"AIST++ sequence name must read g{{genre}}_s{{BM|FM}}_cAll_d{{NN}}_m{{genre}}{{N}}_ch{{NN}} "
      f"with a genre of {sorted(AIST_GENRES)} (e.g. gBR_sBM_cAll_d04_mBR0_ch01), got {name!r}."
    )
  return AistName(genre=match["genre"], music_id=match["music"])


def read_name_list(path: str) -> list[str]:
  """Non-empty stripped lines of a split or ignore file."""
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def _require(folder: str, entries: list[str], dataset: str) -> None:
  if not os.path.isdir(folder):
    raise DanceDataError(f"{dataset} folder {folder!r} is not a directory.")
  missing = [e for e in entries if not os.path.exists(os.path.join(folder, e))]
  if missing:
    raise DanceDataError(
      f"{dataset} folder {folder!r} must contain {entries} (the released layout); missing "
      f"{missing}, found {sorted(os.listdir(folder))[:20]}."
    )


def aist_splits(root: str) -> list[str]:
  """The AIST++ splits whose list file exists (train and test are required)."""
  _require(root, ["motions", "splits/crossmodal_train.txt", "splits/crossmodal_test.txt"], "AIST++")
  return [s for s, f in AIST_SPLIT_FILES.items() if os.path.isfile(os.path.join(root, "splits", f))]


def aist_split_names(root: str, split: str) -> tuple[list[str], list[str]]:
  """(kept, ignored) sequence names of one split; ignore_list.txt is optional."""
  if split not in AIST_SPLIT_FILES:
    raise DanceDataError(f"AIST++ split must be one of {sorted(AIST_SPLIT_FILES)}, got {split!r}.")
  names = read_name_list(os.path.join(root, "splits", AIST_SPLIT_FILES[split]))
  ignore_path = os.path.join(root, "ignore_list.txt")
  ignored = set(read_name_list(ignore_path)) if os.path.isfile(ignore_path) else set()
  return [n for n in names if n not in ignored], [n for n in names if n in ignored]


@dataclasses.dataclass(frozen=True)
class AistMotion:
  poses: np.ndarray  # (N, 24, 3) axis-angle, float64.
  translation: np.ndarray  # (N, 3) smpl_trans / smpl_scaling.
  scaling: float


def load_aist_motion(path: str) -> AistMotion:
  """One motions/<seq>.pkl, checked, read without running pickle code."""
  if not os.path.isfile(path):
    raise DanceDataError(f"AIST++ motion file {path!r} does not exist.")
  data = smpl.load_numpy_pickle(path)
  keys = ("smpl_poses", "smpl_trans", "smpl_scaling")
  if not isinstance(data, dict) or any(k not in data for k in keys):
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise DanceDataError(f"AIST++ motion file {path!r} must be a dict with {keys}, got {found}.")
  poses = np.asarray(data["smpl_poses"], np.float64)
  trans = np.asarray(data["smpl_trans"], np.float64)
  scaling = np.asarray(data["smpl_scaling"], np.float64).reshape(-1)
  n = len(poses)
  if poses.shape not in ((n, 72), (n, 24, 3)) or trans.shape != (n, 3) or scaling.shape != (1,):
    raise DanceDataError(
      f"AIST++ motion file {path!r}: smpl_poses must be (N, 72), smpl_trans (N, 3) and "
      f"smpl_scaling (1,), got {poses.shape}, {trans.shape} and {scaling.shape}."
    )
  if n == 0 or not (np.isfinite(poses).all() and np.isfinite(trans).all()) or scaling[0] <= 0:
    raise DanceDataError(
      f"AIST++ motion file {path!r} must have frames, finite poses and translations and a "
      f"positive smpl_scaling; got {n} frames, scaling {scaling[0]}."
    )
  return AistMotion(poses.reshape(n, 24, 3), trans / scaling[0], float(scaling[0]))


def aist_music_path(music_dir: str, name: str) -> str:
  """<music_dir>/<music id>.wav, or EDGE's per-sequence copy <music_dir>/<seq>.wav."""
  candidates = [f"{parse_aist_name(name).music_id}.wav", f"{name}.wav"]
  for candidate in candidates:
    path = os.path.join(music_dir, candidate)
    if os.path.isfile(path):
      return path
  raise DanceDataError(
    f"AIST++ sequence {name!r} has no music: none of {candidates} is in {music_dir!r} (unzip "
    f"AIST's wav.zip there, or pass its folder as music_dir)."
  )


def aist_examples(root: str, split: str, skeleton: smpl.Skeleton, music_dir: str, stride: int = 1):
  """Yields (name, example) for one split; every `stride`-th frame (2: EDGE's 30 fps)."""
  smpl.check_smpl_skeleton(skeleton, "the SMPL model for AIST++")
  names, ignored = aist_split_names(root, split)
  if ignored:
    _log.info(
      "AIST++ %s: skipped %d ignore-listed sequence(s): %s", split, len(ignored), ignored[:20]
    )
  for name in names:
    parsed = parse_aist_name(name)
    music = aist_music_path(music_dir, name)
    motion = load_aist_motion(os.path.join(root, "motions", f"{name}.pkl"))
    poses, root_position = motion.poses[::stride], motion.translation[::stride]
    yield (
      name,
      {
        "joints": smpl.joints_from_axis_angle(poses, root_position, skeleton).astype(np.float32),
        "poses": poses.astype(np.float32),
        "root_position": root_position.astype(np.float32),
        "scaling": np.float32(motion.scaling),
        "name": name,
        "genre": parsed.genre,
        "music_id": parsed.music_id,
        "music_path": os.path.abspath(music),
      },
    )


def finedance_split_names(datasplit: str, split: str) -> list[str]:
  """The reference's ids of one split (see the module docstring)."""
  if datasplit not in FINEDANCE_SPLITS:
    raise DanceDataError(
      f"FineDance datasplit must be one of {sorted(FINEDANCE_SPLITS)}, got {datasplit!r}."
    )
  lists = FINEDANCE_SPLITS[datasplit]
  if split == "test":
    names = lists["test"]
  elif split == "train":
    names = [n for n in FINEDANCE_NAMES if n not in lists["test"]]
  else:
    raise DanceDataError(f"FineDance split must be 'train' or 'test', got {split!r}.")
  return [n for n in names if n not in lists["ignore"]]


@dataclasses.dataclass(frozen=True)
class FineDanceMotion:
  root_position: np.ndarray  # (T, 3)
  rotations: np.ndarray  # (T, 52, 6) pytorch3d 6-D (two matrix rows)


def load_finedance_motion(path: str) -> FineDanceMotion:
  data = np.load(path, allow_pickle=False)
  if data.ndim != 2 or data.shape[1] != FINEDANCE_WIDTH or len(data) == 0:
    raise DanceDataError(
      f"FineDance motion file {path!r} must have shape (T, {FINEDANCE_WIDTH}) = root position "
      f"3 + 52 joints x 6-D rotation with T > 0, got {data.shape}."
    )
  if not np.isfinite(data).all():
    raise DanceDataError(f"FineDance motion file {path!r} has NaN/inf values.")
  data = data.astype(np.float64)
  return FineDanceMotion(data[:, :3], data[:, 3:].reshape(len(data), 52, 6))


def finedance_joints(motion: FineDanceMotion, skeleton: smpl.Skeleton) -> np.ndarray:
  """(T, 24, 3) SMPL joints from the 22 body rotations (hands 22-23 unrotated)."""
  smpl.check_smpl_skeleton(skeleton, "the SMPL model for FineDance")
  body = smpl.rotation_6d_to_matrix(motion.rotations[:, :FINEDANCE_BODY_JOINTS])
  hands = np.broadcast_to(
    np.eye(3), (len(body), smpl.SMPL_NUM_JOINTS - FINEDANCE_BODY_JOINTS, 3, 3)
  )
  rotations = np.concatenate([body, hands], axis=1)
  return smpl.forward_kinematics(rotations, motion.root_position, skeleton)


def finedance_examples(root: str, datasplit: str, split: str, skeleton: smpl.Skeleton):
  """Yields (name, example) for the ids of one split that have a motion file."""
  _require(root, ["motion", "music_wav"], "FineDance")
  names = finedance_split_names(datasplit, split)
  present = [n for n in names if os.path.isfile(os.path.join(root, "motion", f"{n}.npy"))]
  if len(present) < len(names):
    _log.info(
      "FineDance %s/%s: %d of %d listed ids have no motion file (a partial download).",
      datasplit,
      split,
      len(names) - len(present),
      len(names),
    )
  for name in present:
    music = os.path.join(root, "music_wav", f"{name}.wav")
    if not os.path.isfile(music):
      raise DanceDataError(f"FineDance motion {name!r} has no music file {music!r}.")
    label_path = os.path.join(root, "label_json", f"{name}.json")
    labels = ""
    if os.path.isfile(label_path):
      with open(label_path, encoding="utf-8") as f:
        labels = f.read()
    motion = load_finedance_motion(os.path.join(root, "motion", f"{name}.npy"))
    yield (
      name,
      {
        "joints": finedance_joints(motion, skeleton).astype(np.float32),
        "rotations": motion.rotations.astype(np.float32),
        "root_position": motion.root_position.astype(np.float32),
        "name": name,
        "music_path": os.path.abspath(music),
        "labels": labels,
      },
    )


def dataset_skeleton(smpl_model: str | os.PathLike | None, dataset: str) -> smpl.Skeleton:
  """The SMPL skeleton a dance builder poses its joints on; a named error if none is given."""
  if smpl_model is None:
    raise smpl.SmplModelError(
      f"{dataset} joints need the SMPL skeleton: pass smpl_model='/path/to/SMPL_NEUTRAL.npz' "
      f"(tfds.builder({dataset!r}, smpl_model=...)); jaxgen ships no SMPL model."
    )
  return smpl.check_smpl_skeleton(smpl.load_skeleton(smpl_model), os.fspath(smpl_model))
