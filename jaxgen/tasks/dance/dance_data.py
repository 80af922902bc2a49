"""The EDGE task's data: dances as pose vectors, EDGE music features, windows.

EDGE's pose vector is 4 foot contacts + root position + 24 SMPL joint
rotations as 6-D (151). The procedural dances (`jaxgen.data.music_dance`)
are joint positions on the 22-joint rig with no rotations, so the closest
vector is the same layout with positions in place of rotations:

  [0:4]   foot contacts of joints (7, 8, 10, 11) (left/right ankle, left/right
          foot, EDGE's order): 1 where the joint moves less than 0.3 m/s to the
          next frame (EDGE: 0.01 m per frame at 30 fps; the last frame counts
          as still, as EDGE's zero-padded velocity does)
  [4:7]   root (pelvis) position in metres, world frame, not re-centred per
          window, so overlapping windows of one dance agree
  [7:70]  the other 21 joints relative to the root (metres, world axes)

"FK" is then exact and linear: joints = root + relative offsets. Every
dimension is scaled min-max to [-1, 1] over the training frames, as EDGE's
`Normalizer` (a `motion.Normalizer` with mean = (lo + hi) / 2, std =
(hi - lo) / 2). Music features are EDGE's 35-d baseline at the dance's 20
fps (frame t centred on t / 20 s, aligned with motion frame t), standardised
per column with training statistics: EDGE feeds raw librosa values, whose
MFCCs reach hundreds, into its first Linear.

Long-form generation covers music longer than one window with windows that
overlap by half: window i starts at i * seq_len / 2 (`split_windows`), its
first half is held to window i - 1's second half while it is denoised
(`overlap_constraint`), and the dance is window 0's first half, the
cross-faded overlaps, then the last window's second half (`stitch_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from jaxgen.data import music_dance, music_features
from jaxgen.data.motion import Normalizer

FPS = music_dance.FPS
NUM_JOINTS = music_dance.NUM_JOINTS
FOOT_JOINTS = (7, 8, 10, 11)  # EDGE's foot_idx: left ankle, right ankle, left foot, right foot
CONTACT_SPEED = 0.3  # m/s: EDGE's 0.01 m per frame at 30 fps
NUM_CONTACTS = len(FOOT_JOINTS)
CONTACTS = slice(0, NUM_CONTACTS)
ROOT = slice(NUM_CONTACTS, NUM_CONTACTS + 3)
POSE_DIM = NUM_CONTACTS + 3 * NUM_JOINTS  # 4 + 3 + 21 * 3 = 70
MUSIC_DIM = music_features.EDGE_FEATURE_DIM
MIN_SAMPLE_RATE = music_features.feature_sample_rate(FPS)  # 20 fps x hop 512 = 10240


class DanceMusicError(ValueError):
  """Music (audio, sample rate or features) the EDGE task cannot dance to."""


# -- poses -----------------------------------------------------------------------


def foot_contacts(joints: np.ndarray, fps: float = FPS) -> np.ndarray:
  """(N, T, 22, 3) joints -> (N, T, 4) float32: 1 where a foot joint is still."""
  feet = np.asarray(joints, np.float64)[:, :, FOOT_JOINTS]
  speed = np.zeros(feet.shape[:3])
  speed[:, :-1] = np.linalg.norm(feet[:, 1:] - feet[:, :-1], axis=-1) * fps
  return (speed < CONTACT_SPEED).astype(np.float32)


def joints_to_poses(joints: np.ndarray, fps: float = FPS) -> np.ndarray:
  """(N, T, 22, 3) joint positions -> (N, T, 70) pose vectors (see the module docstring)."""
  joints = np.asarray(joints, np.float32)
  if joints.ndim != 4 or joints.shape[2:] != (NUM_JOINTS, 3):
    raise ValueError(f"joints: expected (N, T, {NUM_JOINTS}, 3), found {joints.shape}")
  root = joints[:, :, 0]
  relative = (joints[:, :, 1:] - root[:, :, None]).reshape(joints.shape[:2] + (-1,))
  return np.concatenate([foot_contacts(joints, fps), root, relative], axis=-1)


def poses_to_joints(poses):
  """(..., T, 70) pose vectors -> (..., T, 22, 3) joints; works on NumPy and JAX arrays."""
  root = poses[..., ROOT]
  relative = poses[..., ROOT.stop :].reshape(poses.shape[:-1] + (NUM_JOINTS - 1, 3))
  return jnp.concatenate([root[..., None, :], root[..., None, :] + relative], axis=-2)


def fit_min_max(values: np.ndarray, eps: float = 1e-6) -> Normalizer:
  """Per-column min-max scaling of (..., D) values to [-1, 1] (EDGE's `Normalizer`).

  A constant column maps to 0 (its half range is floored at eps).
  """
  flat = np.asarray(values, np.float64).reshape(-1, np.shape(values)[-1])
  low, high = flat.min(axis=0), flat.max(axis=0)
  return Normalizer((low + high) / 2, np.maximum((high - low) / 2, eps))


def fit_standardizer(values: np.ndarray) -> Normalizer:
  """Per-column mean/std of (..., D) values; a constant column keeps std 1."""
  flat = np.asarray(values, np.float64).reshape(-1, np.shape(values)[-1])
  std = flat.std(axis=0)
  return Normalizer(flat.mean(axis=0), np.where(std > 1e-6, std, 1.0))


# -- music -----------------------------------------------------------------------


def check_sample_rate(sr) -> int:
  """The sample rate as an int, or a DanceMusicError (EDGE features need fps x 512 Hz)."""
  if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < MIN_SAMPLE_RATE:
    raise DanceMusicError(
      f"sr: expected an int sample rate of at least {MIN_SAMPLE_RATE} Hz (EDGE features at "
      f"{FPS} fps read hops of {music_features.HOP_LENGTH} samples), found {sr!r}"
    )
  return int(sr)


def audio_features(audio: np.ndarray, sr: int, min_frames: int = 1) -> np.ndarray:
  """(T, 35) EDGE features of mono `audio`, one per motion frame in its duration."""
  sr = check_sample_rate(sr)
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise DanceMusicError(f"audio: expected a mono waveform (samples,), found shape {audio.shape}")
  seconds = len(audio) / sr
  frames = int(seconds * FPS + 1e-6)
  if frames < min_frames:
    raise DanceMusicError(
      f"audio: expected at least {min_frames / FPS:g} s of music ({min_frames} frames at "
      f"{FPS} fps, one window), found {seconds:.3f} s"
    )
  features = music_features.edge_baseline_features(audio, sr, fps=FPS)
  return features[:frames].astype(np.float32)


def check_music(music, seq_len: int, name: str = "conditions['music']") -> np.ndarray:
  """EDGE features (N, L, 35) with L >= seq_len as float32, or a DanceMusicError."""
  music = np.asarray(music, np.float32)
  if music.ndim != 3 or music.shape[2] != MUSIC_DIM or not np.isfinite(music).all():
    raise DanceMusicError(
      f"{name}: expected finite EDGE features (N, frames, {MUSIC_DIM}), found shape {music.shape}"
    )
  if music.shape[1] < seq_len:
    raise DanceMusicError(
      f"{name}: expected at least {seq_len} frames (one window, {seq_len / FPS:g} s), "
      f"found {music.shape[1]}"
    )
  return music


def clip_features(data: Mapping[str, np.ndarray], features_of: Callable) -> np.ndarray:
  """(N, ...) `features_of(audio)` of `make_music_dance` clips, computed once per track."""
  by_track: dict[int, np.ndarray] = {}
  for audio, track in zip(data["audio"], data["track_id"]):
    if int(track) not in by_track:
      by_track[int(track)] = features_of(audio)
  return np.stack([by_track[int(t)] for t in data["track_id"]])


def make_clips(data: Mapping, split: str, count: int) -> dict[str, np.ndarray]:
  """`count` clips of `split` of the procedural music-dance data a `data` config names."""
  if data["name"] != "music_dance":
    raise ValueError(f"data.name: expected 'music_dance', found {data['name']!r}")
  return music_dance.make_music_dance(
    split, count, seconds=data["seconds"], seed=data["seed"], sample_rate=data["sample_rate"]
  )


def load_clips(data: Mapping, split: str, count: int) -> dict[str, np.ndarray]:
  """Poses (N, T, 70) and EDGE music features (N, T, 35), un-normalised, of a split."""
  clips = make_clips(data, split, count)
  frames = clips["joints"].shape[1]
  edge_features = lambda audio: audio_features(audio, data["sample_rate"], frames)[:frames]
  return dict(pose=joints_to_poses(clips["joints"]), music=clip_features(clips, edge_features))


# -- windows ---------------------------------------------------------------------


def training_windows(
  clips: Mapping[str, np.ndarray], seq_len: int, stride: int
) -> dict[str, np.ndarray]:
  """Every `seq_len`-frame window every `stride` frames of each clip, keyed like the clips."""
  num_frames = clips["pose"].shape[1]
  if not 0 < seq_len <= num_frames:
    raise ValueError(
      f"data.seq_len: expected a window of 1..{num_frames} frames (data.seconds x {FPS}), "
      f"found {seq_len}"
    )
  if not isinstance(stride, int) or stride < 1:
    raise ValueError(f"data.window_stride: expected a positive number of frames, found {stride!r}")
  starts = np.arange(0, num_frames - seq_len + 1, stride)
  index = starts[:, None] + np.arange(seq_len)
  return {k: v[:, index].reshape((-1, seq_len) + v.shape[2:]) for k, v in clips.items()}


def num_windows(num_frames: int, seq_len: int) -> int:
  """Windows overlapping by half that cover `num_frames` >= seq_len frames."""
  half = seq_len // 2
  return 1 + math.ceil(max(num_frames - seq_len, 0) / half)


def split_windows(music: np.ndarray, seq_len: int) -> np.ndarray:
  """(N, L, M) features -> (N, n, seq_len, M) windows starting every seq_len / 2 frames.

  The last window is filled past the music's end by repeating its last frame
  (those frames are cropped from the dance).
  """
  length = music.shape[1]
  n = num_windows(length, seq_len)
  index = np.arange(n)[:, None] * (seq_len // 2) + np.arange(seq_len)
  return music[:, np.minimum(index, length - 1)]


def overlap_constraint(windows):
  """(N, n, S, D) -> the same with each window's first half set to the previous one's second."""
  half = windows.shape[2] // 2
  return windows.at[:, 1:, :half].set(windows[:, :-1, half:])


def stitch_windows(windows, num_frames: int):
  """(N, n, S, D) overlapping windows -> (N, num_frames, D), overlaps cross-faded.

  Window 0's first half, then each overlap of window i - 1's second half and
  window i's first half blended linearly (window i's weight (j + 0.5) / (S/2)
  at frame j of the overlap, as EDGE's `render_sample` fades), then the last
  window's second half. Windows that agree where they overlap stitch exactly.
  """
  n, seq_len = windows.shape[1], windows.shape[2]
  half = seq_len // 2
  weight = ((jnp.arange(half) + 0.5) / half).reshape((half,) + (1,) * (windows.ndim - 3))
  overlaps = windows[:, :-1, half:] * (1 - weight) + windows[:, 1:, :half] * weight
  halves = jnp.concatenate([windows[:, :1, :half], overlaps, windows[:, -1:, half:]], axis=1)
  return halves.reshape((windows.shape[0], (n + 1) * half) + windows.shape[3:])[:, :num_frames]
