"""Lip-sync scores LSE-D and LSE-C (Prajwal et al. 2020) from SyncNet embeddings.

The protocol of syncnet_python's `SyncNetInstance.evaluate`, as Wav2Lip's
`scores_LSE` runs it:

1. Video at 25 fps, 224x224 face crops, BGR in [0, 255]; audio mono 16-bit
   PCM at 16 kHz, turned into 13 MFCCs at 100 Hz (python_speech_features
   defaults: 25 ms rectangular windows, pre-emphasis 0.97, 26 mel filters,
   512-point FFT, lifter 22, c0 replaced by the log frame energy).
2. Windows: with L = min(frames, samples // 640), windows v = 0 .. L - 6
   (the reference's `range(L - 5)`) pair frames [v, v + 5) with MFCC frames
   [4 v, 4 v + 20); SyncNet embeds both.
3. For every video window i and shift s in [-vshift, vshift] (vshift 15),
   the distance ||video_i - audio_{i+s} + 1e-6|| (torch `pairwise_distance`),
   with zero audio embeddings outside the sequence.
4. Mean distance per shift over i; LSE-D = its minimum, LSE-C = median -
   minimum, AV offset = -(best shift): positive when the audio leads
   (audio_t = video_{t + offset}). A dataset score averages LSE-D and LSE-C
   over videos.

The distances run on the host in float64 numpy, like the other metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from jaxgen.metrics.frechet import TooFewSamplesError
from jaxgen.models import syncnet

SAMPLE_RATE = 16000
VIDEO_FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS  # 640
MFCC_FRAMES_PER_VIDEO_FRAME = 4  # 100 Hz / 25 fps
DEFAULT_VSHIFT = 15
PAIRWISE_DISTANCE_EPS = 1e-6  # torch.nn.functional.pairwise_distance
INT16_SCALE = 32768.0

# python_speech_features.mfcc defaults.
_WINDOW_SECONDS = 0.025
_STEP_SECONDS = 0.01
_NUM_FILTERS = 26
_NFFT = 512
_PREEMPHASIS = 0.97
_CEPSTRAL_LIFTER = 22


@dataclasses.dataclass(frozen=True)
class LipSyncScores:
  """Scores of one video.

  lse_d: minimum over shifts of the mean embedding distance (lower is better).
  lse_c: median minus minimum of those means (higher is better).
  offset: AV offset in video frames; positive when the audio leads.
  mean_distances: (2 vshift + 1,) mean distance per shift, shift -vshift first.
  """

  lse_d: float
  lse_c: float
  offset: int
  mean_distances: np.ndarray


# ---------------------------------------------------------------------------
# Audio features.


def mfcc(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """(num_frames, 13) MFCCs at 100 Hz, equal to `python_speech_features.mfcc(audio, sample_rate)`.

  Integer audio is used as it is (the reference reads 16-bit PCM); float
  audio is taken to be in [-1, 1] and scaled to the int16 range, because the
  frame energy that replaces c0 depends on the scale.
  """
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono with shape (samples,), got shape {audio.shape}")
  if audio.size == 0:
    raise TooFewSamplesError("audio must hold at least one sample, got an empty array")
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  signal = audio.astype(np.float64)
  if np.issubdtype(audio.dtype, np.floating):
    signal = signal * INT16_SCALE
  signal = np.concatenate([signal[:1], signal[1:] - _PREEMPHASIS * signal[:-1]])
  frames = _frames(
    signal,
    _round_half_up(_WINDOW_SECONDS * sample_rate),
    _round_half_up(_STEP_SECONDS * sample_rate),
  )
  power = np.abs(np.fft.rfft(frames, _NFFT)) ** 2 / _NFFT
  tiny = np.finfo(np.float64).eps  # the reference's guard against log(0)
  energy = power.sum(1)
  energy = np.where(energy == 0, tiny, energy)
  filter_energies = power @ _mel_filterbank(sample_rate).T
  filter_energies = np.where(filter_energies == 0, tiny, filter_energies)
  cepstra = scipy.fft.dct(np.log(filter_energies), type=2, axis=1, norm="ortho")[
    :, : syncnet.NUM_MFCC
  ]
  n = np.arange(syncnet.NUM_MFCC)
  cepstra = cepstra * (1 + _CEPSTRAL_LIFTER / 2 * np.sin(np.pi * n / _CEPSTRAL_LIFTER))
  cepstra[:, 0] = np.log(energy)
  return cepstra


def _round_half_up(x: float) -> int:
  return math.floor(x + 0.5)


def _frames(signal: np.ndarray, length: int, step: int) -> np.ndarray:
  """Overlapping frames; the last one zero-padded (python_speech_features `framesig`)."""
  if len(signal) <= length:
    count = 1
  else:
    count = 1 + math.ceil((len(signal) - length) / step)
  padded = np.zeros((count - 1) * step + length)
  padded[: len(signal)] = signal
  return padded[np.arange(count)[:, None] * step + np.arange(length)[None, :]]


@functools.lru_cache(maxsize=8)
def _mel_filterbank(sample_rate: int) -> np.ndarray:
  """(26, 257) triangular filters on FFT bins floored from mel-spaced edges, as the reference."""
  high_mel = 2595 * np.log10(1 + (sample_rate / 2) / 700.0)
  hz = 700 * (10 ** (np.linspace(0.0, high_mel, _NUM_FILTERS + 2) / 2595.0) - 1)
  edges = np.floor((_NFFT + 1) * hz / sample_rate).astype(int)
  bank = np.zeros((_NUM_FILTERS, _NFFT // 2 + 1))
  for j, (left, center, right) in enumerate(zip(edges[:-2], edges[1:-1], edges[2:])):
    rising = np.arange(left, center)
    bank[j, rising] = (rising - left) / (center - left)
    falling = np.arange(center, right)
    bank[j, falling] = (right - falling) / (right - center)
  bank.flags.writeable = False
  return bank


# ---------------------------------------------------------------------------
# Windows and embeddings.


def num_windows(num_frames: int, num_samples: int) -> int:
  """Windows the reference evaluates: min(frames, samples // 640) - 5."""
  return min(num_frames, num_samples // SAMPLES_PER_FRAME) - syncnet.NUM_FRAMES


def sync_windows(
  frames: np.ndarray, audio: np.ndarray, *, channels: str = "bgr"
) -> tuple[np.ndarray, np.ndarray]:
  """(W, 5, 224, 224, 3) video windows and (W, 20, 13) MFCC windows of one 25 fps / 16 kHz clip.

  frames: (T, 224, 224, 3) face crops in [0, 255]; `channels` says their
  order ("bgr" as the reference's OpenCV frames, or "rgb", flipped here).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[1:] != (syncnet.FRAME_SIZE, syncnet.FRAME_SIZE, 3):
    raise ValueError(
      f"frames must have shape (T, {syncnet.FRAME_SIZE}, {syncnet.FRAME_SIZE}, 3), "
      f"got shape {frames.shape}"
    )
  if channels not in ("bgr", "rgb"):
    raise ValueError(f"channels must be 'bgr' or 'rgb', got {channels!r}")
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono with shape (samples,), got shape {audio.shape}")
  count = num_windows(len(frames), len(audio))
  if count < 1:
    raise TooFewSamplesError(
      f"frames and audio must cover at least {syncnet.NUM_FRAMES + 1} video frames "
      f"({(syncnet.NUM_FRAMES + 1) * SAMPLES_PER_FRAME} samples), got {len(frames)} frames "
      f"and {len(audio)} samples"
    )
  if channels == "rgb":
    frames = frames[..., ::-1]
  frames = frames.astype(np.float32)
  cepstra = mfcc(audio).astype(np.float32)
  starts = np.arange(count)
  video = frames[starts[:, None] + np.arange(syncnet.NUM_FRAMES)]
  mfcc_starts = MFCC_FRAMES_PER_VIDEO_FRAME * starts
  audio_windows = cepstra[mfcc_starts[:, None] + np.arange(syncnet.NUM_MFCC_FRAMES)]
  return video, audio_windows


@jax.jit
def _embed(variables, video, mfcc_windows):
  return syncnet.SyncNet().apply(variables, video, mfcc_windows)


def syncnet_embeddings(
  variables: Mapping[str, Any],
  frames: np.ndarray,
  audio: np.ndarray,
  *,
  channels: str = "bgr",
  batch_size: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
  """(W, 1024) video and audio SyncNet embeddings of one clip (see `sync_windows`).

  Runs the jitted network on fixed-size batches (the last one padded) so it
  compiles once per `batch_size`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  video, audio_windows = sync_windows(frames, audio, channels=channels)
  video_out, audio_out = [], []
  for start in range(0, len(video), batch_size):
    v, a = video[start : start + batch_size], audio_windows[start : start + batch_size]
    valid = len(v)
    pad = batch_size - valid
    v = np.pad(v, ((0, pad),) + ((0, 0),) * 4)
    a = np.pad(a, ((0, pad), (0, 0), (0, 0)))
    v_emb, a_emb = _embed(variables, jnp.asarray(v), jnp.asarray(a))
    video_out.append(np.asarray(v_emb)[:valid])
    audio_out.append(np.asarray(a_emb)[:valid])
  return np.concatenate(video_out), np.concatenate(audio_out)


# ---------------------------------------------------------------------------
# Scores.


def offset_distances(
  video_embeddings: np.ndarray, audio_embeddings: np.ndarray, vshift: int = DEFAULT_VSHIFT
) -> np.ndarray:
  """(W, 2 vshift + 1) distances ||video_i - audio_{i+s} + 1e-6||, s = -vshift..vshift.

  Audio embeddings outside [0, W) are zero vectors, as the reference pads them.
  """
  video = _as_embeddings("video_embeddings", video_embeddings)
  audio = _as_embeddings("audio_embeddings", audio_embeddings)
  if video.shape != audio.shape:
    raise ValueError(
      f"video_embeddings and audio_embeddings must have the same shape, "
      f"got {video.shape} and {audio.shape}"
    )
  if not isinstance(vshift, (int, np.integer)) or vshift < 0:
    raise ValueError(f"vshift must be an integer >= 0, got {vshift!r}")
  padded = np.pad(audio, ((vshift, vshift), (0, 0)))
  # Row i holds padded rows i .. i + 2 vshift, i.e. audio shifted by -vshift .. vshift.
  windows = np.lib.stride_tricks.sliding_window_view(padded, len(video), axis=0)
  shifted = np.moveaxis(windows, -1, 0)  # (W, 2 vshift + 1, D)
  return np.linalg.norm(video[:, None, :] - shifted + PAIRWISE_DISTANCE_EPS, axis=-1)


def lse_d_c(
  video_embeddings: np.ndarray, audio_embeddings: np.ndarray, vshift: int = DEFAULT_VSHIFT
) -> LipSyncScores:
  """LSE-D, LSE-C and the AV offset of one clip from its (W, D) window embeddings."""
  mean = offset_distances(video_embeddings, audio_embeddings, vshift).mean(0)
  best = int(np.argmin(mean))  # the first minimum, as torch.min
  # torch.median takes the lower middle value; 2 vshift + 1 values have one middle.
  median = float(np.sort(mean)[(len(mean) - 1) // 2])
  return LipSyncScores(
    lse_d=float(mean[best]),
    lse_c=median - float(mean[best]),
    offset=vshift - best,
    mean_distances=mean,
  )


def lip_sync_scores(
  variables: Mapping[str, Any],
  frames: np.ndarray,
  audio: np.ndarray,
  *,
  channels: str = "bgr",
  vshift: int = DEFAULT_VSHIFT,
  batch_size: int = 20,
) -> LipSyncScores:
  """LSE-D / LSE-C of one 25 fps clip with 16 kHz audio, end to end (see the module doc)."""
  video, audio_emb = syncnet_embeddings(
    variables, frames, audio, channels=channels, batch_size=batch_size
  )
  return lse_d_c(video, audio_emb, vshift)


def mean_scores(scores: Sequence[LipSyncScores]) -> tuple[float, float]:
  """(LSE-D, LSE-C) of a dataset: the means over its clips."""
  if len(scores) == 0:
    raise TooFewSamplesError("scores must hold at least one clip's LipSyncScores, got none")
  return (float(np.mean([s.lse_d for s in scores])), float(np.mean([s.lse_c for s in scores])))


def _as_embeddings(name: str, embeddings: np.ndarray) -> np.ndarray:
  embeddings = np.asarray(embeddings, np.float64)
  if embeddings.ndim != 2:
    raise ValueError(f"{name} must have shape (W, D), got shape {embeddings.shape}")
  if len(embeddings) == 0:
    raise TooFewSamplesError(f"{name} must hold at least one window, got 0")
  return embeddings
