"""Wav2Lip's audio front end: speech checks, its mel spectrogram and per-frame windows.

Talking-face models hear speech the way Wav2Lip does (`audio.py` and
`hparams.py` of Rudrabha/Wav2Lip), so that weights trained by the reference
read our features and ours read its audio:

- 16 kHz mono; pre-emphasis `lfilter([1, -0.97], [1], wav)`;
- `librosa.stft(n_fft=800, hop_length=200, win_length=800)` with librosa's
  defaults (Hann window, `center=True`): 80 mel frames per second, frame j
  centred on sample 200·j, so n samples give 1 + n // 200 frames;
- magnitude → 80 Slaney mel bands (`librosa.filters.mel`, 55–7600 Hz) →
  `20·log10(max(1e-5, mel)) − 20` dB → `8·(dB + 100)/100 − 4` clipped to
  [−4, 4] (symmetric normalisation, `max_abs_value` 4, `min_level_db` −100).
  Silence therefore maps to −4 exactly.
- Video frame i at `fps` reads the 16 mel frames (0.2 s) starting at
  `int(i · 80 / fps)` (`crop_audio_window` in training, the chunk loop of
  `inference.py`).

The reference keeps its spectrogram as (80, T); here it is transposed to
(T, 80), time first like every sequence in jaxgen. `check_speech` is the gate
for audio a person hands in: named errors for what would silently give a
useless spectrogram, and resampling (with a warning) for a merely different
sample rate. librosa is imported lazily because importing it takes seconds.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import warnings

import numpy as np
import scipy.signal

SAMPLE_RATE = 16000
MEL_FPS = 80.0  # SAMPLE_RATE / HOP_SIZE: mel frames per second.
NUM_MELS = 80
MEL_WINDOW = 16  # Mel frames per video frame's window: 0.2 s, five frames at 25 fps.

N_FFT = 800
HOP_SIZE = 200
WIN_SIZE = 800
PREEMPHASIS = 0.97
FMIN, FMAX = 55.0, 7600.0
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_SILENCE = -MAX_ABS_VALUE  # What silence (or padding past the audio) looks like.

# Rates a recording can plausibly have (telephone 8 kHz ... studio 384 kHz);
# outside them the rate is a mistake (e.g. samples and rate swapped), not a format.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000
# A peak below -60 dBFS is no speech a lip-sync model can follow.
SILENCE_PEAK = 1e-3
# Samples this close to full scale count as clipped; speech peak-normalised to
# 1.0 has a handful, a clipped recording has flat tops: more than 1 in 200.
CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 0.005
MIN_SPEECH_SECONDS = MEL_WINDOW / MEL_FPS  # One video frame's window.


class AudioInputError(ValueError):
  """Audio, a sample rate or a window request that speech features cannot be built from."""


class VideoAudioLengthError(AudioInputError):
  """The audio ends before the video frames that need it."""


class SpeechFileNotFoundError(AudioInputError, FileNotFoundError):
  """A speech file path that does not exist."""


def check_speech(
  audio: np.ndarray,
  sample_rate: int,
  *,
  name: str = "audio",
  min_seconds: float = MIN_SPEECH_SECONDS,
) -> np.ndarray:
  """`audio` as 16 kHz float32 speech, or an `AudioInputError` naming `name`.

  Errors: not a 1-D floating-point array, NaN or inf samples, a sample rate
  that is not a whole number in [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`],
  shorter than `min_seconds` (default: one video frame's 0.2-s window),
  silence only (peak below `SILENCE_PEAK`, −60 dBFS), samples outside
  [−1, 1] (int16 PCM stored as floats), or clipped (more than
  `MAX_CLIPPED_FRACTION` of the samples at |x| ≥ `CLIP_LEVEL`). Any other
  rate is resampled to 16 kHz with `librosa.resample` (soxr, as
  `librosa.load(sr=16000)` in the reference) and a warning.
  """
  samples = _checked_samples(audio, name)
  rate = check_sample_rate(sample_rate, name=f"{name} sample_rate")
  if isinstance(min_seconds, bool) or not _is_positive_number(min_seconds):
    raise AudioInputError(f"min_seconds must be a positive number, got {min_seconds!r}")
  seconds = samples.size / rate
  if seconds < min_seconds:
    raise AudioInputError(
      f"{name} is too short: expected at least {min_seconds:.3f} s (one video frame's "
      f"{MEL_WINDOW}-frame mel window), got {samples.size} samples = {seconds:.3f} s at {rate} Hz"
    )
  peak = float(np.max(np.abs(samples)))
  if peak < SILENCE_PEAK:
    raise AudioInputError(
      f"{name} is silent: expected speech with a peak of at least {SILENCE_PEAK:g} "
      f"(-60 dBFS), got a peak of {peak:.3g}"
    )
  if peak > 1.0:
    raise AudioInputError(
      f"{name} must hold samples in [-1, 1], got a peak of {peak:.4g} "
      f"(int16 PCM must be divided by 32768)"
    )
  clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
  if clipped > MAX_CLIPPED_FRACTION:
    raise AudioInputError(
      f"{name} is clipped: expected at most {MAX_CLIPPED_FRACTION:.1%} of the samples at "
      f"|x| >= {CLIP_LEVEL}, got {clipped:.2%}; lower the recording or export level"
    )
  return _at_model_rate(samples, rate, name)


def check_sample_rate(sample_rate: int, *, name: str = "sample_rate") -> int:
  """`sample_rate` as an int, or an `AudioInputError` for a non-positive, fractional or absurd one."""
  if isinstance(sample_rate, bool) or not isinstance(
    sample_rate, (int, float, np.integer, np.floating)
  ):
    raise AudioInputError(f"{name} must be a number of samples per second, got {sample_rate!r}")
  rate = float(sample_rate)
  if not (math.isfinite(rate) and rate == round(rate)):
    raise AudioInputError(f"{name} must be a whole number of Hz, got {sample_rate!r}")
  if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
    raise AudioInputError(
      f"{name} must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sample_rate!r}"
    )
  return int(rate)


def wav2lip_mel(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Wav2Lip's normalised log-mel spectrogram, (1 + n // 200, 80) float32 in [−4, 4].

  `audio` is a 1-D floating waveform; another rate than 16 kHz is resampled
  with a warning. Only its form is checked here (silence gives −4
  everywhere); `check_speech` judges whether it is usable speech. The
  reference's `melspectrogram(wav)` is the transpose of this.
  """
  import librosa  # Deferred: importing librosa takes seconds.

  samples = _checked_samples(audio, "audio")
  samples = _at_model_rate(samples, check_sample_rate(sample_rate), "audio")
  emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], samples)
  spectrum = librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP_SIZE, win_length=WIN_SIZE)
  mel = _mel_basis() @ np.abs(spectrum)
  min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))  # 1e-5, written as the reference does.
  decibels = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
  scaled = (2.0 * MAX_ABS_VALUE) * ((decibels - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
  return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).T.astype(np.float32)


def mel_window_starts(num_frames: int, fps: float = 25.0) -> np.ndarray:
  """(num_frames,) int64: the first mel frame of each video frame's window, `int(i · 80 / fps)`."""
  _check_frame_count(num_frames)
  fps = _checked_fps(fps)
  # The reference's float expression (inference.py: int(i * (80. / fps))), not an exact fraction.
  return np.array([int(i * (MEL_FPS / fps)) for i in range(num_frames)], dtype=np.int64)


def mel_windows(
  mel: np.ndarray, num_frames: int, fps: float = 25.0, *, pad: bool = False
) -> np.ndarray:
  """(num_frames, 16, 80) float32: the mel window each video frame hears.

  Frame i reads `mel[s_i : s_i + 16]` with `s_i = int(i · 80 / fps)`; the
  same window is the SyncNet expert's audio for the five frames starting at
  i. The last frames of a clip whose audio is exactly as long as its video
  need up to 0.2 s past the audio's end; they read the last 16 mel frames
  instead, the reference inference's rule for its final chunk (its training
  drops such frames instead). (Wav2Lip's training gives its generator the
  window one frame earlier, `crop_audio_window(spec, i - 1)`, from an
  off-by-one in `get_segmented_mels`; inference uses `s_i` as here.)

  Audio shorter than the video by up to one video frame (⌈80 / fps⌉ mel
  frames: encoder padding, resampling) is accepted. Shorter audio is a `VideoAudioLengthError`, unless
  `pad=True`: then the spectrogram is extended with silence (−4) to the
  video's length, so the frames past the audio hear nothing.
  """
  mel = np.asarray(mel)
  if (
    mel.ndim != 2
    or mel.shape[1] != NUM_MELS
    or not np.issubdtype(mel.dtype, np.floating)
    or not np.all(np.isfinite(mel))
  ):
    raise AudioInputError(
      f"mel must be a finite float (T, {NUM_MELS}) spectrogram from wav2lip_mel, "
      f"got shape {mel.shape} and dtype {mel.dtype}"
    )
  starts = mel_window_starts(num_frames, fps)
  fps = float(fps)
  # The mel length of audio exactly as long as the video: 1 + samples // 200.
  video_length = 1 + math.floor(num_frames * MEL_FPS / fps + 1e-9)
  tolerance = math.ceil(MEL_FPS / fps)  # One video frame of audio, rounded up to mel frames.
  shortfall = max(video_length, MEL_WINDOW) - mel.shape[0]
  if shortfall > 0 and pad:
    mel = np.concatenate([mel, np.full((shortfall, NUM_MELS), MEL_SILENCE, mel.dtype)])
  elif mel.shape[0] < MEL_WINDOW or shortfall > tolerance:
    raise VideoAudioLengthError(
      f"video/audio length mismatch: {num_frames} frames at {fps:g} fps last "
      f"{num_frames / fps:.3f} s and need {max(video_length, MEL_WINDOW)} mel frames "
      f"(at least {MEL_WINDOW}; up to one video frame less is tolerated), but the audio gives "
      f"{mel.shape[0]} mel frames ({(mel.shape[0] - 1) / MEL_FPS:.3f} s); trim the video or pass "
      f"pad=True to hear silence after the audio ends"
    )
  starts = np.minimum(starts, mel.shape[0] - MEL_WINDOW)
  return mel[starts[:, None] + np.arange(MEL_WINDOW)].astype(np.float32)


def load_speech(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """(float32 16-kHz mono waveform, 16000) of a WAV, FLAC, MP3, ... file librosa reads.

  Channels are averaged to mono; another rate is resampled with a warning;
  the result passes `check_speech` (errors name the file). A missing file
  is a `SpeechFileNotFoundError`, an unreadable one an `AudioInputError`.
  """
  import librosa  # Deferred: importing librosa takes seconds.

  file = pathlib.Path(path)
  if not file.is_file():
    what = "is a directory" if file.is_dir() else "does not exist"
    raise SpeechFileNotFoundError(f"speech file {str(file)!r} {what}: expected an audio file")
  try:
    audio, rate = librosa.load(file, sr=None, mono=True)
  except Exception as error:  # soundfile and audioread raise many unrelated types.
    raise AudioInputError(
      f"speech file {str(file)!r} could not be decoded as audio: {type(error).__name__}: {error}"
    ) from error
  return check_speech(audio, rate, name=f"speech file {str(file)!r}"), SAMPLE_RATE


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
  import librosa  # Deferred: importing librosa takes seconds.

  return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)


def _checked_samples(audio: np.ndarray, name: str) -> np.ndarray:
  """`audio` as a float32 1-D array of finite samples, or a named error."""
  samples = np.asarray(audio)
  if not np.issubdtype(samples.dtype, np.floating):
    raise AudioInputError(
      f"{name} must hold floating-point samples in [-1, 1], got dtype {samples.dtype}"
      + (
        " (int16 PCM must be divided by 32768)" if np.issubdtype(samples.dtype, np.integer) else ""
      )
    )
  if samples.ndim != 1 or samples.size == 0:
    raise AudioInputError(
      f"{name} must be a non-empty 1-D mono waveform, got shape {samples.shape}"
      + (" (average the channels first)" if samples.ndim == 2 else "")
    )
  bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
  if bad:
    raise AudioInputError(
      f"{name} must be finite, got {bad} NaN or infinite samples of {samples.size}"
    )
  return samples.astype(np.float32, copy=False)


def _at_model_rate(samples: np.ndarray, rate: int, name: str) -> np.ndarray:
  if rate == SAMPLE_RATE:
    return samples
  import librosa  # Deferred: importing librosa takes seconds.

  warnings.warn(
    f"{name} is sampled at {rate} Hz; resampling to the {SAMPLE_RATE} Hz Wav2Lip's features use",
    stacklevel=3,
  )
  return librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)


def _check_frame_count(num_frames: int) -> None:
  if (
    isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1
  ):
    raise AudioInputError(f"num_frames must be a positive int, got {num_frames!r}")


def _checked_fps(fps: float) -> float:
  if isinstance(fps, bool) or not _is_positive_number(fps):
    raise AudioInputError(f"fps must be a positive number of video frames per second, got {fps!r}")
  return float(fps)


def _is_positive_number(value) -> bool:
  return (
    isinstance(value, (int, float, np.integer, np.floating))
    and math.isfinite(float(value))
    and value > 0
  )
