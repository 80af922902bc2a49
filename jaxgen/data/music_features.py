"""Music features for dance generation: EDGE's 35-d and Bailando's 438-d, cached per clip.

Both references compute librosa features at sample rate fps · 512, so that
librosa's default hop of 512 samples gives one feature frame per motion frame
(frame t is centred on t / fps seconds; a clip resampled to n samples has
1 + n // 512 frames, about 1 + seconds · fps).

- `edge_baseline_features`: EDGE's "baseline" features
  (`data/audio_extraction/baseline_features.py`), 30 fps: onset envelope 1,
  MFCC 20, chroma CENS 12, onset peaks one-hot 1, beats one-hot 1.
- `bailando_features`: Bailando's features (`_prepro_aistpp_music.py`,
  `extractor.py`), at the motion's 60 fps or its GPT's token rate of 7.5 fps:
  MFCC 20, ΔMFCC 20, chroma CQT 12, onset strength 1, beats one-hot 1,
  tempogram 384.
- `resample_features`: a feature sequence at another (motion) frame rate,
  with event columns (onsets, beats) kept 0/1.
- `cached_features`: features of a WAV file stored as `.npy` under its content
  hash.

Inputs are mono float waveforms with an int sample rate of at least
fps · 512 (resampling up would leave the top bands empty); bad input raises
`MusicFeatureError` naming the argument. Clips under about two seconds make
librosa warn that the chroma's lowest CQT octaves see few samples. Host
numpy; librosa is imported lazily because importing it takes seconds.
"""

from __future__ import annotations

import hashlib
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Callable

import numpy as np

HOP_LENGTH = 512  # librosa's default hop; both references keep it.
N_FFT = 2048  # librosa's default STFT window: the shortest clip a feature can describe.
TEMPO_SAMPLE_RATE = 22050  # EDGE estimates its start tempo on `librosa.load`'s default rate.
# Below this RMS (-80 dBFS of a [-1, 1] waveform) there is no music to describe:
# beat tracking finds nothing and the chroma normalisations divide by ~0.
SILENCE_RMS_FLOOR = 1e-4

EDGE_FPS = 30.0
EDGE_FEATURE_DIM = 35
EDGE_COLUMNS = {
  "onset_envelope": slice(0, 1),
  "mfcc": slice(1, 21),
  "chroma_cens": slice(21, 33),
  "onset_peaks": slice(33, 34),
  "beats": slice(34, 35),
}
EDGE_EVENT_COLUMNS = (33, 34)

BAILANDO_FPS = 60.0
BAILANDO_GPT_FPS = 7.5
BAILANDO_FEATURE_DIM = 438
BAILANDO_COLUMNS = {
  "mfcc": slice(0, 20),
  "mfcc_delta": slice(20, 40),
  "chroma_cqt": slice(40, 52),
  "onset_strength": slice(52, 53),
  "beats": slice(53, 54),
  "tempogram": slice(54, 438),
}
BAILANDO_EVENT_COLUMNS = (53,)

# AIST++ music ids encode their tempo (EDGE `_get_tempo`): mHO<d> is 110 + 5d BPM,
# the other genres 80 + 10d.
_AIST_BPM_BY_GENRE = {
  **{g: (80.0, 10.0) for g in ("BR", "PO", "LO", "MH", "LH", "WA", "KR", "JS", "JB")},
  "HO": (110.0, 5.0),
}
_AIST_MUSIC_ID = re.compile(r"(?:^|_)m([A-Z]{2})(\d)(?:_|$)")


class MusicFeatureError(ValueError):
  """Audio or an argument that music features cannot be computed from."""


def aist_start_bpm(music_id: str) -> float:
  """EDGE's start tempo of an AIST++ track from its music id (`mBR0`) or a sequence name."""
  match = _AIST_MUSIC_ID.search(str(music_id))
  if match is None or match.group(1) not in _AIST_BPM_BY_GENRE:
    raise MusicFeatureError(
      f"music_id must be an AIST++ music id such as 'mBR0' (genres "
      f"{sorted(_AIST_BPM_BY_GENRE)}) or a sequence name containing one, got {music_id!r}"
    )
  base, step = _AIST_BPM_BY_GENRE[match.group(1)]
  return base + step * int(match.group(2))


def feature_sample_rate(fps: float) -> int:
  """The sample rate fps · 512 at which librosa's hop gives `fps` frames per second."""
  if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
    raise MusicFeatureError(f"fps must be a positive number, got {fps!r}")
  sr = float(fps) * HOP_LENGTH
  if not (math.isfinite(sr) and sr > 0 and sr == round(sr)):
    raise MusicFeatureError(
      f"fps must be positive with fps * {HOP_LENGTH} a whole number of samples per second, got {fps}"
    )
  return int(sr)


def edge_baseline_features(
  audio: np.ndarray,
  sr: int,
  *,
  fps: float = EDGE_FPS,
  start_bpm: float | None = None,
  min_seconds: float | None = None,
) -> np.ndarray:
  """EDGE's 35-d baseline features, (T, 35) float32 with T ≈ 1 + seconds · fps.

  Columns in the reference's order (`EDGE_COLUMNS`): onset envelope, 20 MFCCs,
  12 chroma CENS, onset peaks (one-hot), beats (one-hot). The reference loads
  with `librosa.load(sr=fps · 512)`; here `audio` is resampled with the same
  librosa resampler. Beats come from `beat_track(start_bpm, tightness=100)`;
  EDGE takes `start_bpm` from the AIST++ music id (`aist_start_bpm`) and
  otherwise from librosa's tempo estimate on the audio at 22050 Hz, as here
  when `start_bpm` is None. `min_seconds` (default: one 2048-sample window)
  is the shortest clip accepted.
  """
  import librosa  # Deferred: importing librosa takes seconds.

  feature_sr = _check_fps_for_chroma("edge", fps, n_octaves=7)
  audio = _checked_audio(audio, sr, feature_sr=feature_sr, min_seconds=min_seconds)
  if start_bpm is not None and not _is_positive_number(start_bpm):
    raise MusicFeatureError(f"start_bpm must be a positive number or None, got {start_bpm!r}")
  y = librosa.resample(audio, orig_sr=sr, target_sr=feature_sr)
  envelope = librosa.onset.onset_strength(y=y, sr=feature_sr, hop_length=HOP_LENGTH)
  mfcc = librosa.feature.mfcc(y=y, sr=feature_sr, n_mfcc=20)
  chroma = librosa.feature.chroma_cens(y=y, sr=feature_sr, hop_length=HOP_LENGTH, n_chroma=12)
  peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=feature_sr, hop_length=HOP_LENGTH)
  if start_bpm is None:
    y_tempo = librosa.resample(audio, orig_sr=sr, target_sr=TEMPO_SAMPLE_RATE)
    start_bpm = float(librosa.feature.tempo(y=y_tempo, sr=TEMPO_SAMPLE_RATE)[0])
  _, beats = librosa.beat.beat_track(
    onset_envelope=envelope,
    sr=feature_sr,
    hop_length=HOP_LENGTH,
    start_bpm=start_bpm,
    tightness=100,
  )
  columns = [
    envelope[None],
    mfcc,
    chroma,
    _one_hot(peaks, envelope.size),
    _one_hot(beats, envelope.size),
  ]
  return np.concatenate(columns, axis=0).T.astype(np.float32)


def bailando_features(
  audio: np.ndarray, sr: int, *, fps: float = BAILANDO_FPS, min_seconds: float | None = None
) -> np.ndarray:
  """Bailando's 438-d music features, (T, 438) float32 with T ≈ 1 + seconds · fps.

  Columns in the reference's order (`BAILANDO_COLUMNS`): 20 MFCCs of the
  power_to_db mel spectrogram, their Δ (width 3), 12 chroma CQT of the HPSS
  harmonic part (7 octaves at 60 fps, else 5, as the reference), onset
  strength of the percussive part (median over bands), beats of
  `beat_track` on that envelope (one-hot), 384 tempogram bins. The reference
  loads audio with essentia's `MonoLoader(sampleRate=fps · 512)` (3840 Hz for
  the GPT's 7.5 fps, 30720 Hz for 60 fps); here `audio` is resampled with
  librosa's resampler instead, so features differ from the released ones by
  the resampler. `min_seconds` (default: one 2048-sample window) is the
  shortest clip accepted.
  """
  import librosa  # Deferred: importing librosa takes seconds.

  n_octaves = 7 if fps == BAILANDO_FPS else 5
  feature_sr = _check_fps_for_chroma("bailando", fps, n_octaves=n_octaves)
  audio = _checked_audio(audio, sr, feature_sr=feature_sr, min_seconds=min_seconds)
  y = librosa.resample(audio, orig_sr=sr, target_sr=feature_sr)
  mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=feature_sr), ref=np.max)
  mfcc = librosa.feature.mfcc(S=mel_db)
  mfcc_delta = librosa.feature.delta(mfcc, width=3)
  harmonic, percussive = librosa.effects.hpss(y)
  chroma = librosa.feature.chroma_cqt(y=harmonic, sr=feature_sr, n_octaves=n_octaves)
  envelope = librosa.onset.onset_strength(y=percussive, sr=feature_sr, aggregate=np.median)
  tempogram = librosa.feature.tempogram(onset_envelope=envelope, sr=feature_sr)
  _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=feature_sr)
  columns = [mfcc, mfcc_delta, chroma, envelope[None], _one_hot(beats, envelope.size), tempogram]
  return np.concatenate(columns, axis=0).T.astype(np.float32)


FEATURE_KINDS: dict[str, Callable[..., np.ndarray]] = {
  "edge": edge_baseline_features,
  "bailando": bailando_features,
}


def resample_features(
  features: np.ndarray,
  num_frames: int,
  *,
  feature_fps: float,
  motion_fps: float,
  method: str = "linear",
  event_columns: tuple[int, ...] = (),
) -> np.ndarray:
  """(num_frames, D) float32 features at the motion's frame times j / motion_fps.

  Feature frame i sits at i / feature_fps seconds, so motion frame j reads
  feature position j · feature_fps / motion_fps: `"linear"` interpolates the
  two frames around it, `"nearest"` takes the closer one (ties to the later).
  Event columns (one-hot onsets or beats, e.g. `EDGE_EVENT_COLUMNS`) are not
  interpolated: each event moves to the motion frame nearest its time, so
  they stay 0/1 and no event is lost or doubled (two events that land on one
  frame merge). The last motion frame may reach at most one feature frame
  past the end (held at the last frame); a longer motion is an error.
  """
  features = np.asarray(features)
  if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
    raise MusicFeatureError(
      f"features must be a numeric (T, D) array, got shape {features.shape} and dtype {features.dtype}"
    )
  if (
    isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1
  ):
    raise MusicFeatureError(f"num_frames must be a positive int, got {num_frames!r}")
  for name, value in (("feature_fps", feature_fps), ("motion_fps", motion_fps)):
    if not _is_positive_number(value):
      raise MusicFeatureError(f"{name} must be a positive number, got {value!r}")
  if method not in ("linear", "nearest"):
    raise MusicFeatureError(f"method must be 'linear' or 'nearest', got {method!r}")
  length = features.shape[0]
  events = _checked_event_columns(features, event_columns)
  positions = np.arange(num_frames) * (feature_fps / motion_fps)
  if positions[-1] > length:
    raise MusicFeatureError(
      f"{num_frames} frames at motion_fps={motion_fps} last {num_frames / motion_fps:.3f} s, "
      f"longer than the {length} feature frames at feature_fps={feature_fps}"
    )
  positions = np.minimum(positions, length - 1)
  if method == "nearest":
    resampled = features[np.floor(positions + 0.5).astype(np.int64)].astype(np.float64)
  else:
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, length - 1)
    fraction = (positions - lower)[:, None]
    resampled = features[lower] * (1.0 - fraction) + features[upper] * fraction
  for column in events:
    times = np.flatnonzero(features[:, column] == 1) / feature_fps
    frames = np.round(times * motion_fps).astype(np.int64)
    resampled[:, column] = _one_hot(frames[frames < num_frames], num_frames)[0]
  return resampled.astype(np.float32)


def load_audio(path: str | os.PathLike, sr: int | None = None) -> tuple[np.ndarray, int]:
  """(mono float32 waveform, sample rate) of an audio file, via `librosa.load`.

  Channels are averaged to mono; `sr=None` keeps the file's rate, an int
  resamples with librosa's default resampler (what the references' loads do).
  """
  import librosa  # Deferred: importing librosa takes seconds.

  if sr is not None:
    _check_sample_rate(sr)
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"audio file {os.fspath(path)!r} does not exist")
  audio, file_sr = librosa.load(path, sr=sr, mono=True)
  return audio, int(file_sr)


def cached_features(
  wav_path: str | os.PathLike,
  kind: str,
  fps: float,
  cache_dir: str | os.PathLike,
  *,
  start_bpm: float | None = None,
) -> np.ndarray:
  """Features of one audio file, read from `cache_dir` or computed and stored there.

  `kind` is `"edge"` or `"bailando"` (`FEATURE_KINDS`); `start_bpm` is EDGE's
  (pass `aist_start_bpm(music_id)` for AIST++). The file is read at its own
  rate and resampled by the feature function. The cache file is a plain
  `.npy` (no pickle) named by the SHA-256 of the file's bytes, the kind, fps,
  start_bpm and the librosa version (whose beat tracker and CQT change
  between releases); a missing or unreadable entry is recomputed, and written
  atomically so a concurrent reader never sees half a file.
  """
  import librosa  # Deferred: importing librosa takes seconds.

  if kind not in FEATURE_KINDS:
    raise MusicFeatureError(f"kind must be one of {sorted(FEATURE_KINDS)}, got {kind!r}")
  if start_bpm is not None and kind != "edge":
    raise MusicFeatureError(f"start_bpm applies to kind='edge' only, got kind={kind!r}")
  feature_sample_rate(fps)
  wav_path = pathlib.Path(wav_path)
  if not wav_path.is_file():
    raise FileNotFoundError(f"audio file {os.fspath(wav_path)!r} does not exist")
  bpm_tag = "" if start_bpm is None else f"_bpm{float(start_bpm):g}"
  name = (
    f"{_file_sha256(wav_path)}_{kind}_{float(fps):g}fps{bpm_tag}_librosa{librosa.__version__}.npy"
  )
  cache_path = pathlib.Path(cache_dir) / name
  try:
    return np.load(cache_path, allow_pickle=False)
  except (FileNotFoundError, ValueError, EOFError):
    pass
  audio, sr = load_audio(wav_path)
  options = {} if start_bpm is None else {"start_bpm": start_bpm}
  features = FEATURE_KINDS[kind](audio, sr, fps=fps, **options)
  cache_path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=cache_path.parent, suffix=".npy.tmp", delete=False) as f:
    np.save(f, features, allow_pickle=False)
  os.replace(f.name, cache_path)
  return features


def _checked_audio(
  audio: np.ndarray, sr: int, *, feature_sr: int, min_seconds: float | None
) -> np.ndarray:
  """`audio` as float32 after the shape, dtype, rate, length and silence checks."""
  audio = np.asarray(audio)
  if audio.ndim == 2 and min(audio.shape) <= 8:
    raise MusicFeatureError(
      f"audio must be mono with shape (samples,), got shape {audio.shape}, which looks like "
      "several channels: give stereo as mono, e.g. audio.mean(axis=0) for (channels, samples)"
    )
  if audio.ndim != 1:
    raise MusicFeatureError(f"audio must be mono with shape (samples,), got shape {audio.shape}")
  if not np.issubdtype(audio.dtype, np.floating):
    raise MusicFeatureError(
      f"audio must be a float waveform in [-1, 1], got dtype {audio.dtype}; "
      "divide integer PCM by its full scale (32768 for int16)"
    )
  if not np.all(np.isfinite(audio)):
    raise MusicFeatureError("audio has NaN or infinite samples")
  _check_sample_rate(sr)
  if sr < feature_sr:
    raise MusicFeatureError(
      f"sr={sr} is below the feature sample rate {feature_sr} Hz (fps * {HOP_LENGTH}): "
      f"upsampling would leave the top bands empty; give audio sampled at >= {feature_sr} Hz"
    )
  if min_seconds is not None and not _is_positive_number(min_seconds):
    raise MusicFeatureError(f"min_seconds must be a positive number or None, got {min_seconds!r}")
  window_seconds = N_FFT / feature_sr
  needed = max(window_seconds, min_seconds or 0.0)
  if audio.size / sr < needed:
    raise MusicFeatureError(
      f"audio lasts {audio.size / sr:.6f} s ({audio.size} samples at sr={sr}), shorter than "
      f"min_seconds={needed:.6f} (one {N_FFT}-sample window at {feature_sr} Hz is "
      f"{window_seconds:.6f} s)"
    )
  rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
  if rms < SILENCE_RMS_FLOOR:
    raise MusicFeatureError(
      f"audio is silent: RMS {rms:.3g} is below the floor SILENCE_RMS_FLOOR={SILENCE_RMS_FLOOR}"
    )
  return audio.astype(np.float32, copy=False)


def _check_fps_for_chroma(kind: str, fps: float, *, n_octaves: int) -> int:
  """The feature sample rate of `fps`, if its Nyquist clears the top chroma CQT band."""
  import librosa  # Deferred: importing librosa takes seconds.

  feature_sr = feature_sample_rate(fps)
  # librosa shifts the bands by the estimated tuning (at most half a bin of the
  # 36 per octave), so the bound takes every band half a bin up.
  bands = librosa.cqt_frequencies(36 * n_octaves, fmin=librosa.note_to_hz("C1"), bins_per_octave=36)
  _, cutoff = librosa.filters.wavelet_lengths(freqs=bands * 2.0 ** (0.5 / 36), sr=feature_sr)
  if cutoff >= feature_sr / 2:
    raise MusicFeatureError(
      f"fps={fps} gives sample rate {feature_sr} Hz, too low for {kind}'s {n_octaves}-octave "
      f"chroma (its top band reaches {cutoff:.0f} Hz, Nyquist is {feature_sr / 2:.0f} Hz)"
    )
  return feature_sr


def _check_sample_rate(sr: int) -> None:
  if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
    raise MusicFeatureError(f"sr must be a positive int (samples per second), got {sr!r}")


def _checked_event_columns(features: np.ndarray, event_columns: tuple[int, ...]) -> tuple[int, ...]:
  width = features.shape[1]
  columns = tuple(int(c) for c in event_columns)
  for column in columns:
    if not -width <= column < width:
      raise MusicFeatureError(f"event column {column} is out of range for {width} feature columns")
    values = features[:, column]
    if not np.all((values == 0) | (values == 1)):
      raise MusicFeatureError(f"event column {column} must hold only 0 and 1")
  return tuple(c % width for c in columns)


def _is_positive_number(value) -> bool:
  return (
    not isinstance(value, bool)
    and isinstance(value, (int, float, np.integer, np.floating))
    and math.isfinite(value)
    and value > 0
  )


def _one_hot(indices: np.ndarray, length: int) -> np.ndarray:
  """(1, length) float32 row with ones at `indices`."""
  row = np.zeros((1, length), np.float32)
  row[0, np.asarray(indices, np.int64)] = 1.0
  return row


def _file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
