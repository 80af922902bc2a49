"""EDGE / Bailando music features on a synthetic 120 BPM click track, checked against librosa."""

import librosa
import numpy as np
import pytest
import soundfile

from jaxgen.data import music_features as mf
from jaxgen.data.music_features import MusicFeatureError

SR = 32000  # Above Bailando's 60 fps feature rate (30720 Hz), so every kind resamples down.
SECONDS = 3.0
BPM = 120.0


def _click_times():
  return np.arange(0.5, SECONDS - 0.1, 60.0 / BPM)  # 0.5, 1.0, ..., 2.5 s


def _click_track(seconds=SECONDS, sr=SR):
  """Decaying 1 kHz pings on every beat over a tone sequence (C4 E4 G4 C5, one per beat)."""
  t = np.arange(int(seconds * sr)) / sr
  audio = np.zeros_like(t)
  ping = np.arange(int(0.03 * sr)) / sr
  ping = np.exp(-ping / 0.004) * np.sin(2 * np.pi * 1000.0 * ping)
  for beat, start in enumerate(_click_times()):
    i = round(start * sr)
    audio[i : i + ping.size] += 0.8 * ping[: audio.size - i]
    tone = (t >= start) & (t < start + 60.0 / BPM)
    pitch = (261.63, 329.63, 392.0, 523.25)[beat % 4]
    audio[tone] += 0.1 * np.sin(2 * np.pi * pitch * t[tone])
  return audio.astype(np.float32)


def _assert_beats_on_clicks(beat_column, fps, latency_frames=0):
  """Every beat within one frame of a click, and all clicks but the first and last found."""
  beats = np.flatnonzero(beat_column)
  click_frames = _click_times() * fps + latency_frames
  distance = np.abs(beats[:, None] - click_frames[None, :])
  assert distance.min(axis=1).max() <= 1.0, (beats, click_frames)
  assert (distance.min(axis=0) <= 1.0).sum() >= click_frames.size - 2, (beats, click_frames)


@pytest.fixture(scope="module")
def audio():
  return _click_track()


@pytest.fixture(scope="module")
def edge(audio):
  return mf.edge_baseline_features(audio, SR, start_bpm=BPM)


@pytest.fixture(scope="module")
def bailando(audio):
  return mf.bailando_features(audio, SR, fps=60)


def test_edge_columns_equal_direct_librosa_calls(audio, edge):
  y = librosa.resample(audio, orig_sr=SR, target_sr=15360)
  envelope = librosa.onset.onset_strength(y=y, sr=15360, hop_length=512)
  _, beats = librosa.beat.beat_track(
    onset_envelope=envelope, sr=15360, hop_length=512, start_bpm=BPM, tightness=100
  )
  peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=15360, hop_length=512)
  np.testing.assert_array_equal(edge[:, 0], envelope.astype(np.float32))
  np.testing.assert_array_equal(edge[:, 1:21], librosa.feature.mfcc(y=y, sr=15360, n_mfcc=20).T)
  np.testing.assert_array_equal(edge[:, 21:33], librosa.feature.chroma_cens(y=y, sr=15360).T)
  np.testing.assert_array_equal(np.flatnonzero(edge[:, 33]), peaks)
  np.testing.assert_array_equal(np.flatnonzero(edge[:, 34]), beats)


def test_edge_shape_and_beats_on_the_clicks(audio, edge):
  assert edge.shape[1] == mf.EDGE_FEATURE_DIM == 35 and edge.dtype == np.float32
  assert abs(edge.shape[0] - round(SECONDS * 30)) <= 1
  assert set(np.unique(edge[:, mf.EDGE_EVENT_COLUMNS])) <= {0.0, 1.0}
  _assert_beats_on_clicks(edge[:, 34], fps=30)
  # Without start_bpm EDGE estimates the tempo (at 22050 Hz); the beats stay on the clicks.
  estimated = mf.edge_baseline_features(audio, SR)
  _assert_beats_on_clicks(estimated[:, 34], fps=30)


def test_bailando_columns_equal_direct_librosa_calls(audio, bailando):
  y = librosa.resample(audio, orig_sr=SR, target_sr=30720)
  mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=30720), ref=np.max)
  mfcc = librosa.feature.mfcc(S=mel_db)
  harmonic, percussive = librosa.effects.hpss(y)
  envelope = librosa.onset.onset_strength(y=percussive, sr=30720, aggregate=np.median)
  np.testing.assert_array_equal(bailando[:, 0:20], mfcc.T)
  np.testing.assert_array_equal(bailando[:, 20:40], librosa.feature.delta(mfcc, width=3).T)
  chroma = librosa.feature.chroma_cqt(y=harmonic, sr=30720, n_octaves=7)
  tempogram = librosa.feature.tempogram(onset_envelope=envelope, sr=30720)
  # The features are float32 (chroma and tempogram come out of librosa as float64).
  np.testing.assert_array_equal(bailando[:, 40:52], chroma.T.astype(np.float32))
  np.testing.assert_array_equal(bailando[:, 52], envelope)
  _, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=30720)
  np.testing.assert_array_equal(np.flatnonzero(bailando[:, 53]), beats)
  np.testing.assert_array_equal(bailando[:, 54:], tempogram.T.astype(np.float32))


@pytest.mark.parametrize("fps", [60, 7.5])
def test_bailando_shape_and_beats_on_the_clicks(audio, bailando, fps):
  features = bailando if fps == 60 else mf.bailando_features(audio, SR, fps=fps)
  assert features.shape[1] == mf.BAILANDO_FEATURE_DIM == 438 and features.dtype == np.float32
  assert abs(features.shape[0] - round(SECONDS * fps)) <= 1
  assert set(np.unique(features[:, 53])) <= {0.0, 1.0}
  # librosa's onset envelope peaks one hop after a click: within the one-frame
  # tolerance at 30 and 60 fps, but a hop is 133 ms at the GPT's 7.5 fps.
  _assert_beats_on_clicks(features[:, 53], fps=fps, latency_frames=1 if fps == 7.5 else 0)


def test_aist_start_bpm():
  assert mf.aist_start_bpm("mBR0") == 80.0
  assert mf.aist_start_bpm("mKR5") == 130.0
  assert mf.aist_start_bpm("mHO3") == 125.0
  assert mf.aist_start_bpm("gJB_sFM_cAll_d08_mJB2_ch01") == 100.0
  for bad in ("mXX1", "mBR", "BR0", ""):
    with pytest.raises(MusicFeatureError, match="music_id"):
      mf.aist_start_bpm(bad)


def test_resample_features_identity_linear_and_nearest():
  ramp = np.stack([np.arange(90) / 30.0, np.arange(90.0)], axis=1)  # seconds, frame index
  np.testing.assert_array_equal(
    mf.resample_features(ramp, 90, feature_fps=30, motion_fps=30), ramp.astype(np.float32)
  )
  # 30 -> 20 fps: linear interpolation of time is the motion frame's time.
  linear = mf.resample_features(ramp, 60, feature_fps=30, motion_fps=20)
  np.testing.assert_allclose(linear[:, 0], np.arange(60) / 20.0, rtol=1e-6)
  nearest = mf.resample_features(ramp, 60, feature_fps=30, motion_fps=20, method="nearest")
  np.testing.assert_array_equal(nearest[:, 1], np.floor(np.arange(60) * 1.5 + 0.5))


@pytest.mark.parametrize("motion_fps, num_frames", [(20, 60), (60, 180), (7.5, 22)])
def test_resample_features_keeps_events_one_hot(motion_fps, num_frames):
  features = np.zeros((90, 3))
  features[:, 0] = np.sin(np.arange(90))
  features[[15, 30, 45, 60, 75], 1] = 1.0
  out = mf.resample_features(
    features, num_frames, feature_fps=30, motion_fps=motion_fps, event_columns=(1,)
  )
  assert set(np.unique(out[:, 1])) <= {0.0, 1.0}
  expected = np.round(np.array([15, 30, 45, 60, 75]) / 30 * motion_fps).astype(int)
  np.testing.assert_array_equal(np.flatnonzero(out[:, 1]), expected[expected < num_frames])


def test_edge_features_at_motion_rate_keep_beats(edge):
  motion = mf.resample_features(
    edge, 60, feature_fps=30, motion_fps=20, event_columns=mf.EDGE_EVENT_COLUMNS
  )
  assert motion.shape == (60, 35)
  assert set(np.unique(motion[:, mf.EDGE_EVENT_COLUMNS])) <= {0.0, 1.0}
  assert motion[:, 34].sum() == edge[:, 34].sum()
  _assert_beats_on_clicks(motion[:, 34], fps=20)


def test_resample_features_errors():
  features = np.zeros((30, 2))
  features[3, 1] = 0.5
  with pytest.raises(MusicFeatureError, match="longer than the 30 feature frames"):
    mf.resample_features(features, 40, feature_fps=30, motion_fps=20)
  with pytest.raises(MusicFeatureError, match="method"):
    mf.resample_features(features, 10, feature_fps=30, motion_fps=20, method="cubic")
  with pytest.raises(MusicFeatureError, match="event column 1 must hold only 0 and 1"):
    mf.resample_features(features, 10, feature_fps=30, motion_fps=20, event_columns=(1,))
  with pytest.raises(MusicFeatureError, match="out of range"):
    mf.resample_features(features, 10, feature_fps=30, motion_fps=20, event_columns=(2,))
  with pytest.raises(MusicFeatureError, match="num_frames"):
    mf.resample_features(features, 0, feature_fps=30, motion_fps=20)
  with pytest.raises(MusicFeatureError, match="motion_fps"):
    mf.resample_features(features, 10, feature_fps=30, motion_fps=0)
  with pytest.raises(MusicFeatureError, match=r"\(T, D\)"):
    mf.resample_features(features[:, 0], 10, feature_fps=30, motion_fps=20)


def test_cached_features_round_trip_without_pickle(tmp_path, audio, monkeypatch):
  wav = tmp_path / "clip.wav"
  soundfile.write(wav, audio, SR, subtype="FLOAT")
  cache = tmp_path / "cache"
  first = mf.cached_features(wav, "edge", 30, cache, start_bpm=BPM)
  loaded, sr = mf.load_audio(wav)
  assert sr == SR
  np.testing.assert_array_equal(first, mf.edge_baseline_features(loaded, sr, start_bpm=BPM))
  (entry,) = cache.iterdir()
  assert entry.suffix == ".npy" and "_edge_30fps_bpm120_" in entry.name
  np.testing.assert_array_equal(np.load(entry, allow_pickle=False), first)

  # A hit reads the file: computing again would fail.
  def no_compute(*args, **kwargs):
    raise AssertionError("recomputed a cached clip")

  monkeypatch.setitem(mf.FEATURE_KINDS, "edge", no_compute)
  np.testing.assert_array_equal(mf.cached_features(wav, "edge", 30, cache, start_bpm=BPM), first)
  monkeypatch.undo()

  entry.write_bytes(b"not an npy file")  # An unreadable entry is recomputed.
  np.testing.assert_array_equal(mf.cached_features(wav, "edge", 30, cache, start_bpm=BPM), first)
  soundfile.write(wav, 0.5 * audio, SR, subtype="FLOAT")  # New content, new key.
  quieter = mf.cached_features(wav, "edge", 30, cache, start_bpm=BPM)
  assert quieter.shape == first.shape and not np.array_equal(quieter, first)
  assert len(list(cache.iterdir())) == 2
  assert all(p.suffix == ".npy" for p in cache.iterdir())
  with pytest.raises(MusicFeatureError, match="kind"):
    mf.cached_features(wav, "jukebox", 30, cache)
  with pytest.raises(MusicFeatureError, match="start_bpm applies to kind='edge'"):
    mf.cached_features(wav, "bailando", 60, cache, start_bpm=BPM)
  with pytest.raises(FileNotFoundError):
    mf.cached_features(tmp_path / "missing.wav", "edge", 30, cache)


def test_load_audio_averages_channels_and_resamples(tmp_path, audio):
  stereo = np.stack([audio, 0.5 * audio], axis=1)
  wav = tmp_path / "stereo.wav"
  soundfile.write(wav, stereo, SR, subtype="FLOAT")
  mono, sr = mf.load_audio(wav)
  assert sr == SR and mono.dtype == np.float32
  np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-7)
  resampled, sr = mf.load_audio(wav, 16000)
  assert sr == 16000 and resampled.shape == (int(SECONDS * 16000),)
  with pytest.raises(MusicFeatureError, match="sr must be a positive int"):
    mf.load_audio(wav, 0)
  with pytest.raises(FileNotFoundError, match="missing"):
    mf.load_audio(tmp_path / "missing.wav")


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"sr": 32000.0}, "sr must be a positive int"),
    ({"sr": 0}, "sr must be a positive int"),
    ({"sr": True}, "sr must be a positive int"),
    ({"sr": 22050, "kind": "bailando"}, "below the feature sample rate 30720"),
    ({"audio": np.zeros(SR, np.float32)}, "silent"),
    ({"audio": np.full(SR, 1e-5, np.float32)}, "silent"),
    ({"audio": np.full(3000, 0.1, np.float32)}, r"0.093750 s \(3000 samples at sr=32000\)"),
    ({"min_seconds": 5.0}, "lasts 1.000000 s .*, shorter than min_seconds=5.000000"),
    ({"min_seconds": -1.0}, "min_seconds must be a positive number"),
    ({"audio": np.zeros((2, SR), np.float32)}, "give stereo as mono"),
    ({"audio": np.zeros((SR, 2), np.float32)}, "give stereo as mono"),
    ({"audio": np.zeros((4, 4, 4), np.float32)}, "must be mono"),
    ({"audio": np.ones(SR, np.int16)}, "float waveform.*int16"),
    ({"audio": np.full(SR, np.nan, np.float32)}, "NaN"),
    ({"fps": 10}, "fps=10 gives sample rate 5120 Hz, too low for edge's 7-octave"),
    ({"fps": 4, "kind": "bailando"}, "too low for bailando's 5-octave"),
    ({"fps": 1 / 3}, "whole number"),
    ({"fps": -30}, "fps must be positive"),
    ({"start_bpm": 0.0}, "start_bpm must be a positive number"),
  ],
)
def test_named_errors(kwargs, match):
  kwargs = {"audio": np.full(SR, 0.1, np.float32), "sr": SR, "kind": "edge", **kwargs}
  audio, sr, kind = kwargs.pop("audio"), kwargs.pop("sr"), kwargs.pop("kind")
  features = mf.edge_baseline_features if kind == "edge" else mf.bailando_features
  with pytest.raises(MusicFeatureError, match=match):
    features(audio, sr, **kwargs)


# The chroma's lowest CQT octaves see only a few samples of so short a clip.
@pytest.mark.filterwarnings("ignore:n_fft=.* is too large for input signal")
def test_one_window_is_the_shortest_clip(audio):
  window = -(-2048 * SR // 15360)  # One 2048-sample window at 15360 Hz, in input samples.
  first_click = audio[SR // 2 :]
  assert mf.edge_baseline_features(first_click[:window], SR, start_bpm=BPM).shape == (5, 35)
  with pytest.raises(MusicFeatureError, match=f"{window - 1} samples"):
    mf.edge_baseline_features(first_click[: window - 1], SR, start_bpm=BPM)
