"""Music-to-dance metrics with the conventions of Bailando's evaluation code.

Every function that reads time takes the motion's frame rate `fps`
explicitly. Bailando's constants are in frames of AIST++'s 60 fps motion;
here they are the same durations in seconds (`AIST_FPS`), so at fps = 60 the
values are the reference's and at other rates they measure the same thing.
Beats are frame indices at the caller's `fps`. Text-to-motion data (20 fps,
22 joints) goes through `dance_features.to_aist_skeleton` (60 fps, 24 joints)
before the kinetic / geometric features, whose frame windows are
the reference's at 60 fps.

- Motion beats: frames where the mean joint speed, smoothed by a Gaussian of
  sigma 5/60 s (5 frames at 60 fps), has a strict local minimum (the dancer
  pauses on a beat). Speed t is |x_{t+1} - x_t| and is attributed to frame t,
  as the reference.
- Music beats: librosa beat tracking on the onset envelope, converted from
  audio hop frames to motion frames (Bailando resamples audio to
  sr = fps · hop so the two coincide).
- Beat Align Score: mean over music beats b of exp(-min_d (d - b)^2 / (2 σ^2))
  with σ = 3/60 s (3 frames at 60 fps) and d over motion beats.
- FID_k / FID_g: Fréchet distances between generated and ground-truth
  kinetic (72-d) / geometric (32-d) features after z-scoring both with the
  ground-truth mean and population std. Dimensions that are constant over the
  ground truth (a geometric test that never or always holds) have no scale:
  the reference divides by its 1e-10 and FID explodes (~1e19) when generated
  dances differ there; here they are left out of FID and diversity with a
  `ConstantFeatureWarning` naming them. The default "eigh" Fréchet form
  stays exact for the rank-deficient covariances of a few dozen dances;
  `method="sqrtm"` follows the reference's scipy `sqrtm` (eps 1e-5) but, unlike
  it, raises on a large imaginary part. Feature extraction (AIST++ kinetic
  and geometric features from 24×3 joints) is not implemented here; these
  take the feature arrays.
- Diversity (Div_k / Div_g): mean distance over all pairs of z-scored
  features.

Host numpy and scipy in float64, like `frechet`.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.ndimage
import scipy.signal
import scipy.spatial

from jaxgen.data.motion import check_finite_frames
from jaxgen.metrics import frechet
from jaxgen.metrics.frechet import TooFewSamplesError

# Bailando adds this to the std before dividing, and this to singular
# covariances' diagonals in its sqrtm.
_STD_EPS = 1e-10
_SQRTM_EPS = 1e-5
# A ground-truth dimension whose std is below this fraction of its magnitude
# is constant up to rounding.
_CONSTANT_RTOL = 1e-8

AIST_FPS = 60.0  # AIST++ motion; Bailando's frame constants are at this rate.
BEAT_SMOOTHING_SECONDS = 5.0 / AIST_FPS
BEAT_ALIGNMENT_SIGMA_SECONDS = 3.0 / AIST_FPS


class ConstantFeatureWarning(UserWarning):
  """Feature dimensions constant over the ground truth were left out of a z-scored metric."""


def mean_joint_speed(joints: np.ndarray) -> np.ndarray:
  """(T - 1,) mean over joints of |x_{t+1} - x_t| for (T, J, 3) joints, in units per frame."""
  joints = _as_joints(joints)
  return np.linalg.norm(np.diff(joints, axis=0), axis=-1).mean(-1)


def motion_beats(
  joints: np.ndarray, *, fps: float, smoothing_seconds: float = BEAT_SMOOTHING_SECONDS
) -> np.ndarray:
  """Frame indices of the strict local minima of the Gaussian-smoothed mean joint speed.

  `joints` (T, J, 3) at `fps` frames per second; the smoothing sigma is
  `smoothing_seconds` (Bailando's 5 frames at 60 fps), i.e.
  smoothing_seconds · fps frames.
  """
  _check_positive(fps=fps, smoothing_seconds=smoothing_seconds)
  speed = scipy.ndimage.gaussian_filter1d(mean_joint_speed(joints), smoothing_seconds * fps)
  return scipy.signal.argrelextrema(speed, np.less)[0]


def music_beats_from_audio(
  audio: np.ndarray,
  sr: int,
  hop_length: int = 512,
  *,
  fps: float,
  start_bpm: float | None = None,
  tightness: float = 100.0,
  num_frames: int | None = None,
) -> np.ndarray:
  """Beat positions of mono `audio` as motion frame indices (sorted, unique).

  Bailando's preprocessing: onset-strength envelope, then
  `librosa.beat.beat_track(..., start_bpm, tightness=100)`, where `start_bpm`
  is librosa's tempo estimate unless given. Hop frames become motion frames
  by rounding time · fps; `num_frames` drops beats at or after that frame
  (the reference keeps only beats inside the motion). Like the reference,
  beats may trail the audible onset by about one hop (librosa's spectral flux
  peaks once the click fills the window).
  """
  import librosa  # Deferred: importing librosa takes seconds.

  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono with shape (samples,), got shape {audio.shape}")
  if audio.size < hop_length:
    raise TooFewSamplesError(
      f"audio must have at least hop_length={hop_length} samples, got {audio.size}"
    )
  if sr <= 0 or hop_length <= 0 or fps <= 0:
    raise ValueError(
      f"sr, hop_length and fps must be positive, got sr={sr}, hop_length={hop_length}, fps={fps}"
    )
  envelope = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop_length)
  if start_bpm is None:
    start_bpm = float(
      librosa.feature.tempo(onset_envelope=envelope, sr=sr, hop_length=hop_length)[0]
    )
  _, hop_frames = librosa.beat.beat_track(
    onset_envelope=envelope, sr=sr, hop_length=hop_length, start_bpm=start_bpm, tightness=tightness
  )
  frames = np.unique(np.round(np.asarray(hop_frames) * hop_length / sr * fps).astype(np.int64))
  if num_frames is not None:
    frames = frames[frames < num_frames]
  return frames


def beat_alignment_score(
  music_beats: np.ndarray,
  motion_beats: np.ndarray,
  *,
  fps: float,
  sigma_seconds: float = BEAT_ALIGNMENT_SIGMA_SECONDS,
) -> float:
  """Mean over music beats of exp(-(distance to the nearest motion beat)^2 / (2 sigma^2)).

  Both beat arrays are frame indices at `fps`; sigma is `sigma_seconds`
  (Bailando's 3 frames at 60 fps), i.e. sigma_seconds · fps frames.
  """
  music = _as_beats("music_beats", music_beats)
  motion = _as_beats("motion_beats", motion_beats)
  _check_positive(fps=fps, sigma_seconds=sigma_seconds)
  sigma = sigma_seconds * fps
  nearest_squared = ((music[:, None] - motion[None, :]) ** 2).min(axis=1)
  return float(np.exp(-nearest_squared / (2 * sigma**2)).mean())


def normalize_by_ground_truth(
  gt_features: np.ndarray, gen_features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Z-scores both (N, D) feature sets with the ground truth's mean and population std.

  The reference's formula, (x - mean) / (std + 1e-10), on the dimensions that
  vary over the ground truth; constant ones are dropped (the outputs have
  D' <= D columns) with a `ConstantFeatureWarning` that names them, since
  dividing by 1e-10 would let them swamp every metric.
  """
  gt = _as_features("gt_features", gt_features)
  gen = _as_features("gen_features", gen_features)
  if gt.shape[1] != gen.shape[1]:
    raise ValueError(
      f"gt_features and gen_features must have the same feature dimension, "
      f"got {gt.shape[1]} and {gen.shape[1]}"
    )
  mean, std = gt.mean(0), gt.std(0)
  constant = std <= _CONSTANT_RTOL * np.maximum(np.abs(mean), _CONSTANT_RTOL)
  if constant.all():
    raise ValueError(
      f"gt_features must vary in at least one dimension over its {len(gt)} samples, "
      f"got all {gt.shape[1]} constant"
    )
  if constant.any():
    dims = np.flatnonzero(constant)
    differ = int((np.abs(gen[:, dims] - mean[dims]) > _CONSTANT_RTOL).any(axis=1).sum())
    warnings.warn(
      f"feature dimensions {dims.tolist()} are constant over the {len(gt)} ground-truth "
      f"samples, so they cannot be z-scored (the reference divides by {_STD_EPS:g}); they "
      f"are left out ({differ} of {len(gen)} generated samples differ there)",
      ConstantFeatureWarning,
      stacklevel=2,
    )
    keep = ~constant
    gt, gen, mean, std = gt[:, keep], gen[:, keep], mean[keep], std[keep]
  std = std + _STD_EPS
  return (gt - mean) / std, (gen - mean) / std


def fid_k(gt_kinetic: np.ndarray, gen_kinetic: np.ndarray, *, method: str = "eigh") -> float:
  """FID_k: Fréchet distance of ground-truth-z-scored kinetic features (N, 72)."""
  return _normalized_frechet(gt_kinetic, gen_kinetic, method)


def fid_g(gt_geometric: np.ndarray, gen_geometric: np.ndarray, *, method: str = "eigh") -> float:
  """FID_g: Fréchet distance of ground-truth-z-scored geometric features (N, 32)."""
  return _normalized_frechet(gt_geometric, gen_geometric, method)


def feature_diversity(gt_features: np.ndarray, gen_features: np.ndarray) -> float:
  """Div_k / Div_g: mean pairwise distance of `gen_features` z-scored by the ground truth.

  Pass the ground truth as both arguments for the ground truth's own diversity.
  """
  _, gen = normalize_by_ground_truth(gt_features, gen_features)
  if len(gen) < 2:
    raise TooFewSamplesError(f"gen_features must have at least 2 samples, got {len(gen)}")
  return float(scipy.spatial.distance.pdist(gen).mean())


def _normalized_frechet(gt_features: np.ndarray, gen_features: np.ndarray, method: str) -> float:
  for name, features in (("gt_features", gt_features), ("gen_features", gen_features)):
    if len(_as_features(name, features)) < 2:
      raise TooFewSamplesError(
        f"{name} must have at least 2 samples for a covariance, got {len(features)}"
      )
  gt, gen = normalize_by_ground_truth(gt_features, gen_features)
  return frechet.frechet_distance_from_statistics(
    frechet.statistics_from_features(gen),
    frechet.statistics_from_features(gt),
    eps=_SQRTM_EPS,
    method=method,
  )


def _check_positive(**values: float) -> None:
  for name, value in values.items():
    if not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}")


def _as_joints(joints: np.ndarray) -> np.ndarray:
  joints = np.asarray(joints, np.float64)
  if joints.ndim != 3 or joints.shape[-1] != 3:
    raise ValueError(f"joints must have shape (T, J, 3), got shape {joints.shape}")
  if joints.shape[0] < 2:
    raise TooFewSamplesError(f"joints must have at least 2 frames, got {joints.shape[0]}")
  check_finite_frames(joints, "joints", frame_ndim=2)  # NaN speeds would hide beats.
  return joints


def _as_beats(name: str, beats: np.ndarray) -> np.ndarray:
  beats = np.asarray(beats)
  if beats.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of frame indices, got shape {beats.shape}")
  if beats.size == 0:
    raise TooFewSamplesError(f"{name} must hold at least one beat, got an empty array")
  return beats.astype(np.float64)


def _as_features(name: str, features: np.ndarray) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"{name} must have shape (N, D), got shape {features.shape}")
  return features
