"""`jaxgen eval --metric dance`: music-to-dance metrics between folders of joint arrays.

    jaxgen eval --metric dance --generated samples/ --reference aist_test/ \
        --music music/ --fps 30 --out dance.json

A folder holds `.npy` joint positions in metres, y up, SMPL joint order (22
joints as HumanML3D or 24 as SMPL): one dance (T, J, 3) per file, named after
its music, or a stack (N, T, J, 3) as `jaxgen sample` writes for motion, N
dances to the music of the file's name (clips `name[0]`, `name[1]`, ...).
`--music` holds, per generated file name, the music's beat times in seconds
(`<name>.npy`, 1-D) or its audio (`<name>.wav`, beats tracked with librosa as
Bailando does); a `.npy` wins where both exist. `--fps` is the generated
dances' frame rate and `--reference-fps` the reference's (default: `--fps`).

Reported, with the conventions of `jaxgen.metrics.dance` (Bailando) and
`jaxgen.metrics.foot_contact` (EDGE):
- `bas`: the Beat Align Score of the generated dances against their music,
  on the 60 fps SMPL-24 skeleton of `dance_features.to_aist_skeleton`, music
  beats up to the dance's last speed frame (as the reference); a dance
  without a single pause (no motion beat) scores 0. None without `--music`.
- `fid_k`, `fid_g`: Fréchet distances of kinetic / geometric features
  z-scored by the reference, on each dance's first 20 s (Bailando's 1200
  frames at 60 fps); `div_k`, `div_g` the generated dances' diversity and
  `div_k_reference`, `div_g_reference` the reference's own.
- `pfc`, `pfc_reference`: the Physical Foot Contact score at each folder's
  own frame rate.
Every folder, array and music file is checked before anything is computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jaxgen.cli.errors import UsageError
from jaxgen.data import music_features
from jaxgen.metrics import dance, dance_features, foot_contact
from jaxgen.metrics.frechet import TooFewSamplesError

logger = logging.getLogger(__name__)

FEATURE_SECONDS = 20.0  # Bailando's features read each dance's first 1200 frames at 60 fps.
NUM_JOINTS = (22, dance_features.NUM_JOINTS)


class EmptyDanceFolderError(ValueError):
  """A dance or music folder holds no file to read."""


class InvalidDanceArrayError(ValueError):
  """A joint or beat array is not the shape or values the dance metrics read."""


class UnmatchedMusicError(ValueError):
  """A generated dance has no music of the same name in --music."""


@dataclasses.dataclass(frozen=True)
class DanceClip:
  """One dance read from a folder: its name, the music it is matched with, its joints."""

  name: str
  music: str
  joints: np.ndarray  # (T, J, 3) float64, metres, y up


def read_dance_folder(folder: str, *, name: str, fps: float) -> list[DanceClip]:
  """The dances of every `.npy` in `folder`, sorted by file name; `name` is the flag."""
  paths = _files(folder, (".npy",), name=name)
  clips = []
  for path in paths:
    joints = _load_array(path, name)
    stacked = joints.ndim == 4
    if joints.ndim not in (3, 4) or joints.shape[-1] != 3 or joints.shape[-2] not in NUM_JOINTS:
      raise InvalidDanceArrayError(
        f"{name}: {path} must hold joints of shape (T, J, 3) or (N, T, J, 3) with J in "
        f"{NUM_JOINTS}, got shape {joints.shape}"
      )
    if not stacked:
      joints = joints[None]
    if joints.shape[1] < _min_frames(fps):
      raise InvalidDanceArrayError(
        f"{name}: {path} must hold at least {_min_frames(fps)} frames at {fps:g} fps, "
        f"got {joints.shape[1]}"
      )
    if not np.isfinite(joints).all():
      raise InvalidDanceArrayError(f"{name}: {path} must hold finite joints, got NaN or inf")
    for i, clip in enumerate(joints.astype(np.float64)):
      clip_name = f"{path.stem}[{i}]" if stacked else path.stem
      clips.append(DanceClip(clip_name, path.stem, clip))
  return clips


def read_music_beats(folder: str, clips: list[DanceClip]) -> dict[str, np.ndarray]:
  """Music name -> beat times in seconds, for the music of every clip (`--music`)."""
  paths = {}
  for path in _files(folder, (".npy", ".wav"), name="--music"):
    if path.suffix.lower() == ".npy" or path.stem not in paths:
      paths[path.stem] = path
  missing = sorted({c.music for c in clips} - set(paths))
  if missing:
    raise UnmatchedMusicError(
      f"--music pairs each generated file with <name>.npy or <name>.wav; it holds none for "
      f"{len(missing)} generated file(s): {missing[:5]} (it holds {sorted(paths)[:5]} ...)"
    )
  return {music: _beat_times(paths[music]) for music in sorted({c.music for c in clips})}


def run_dance(args: argparse.Namespace) -> dict[str, Any]:
  """The dance metrics of `args` (see the module docstring), as a JSON-ready dict."""
  fps = _frame_rate(args.fps, "--fps")
  reference_fps = _frame_rate(
    args.reference_fps if args.reference_fps is not None else fps, "--reference-fps"
  )
  if not args.real:
    raise UsageError("--reference is required for --metric dance: a folder of ground-truth dances")
  generated = read_dance_folder(args.fake, name="--generated", fps=fps)
  reference = read_dance_folder(args.real, name="--reference", fps=reference_fps)
  for name, clips in (("--generated", generated), ("--reference", reference)):
    if len(clips) < 2:
      raise TooFewSamplesError(
        f"{name} must hold at least 2 dances (FID needs a covariance), got {len(clips)}"
      )
  beat_times = read_music_beats(args.music, generated) if args.music else None

  generated_60 = [dance_features.to_aist_skeleton(c.joints, fps) for c in generated]
  reference_60 = [dance_features.to_aist_skeleton(c.joints, reference_fps) for c in reference]
  gen_k, gen_g = kinetic_geometric_features(generated_60)
  ref_k, ref_g = kinetic_geometric_features(reference_60)
  bas = None
  if beat_times is not None:
    bas = float(
      np.mean(
        [
          beat_alignment(joints, beat_times[clip.music], clip.name)
          for clip, joints in zip(generated, generated_60)
        ]
      )
    )
  return {
    "bas": bas,
    "fid_k": dance.fid_k(ref_k, gen_k),
    "fid_g": dance.fid_g(ref_g, gen_g),
    "div_k": dance.feature_diversity(ref_k, gen_k),
    "div_g": dance.feature_diversity(ref_g, gen_g),
    "div_k_reference": dance.feature_diversity(ref_k, ref_k),
    "div_g_reference": dance.feature_diversity(ref_g, ref_g),
    "pfc": foot_contact.physical_foot_contact([c.joints for c in generated], fps=fps),
    "pfc_reference": foot_contact.physical_foot_contact(
      [c.joints for c in reference], fps=reference_fps
    ),
    "num_generated": len(generated),
    "num_reference": len(reference),
    "fps": fps,
    "reference_fps": reference_fps,
    "feature_seconds": FEATURE_SECONDS,
  }


def music_beat_frames(beat_times: np.ndarray, num_frames: int) -> np.ndarray:
  """Beat times (s) -> sorted unique frames at 60 fps before the last speed frame (T - 1)."""
  frames = np.unique(np.round(np.asarray(beat_times) * dance.AIST_FPS).astype(np.int64))
  return frames[frames < num_frames - 1]


def beat_alignment(joints_60: np.ndarray, beat_times: np.ndarray, name: str) -> float:
  """BAS of one 60 fps SMPL-24 dance against beat times (s); `name` names it in errors."""
  music = music_beat_frames(beat_times, len(joints_60))
  if music.size == 0:
    raise InvalidDanceArrayError(
      f"--music: the music of {name} has no beat within the dance's "
      f"{(len(joints_60) - 1) / dance.AIST_FPS:.2f} s"
    )
  motion = dance.motion_beats(joints_60, fps=dance.AIST_FPS)
  if motion.size == 0:  # A dance that never pauses meets no beat.
    return 0.0
  return dance.beat_alignment_score(music, motion, fps=dance.AIST_FPS)


def kinetic_geometric_features(dances_60: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(N, 72) kinetic and (N, 32) geometric features of 60 fps SMPL-24 dances' first 20 s."""
  frames = round(FEATURE_SECONDS * dance.AIST_FPS)
  features = [dance_features.dance_features(d[:frames], fps=dance.AIST_FPS) for d in dances_60]
  return np.stack([k for k, _ in features]), np.stack([g for _, g in features])


def _beat_times(path: Path) -> np.ndarray:
  if path.suffix.lower() == ".wav":
    audio, sr = music_features.load_audio(path)
    frames = dance.music_beats_from_audio(audio, sr, fps=dance.AIST_FPS)
    return frames / dance.AIST_FPS
  times = _load_array(path, "--music")
  if times.ndim != 1 or not np.issubdtype(times.dtype, np.number):
    raise InvalidDanceArrayError(
      f"--music: {path} must hold a 1-D array of beat times in seconds, got "
      f"{times.dtype} of shape {times.shape}"
    )
  if not (np.isfinite(times).all() and (times >= 0).all()):
    raise InvalidDanceArrayError(f"--music: {path} must hold finite beat times >= 0 s")
  return times.astype(np.float64)


def _min_frames(fps: float) -> int:
  """Frames a dance needs: 3 for PFC's second difference, and 3 at 60 fps for the features."""
  needed_60 = dance_features.MIN_FRAMES
  return max(foot_contact.MIN_FRAMES, int(np.ceil(1 + (needed_60 - 1) * fps / dance.AIST_FPS)))


def _load_array(path: Path, flag: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:  # truncated, pickled or not a .npy at all
    raise InvalidDanceArrayError(f"{flag}: {path} is not a readable .npy array: {e}") from e


def _frame_rate(value: float | None, flag: str) -> float:
  if value is None:
    raise UsageError(
      f"{flag} is required for --metric dance: the joints' frames per second "
      "(a .npy does not say; HumanML3D-style data is 20, EDGE 30, AIST++ 60)"
    )
  if not value > 0:
    raise UsageError(f"{flag} must be > 0 frames per second, got {value}")
  return float(value)


def _files(folder: str, suffixes: tuple[str, ...], *, name: str) -> list[Path]:
  root = Path(folder)
  if not root.is_dir():
    raise NotADirectoryError(f"{name}: {folder!r} is not a folder")
  paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
  if not paths:
    raise EmptyDanceFolderError(
      f"{name}: {folder!r} holds no {' or '.join(suffixes)} file, expected at least one"
    )
  return paths
