"""Wav2Lip's audio features against a transcription of its numpy code, and the procedural speech.

The reference (`Rudrabha/Wav2Lip` `audio.py` with `hparams.py`) is written
out below in its own form; `jaxgen.data.audio` must match it to 1e-5. The
synthesised speech must be deterministic, aligned with its mouth ground
truth, and sound like its visemes: quiet silences, loud vowels, vowel
formants that differ, a speaker's pitch.
"""

import time

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile

from jaxgen.data import audio as wav2lip_audio
from jaxgen.data import speech_synth as synth
from jaxgen.data.audio import AudioInputError, SpeechFileNotFoundError, VideoAudioLengthError
from jaxgen.data.speech_synth import SpeechSynthesisError

SR = 16000


def reference_melspectrogram(wav):
  """Wav2Lip `audio.melspectrogram` with its default hparams, (80, T) as the reference returns it."""
  wav = scipy.signal.lfilter([1, -0.97], [1], wav)  # preemphasis(wav, hp.preemphasis)
  D = librosa.stft(y=wav, n_fft=800, hop_length=200, win_length=800)
  mel_basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
  min_level = np.exp(-100 / 20 * np.log(10))
  S = 20 * np.log10(np.maximum(min_level, np.dot(mel_basis, np.abs(D)))) - 20
  return np.clip((2 * 4.0) * ((S - -100) / (-(-100))) - 4.0, -4.0, 4.0)


@pytest.fixture(scope="module")
def utterance():
  rng = np.random.default_rng(7)
  return synth.synthesize_utterance(rng, synth.random_speaker(rng), 3.0)


def _vowel_clip(viseme, speaker, seconds=1.0, seed=1):
  """A long single vowel between short silences, and its steady middle."""
  script = ((0, 0.0, 0.1), (viseme, 0.1, seconds - 0.1), (0, seconds - 0.1, seconds))
  clip = synth.synthesize_utterance(np.random.default_rng(seed), speaker, seconds, script=script)
  return clip.audio[int(0.3 * SR) : int((seconds - 0.3) * SR)]


def _f0(x):
  """Pitch by autocorrelation: the strongest lag between 60 and 400 Hz."""
  x = x - x.mean()
  correlation = np.correlate(x, x, "full")[x.size - 1 :]
  low, high = SR // 400, SR // 60
  return SR / (low + np.argmax(correlation[low:high]))


# ---- Wav2Lip's mel spectrogram -------------------------------------------------------------


def test_wav2lip_mel_equals_reference_transcription(utterance):
  noise = 0.1 * np.random.default_rng(0).standard_normal(7_777).astype(np.float32)
  for wav in (utterance.audio, noise):
    mel = wav2lip_audio.wav2lip_mel(wav)
    assert mel.dtype == np.float32 and mel.shape == (1 + wav.size // 200, 80)
    np.testing.assert_allclose(mel, reference_melspectrogram(wav).T, atol=1e-5, rtol=0)
  # Another rate is resampled as the reference's librosa.load(sr=16000) does, with a warning.
  with pytest.warns(UserWarning, match="resampling to the 16000 Hz"):
    mel = wav2lip_audio.wav2lip_mel(noise, 22050)
  expected = reference_melspectrogram(librosa.resample(noise, orig_sr=22050, target_sr=16000))
  np.testing.assert_allclose(mel, expected.T, atol=1e-5, rtol=0)


def test_wav2lip_mel_tone_silence_and_length():
  t = np.arange(8_037) / SR
  mel = wav2lip_audio.wav2lip_mel((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
  assert mel.shape == (1 + 8_037 // 200, 80)
  centres = librosa.mel_frequencies(82, fmin=55, fmax=7600)[1:-1]  # Band k peaks at centres[k].
  assert np.argmax(mel[3:-3].mean(axis=0)) == np.argmin(np.abs(centres - 1000.0))
  silence = wav2lip_audio.wav2lip_mel(np.zeros(3_200, np.float32))
  assert silence.shape == (17, 80) and np.all(silence == -4.0)
  assert mel.min() >= -4.0 and mel.max() <= 4.0 and mel.max() > 0.0


# ---- windows per video frame ---------------------------------------------------------------


def test_mel_windows_start_at_reference_frames_and_clamp_at_the_end():
  # Each mel row holds its own index, so a window shows where it was cut.
  mel = np.repeat(np.arange(241, dtype=np.float32)[:, None], 80, axis=1)  # 3.0 s of audio
  windows = wav2lip_audio.mel_windows(mel, 75, fps=25.0)
  assert windows.shape == (75, 16, 80) and windows.dtype == np.float32
  starts = windows[:, 0, 0].astype(int)
  free = [int(80.0 * (i / 25.0)) for i in range(75)]  # crop_audio_window's start
  last_fitting = max(i for i in range(75) if free[i] + 16 <= 241)
  assert last_fitting == 70
  assert starts[: last_fitting + 1].tolist() == free[: last_fitting + 1]
  # The frames whose window runs past the audio read its last 16 frames (inference's last chunk).
  assert np.all(starts[last_fitting + 1 :] == 241 - 16)
  np.testing.assert_array_equal(windows[:, :, 0], starts[:, None] + np.arange(16))
  np.testing.assert_array_equal(wav2lip_audio.mel_window_starts(75, 25.0)[:71], free[:71])
  # 30 fps: 8/3 mel frames per video frame.
  assert wav2lip_audio.mel_windows(mel, 90, fps=30.0)[:4, 0, 0].tolist() == [0, 2, 5, 8]


def test_mel_windows_length_mismatch_is_named_or_padded():
  mel = np.zeros((241 - 4, 80), np.float32)  # audio one video frame (640 samples) short
  assert wav2lip_audio.mel_windows(mel, 75).shape == (75, 16, 80)
  short = np.ones((200, 80), np.float32)  # 2.5 s of audio under 3 s of video
  with pytest.raises(VideoAudioLengthError, match="75 frames at 25 fps"):
    wav2lip_audio.mel_windows(short, 75)
  padded = wav2lip_audio.mel_windows(short, 75, pad=True)
  assert padded.shape == (75, 16, 80)
  np.testing.assert_array_equal(padded[74], -4.0)  # past the audio: silence
  np.testing.assert_array_equal(padded[0], 1.0)
  with pytest.raises(VideoAudioLengthError):
    wav2lip_audio.mel_windows(short[:10], 1)  # less than one window
  with pytest.raises(AudioInputError, match=r"\(T, 80\)"):
    wav2lip_audio.mel_windows(short[:, :40], 10)
  with pytest.raises(AudioInputError, match="num_frames"):
    wav2lip_audio.mel_windows(short, 0)
  with pytest.raises(AudioInputError, match="fps"):
    wav2lip_audio.mel_windows(short, 10, fps=-25.0)


# ---- checking speech a person hands in -----------------------------------------------------


def test_check_speech_names_each_problem(utterance):
  speech = utterance.audio
  assert np.array_equal(wav2lip_audio.check_speech(speech, SR), speech)
  cases = [
    (np.stack([speech, speech]), SR, "1-D mono"),
    (np.where(np.arange(speech.size) == 5, np.nan, speech), SR, "NaN or infinite"),
    ((speech * 32767).astype(np.int16), SR, "divided by 32768"),
    (np.full(SR, 5e-4, np.float32), SR, "silent"),
    (np.clip(speech * 20, -1, 1), SR, "clipped"),
    (speech * 2, SR, r"in \[-1, 1\]"),
    (speech[:3_000], SR, "too short"),
    (speech, 0, "sample_rate"),
    (speech, -16000, "sample_rate"),
    (speech, 10**7, "sample_rate"),
    (speech, 22050.5, "whole number"),
    (speech, "16k", "sample_rate"),
  ]
  for audio, rate, message in cases:
    with pytest.raises(AudioInputError, match=message):
      wav2lip_audio.check_speech(audio, rate, name="speech")
  with pytest.warns(UserWarning, match="speech is sampled at 8000 Hz"):
    upsampled = wav2lip_audio.check_speech(speech[::2], 8000, name="speech")
  assert upsampled.dtype == np.float32 and upsampled.size == speech.size


# librosa falls back to (deprecated) audioread on the file that is not audio.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore:PySoundFile failed")
def test_load_speech_reads_resamples_and_names_missing_files(tmp_path, utterance):
  stereo = np.stack([utterance.audio, 0.5 * utterance.audio], axis=1)
  stereo_44k = librosa.resample(stereo.T, orig_sr=SR, target_sr=44100).T
  soundfile.write(tmp_path / "speech.wav", stereo_44k, 44100)
  with pytest.warns(UserWarning, match="44100 Hz"):
    audio, rate = wav2lip_audio.load_speech(tmp_path / "speech.wav")
  assert rate == 16000 and audio.dtype == np.float32 and audio.ndim == 1
  assert abs(audio.size - utterance.audio.size) <= 1
  expected = 0.75 * utterance.audio  # the channels' mean
  n = min(audio.size, expected.size)
  assert np.corrcoef(audio[:n], expected[:n])[0, 1] > 0.99
  soundfile.write(tmp_path / "speech.mp3", utterance.audio, SR)
  audio, rate = wav2lip_audio.load_speech(tmp_path / "speech.mp3")
  assert rate == 16000 and abs(audio.size - utterance.audio.size) < 0.05 * SR
  with pytest.raises(SpeechFileNotFoundError, match="does not exist") as missing:
    wav2lip_audio.load_speech(tmp_path / "nothing.wav")
  assert isinstance(missing.value, FileNotFoundError)
  (tmp_path / "text.wav").write_text("not audio")
  with pytest.raises(AudioInputError, match="could not be decoded"):
    wav2lip_audio.load_speech(tmp_path / "text.wav")


# ---- procedural speech ---------------------------------------------------------------------


def test_synthesis_is_deterministic_and_fast():
  def make(seed):
    rng = np.random.default_rng(seed)
    return synth.synthesize_utterance(rng, synth.random_speaker(rng), 3.0)

  start = time.perf_counter()
  first = make(3)
  elapsed = time.perf_counter() - start
  second, other = make(3), make(4)
  for field in ("audio", "mouth", "visemes"):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  assert first.segments == second.segments
  assert not np.array_equal(first.audio[: other.audio.size], other.audio[: first.audio.size])
  assert elapsed < 1.0, elapsed


def test_shapes_ranges_and_script(utterance):
  for seed in range(6):
    rng = np.random.default_rng(seed)
    seconds = (3.0, 2.0, 1.2)[seed % 3]
    clip = synth.synthesize_utterance(rng, synth.random_speaker(rng), seconds)
    frames = round(seconds * 25)
    assert clip.audio.shape == (frames * 640,) and clip.audio.dtype == np.float32
    assert 0.3 < np.abs(clip.audio).max() <= 0.9 and np.all(clip.audio != 0)
    assert clip.mouth.shape == (frames, 3) and clip.mouth.dtype == np.float32
    assert clip.mouth.min() >= 0.0 and clip.mouth.max() <= 1.0
    assert clip.visemes.shape == (frames,) and clip.visemes.dtype == np.int32
    assert (clip.sample_rate, clip.fps, clip.num_frames) == (16000, 25.0, frames)
    segments = clip.segments
    assert segments[0][1] == 0.0 and segments[-1][2] == seconds
    assert all(a[2] == b[1] for a, b in zip(segments, segments[1:]))
    assert segments[0][0] == segments[-1][0] == synth.SILENCE
    assert all(a[0] != b[0] for a, b in zip(segments, segments[1:]))
    inner = [end - start for _, start, end in segments[1:-1]]
    assert min(inner) >= 0.06 - 1e-9 and max(inner) <= 0.25 + 1e-9
    assert 0.1 <= segments[-1][2] - segments[-1][1] < 0.2 + 1e-9
    kinds = {v for v, _, _ in segments}
    assert kinds & set(synth.VOWELS) and kinds & set(synth.CONSONANTS)
    # The viseme under each frame's centre.
    for i, viseme in enumerate(clip.visemes):
      centre = (i + 0.5) / 25
      assert any(v == viseme and s <= centre < e for v, s, e in segments)


def test_script_too_short_for_a_syllable_is_silence():
  assert synth.random_script(np.random.default_rng(0), 0.2) == ((synth.SILENCE, 0.0, 0.2),)
  clip = synth.synthesize_utterance(np.random.default_rng(0), synth.Speaker(100.0, 1.0), 0.2)
  assert np.all(clip.visemes == synth.SILENCE) and np.abs(clip.audio).max() < 1e-3


def test_mouth_closes_on_plosives_opens_on_vowels_and_anticipates():
  script = (
    (synth.SILENCE, 0.0, 0.2),
    (synth.OPEN, 0.2, 0.44),
    (synth.CLOSED, 0.44, 0.56),
    (synth.OPEN, 0.56, 0.8),
    (synth.LABIODENTAL, 0.8, 0.9),
    (synth.ROUNDED, 0.9, 1.1),
    (synth.LABIODENTAL, 1.1, 1.2),
    (synth.SPREAD, 1.2, 1.4),
    (synth.SILENCE, 1.4, 1.6),
  )
  clip = synth.synthesize_utterance(
    np.random.default_rng(0), synth.Speaker(120.0, 1.0), 1.6, script=script
  )
  mouth = lambda t: synth.mouth_trajectory(script, np.atleast_1d(t))[0]  # noqa: E731
  assert mouth(0.5)[0] == pytest.approx(0.0, abs=1e-6)  # closed lips at the plosive's centre
  assert mouth(0.32)[0] == pytest.approx(synth.MOUTH_TARGETS["open"][0], abs=1e-6)
  # Closing starts inside the vowel, before the plosive.
  before = synth.mouth_trajectory(script, np.linspace(0.32, 0.44, 7))[:, 0]
  assert np.all(np.diff(before) < 0) and before[-1] < 0.5
  # Labiodentals borrow rounding from the next vowel: "fu" rounder than "fi".
  assert mouth(0.85)[2] > mouth(1.15)[2] + 0.3
  # The frames: frame 12 (centre 0.5 s) shows closed lips, frame 8 (0.34 s) a wide-open mouth.
  assert clip.visemes[12] == synth.CLOSED and clip.mouth[12, 0] < 0.02
  assert clip.visemes[8] == synth.OPEN and clip.mouth[8, 0] > 0.8


def test_random_scripts_close_the_lips_on_every_plosive():
  for seed in range(5):
    rng = np.random.default_rng(100 + seed)
    clip = synth.synthesize_utterance(rng, synth.random_speaker(rng), 3.0)
    for viseme, start, end in clip.segments:
      nearest = min(int((start + end) / 2 * 25), 74)  # the frame whose span holds the centre
      if viseme == synth.CLOSED:
        assert clip.mouth[nearest, 0] < 0.05, (seed, start, end, clip.mouth[nearest])
      if viseme == synth.OPEN:
        assert clip.mouth[nearest, 0] > 0.5


def test_audio_is_quiet_in_silence_and_loud_in_vowels(utterance):
  def rms(viseme):
    values = [
      utterance.audio[round((start + 0.03) * SR) : round((end - 0.03) * SR)]
      for v, start, end in utterance.segments
      if v == viseme
    ]
    return float(np.sqrt(np.mean(np.square(np.concatenate(values)))))

  vowels = np.mean([rms(v) for v in synth.VOWELS if any(s[0] == v for s in utterance.segments)])
  assert rms(synth.SILENCE) < 1e-3 < 0.05 < vowels
  assert rms(synth.SILENCE) > 0  # a noise floor, never digital zeros


def test_vowel_formants_differ():
  speaker = synth.Speaker(pitch_hz=120.0, formant_scale=1.0)
  freqs = np.fft.rfftfreq(int(0.4 * SR), 1 / SR)

  def spectrum(viseme):
    return np.abs(np.fft.rfft(_vowel_clip(viseme, speaker) * np.hanning(freqs.size * 2 - 2)))

  def centroid(viseme):  # as Wav2Lip's features see it: after its pre-emphasis
    power = np.abs(np.fft.rfft(scipy.signal.lfilter([1, -0.97], [1], _vowel_clip(viseme, speaker))))
    return float((power**2 * freqs).sum() / (power**2).sum())

  def band_db(power, low, high):
    return 10 * np.log10(np.sum(power[(freqs >= low) & (freqs < high)] ** 2))

  assert centroid(synth.SPREAD) > 2 * centroid(synth.ROUNDED)
  spread, rounded, open_ = (spectrum(v) for v in (synth.SPREAD, synth.ROUNDED, synth.OPEN))
  # F2: high for spread (~2200 Hz), low for rounded (~850 Hz); F1 high for open (~730 Hz).
  f2 = lambda p: band_db(p, 1800, 2600) - band_db(p, 600, 1000)  # noqa: E731
  assert f2(spread) > f2(rounded) + 20
  assert band_db(open_, 600, 1000) > band_db(spread, 600, 1000) + 10


def test_speakers_pitch_differs_measurably():
  low = synth.Speaker(pitch_hz=100.0, formant_scale=0.95, intonation=0.0)
  high = synth.Speaker(pitch_hz=210.0, formant_scale=1.15, intonation=0.0)
  f0_low, f0_high = (_f0(_vowel_clip(synth.OPEN, s)[:2048]) for s in (low, high))
  assert f0_low == pytest.approx(100.0, rel=0.05) and f0_high == pytest.approx(210.0, rel=0.05)
  rng = np.random.default_rng(5)
  pitches = sorted(synth.random_speaker(rng).pitch_hz for _ in range(20))
  assert 90 <= pitches[0] < 150 and 160 <= pitches[-1] <= 250


def test_synthetic_speech_passes_check_and_gives_windows(utterance):
  audio = wav2lip_audio.check_speech(utterance.audio, utterance.sample_rate)
  mel = wav2lip_audio.wav2lip_mel(audio)
  assert mel.shape == (241, 80)
  windows = wav2lip_audio.mel_windows(mel, utterance.num_frames, utterance.fps)
  assert windows.shape == (75, 16, 80)
  # Louder mel frames where the script has vowels than where it is silent.
  times = np.arange(mel.shape[0]) / 80.0
  under = [
    next(v for v, s, e in utterance.segments if s <= t < e) for t in np.minimum(times, 2.999)
  ]
  under = np.array(under)
  assert mel[np.isin(under, synth.VOWELS)].mean() > mel[under == synth.SILENCE].mean() + 2.0


def test_synthesis_rejects_bad_arguments():
  speaker = synth.Speaker(150.0, 1.0)
  rng = np.random.default_rng(0)
  with pytest.raises(SpeechSynthesisError, match="pitch_hz"):
    synth.Speaker(pitch_hz=10.0, formant_scale=1.0)
  with pytest.raises(SpeechSynthesisError, match="whole number of video frames"):
    synth.synthesize_utterance(rng, speaker, 1.01)
  with pytest.raises(SpeechSynthesisError, match="samples per frame"):
    synth.synthesize_utterance(rng, speaker, 1.0, fps=30.0)
  with pytest.raises(SpeechSynthesisError, match="end at seconds=1"):
    synth.synthesize_utterance(rng, speaker, 1.0, script=((0, 0.0, 0.5),))
  with pytest.raises(SpeechSynthesisError, match="must start where"):
    synth.synthesize_utterance(rng, speaker, 1.0, script=((0, 0.0, 0.5), (1, 0.6, 1.0)))
  with pytest.raises(SpeechSynthesisError, match="viseme index 9"):
    synth.synthesize_utterance(rng, speaker, 1.0, script=((9, 0.0, 1.0),))
