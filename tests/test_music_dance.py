"""The procedural music-dance data: exact beats, beat-aligned dances, held-out tracks."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from jaxgen.data import music_dance, music_synth
from jaxgen.data.datasets import music_dance as music_dance_builder
from jaxgen.metrics import dance

FPS = music_dance.FPS


@pytest.fixture(scope="module")
def test_clips():
  return music_dance.make_music_dance("test", 8, seconds=12.0)


@pytest.fixture(scope="module")
def long_clips():
  return music_dance.make_music_dance("validation", 4, seconds=40.0)


def _music_beat_frames(clips, i):
  times = clips["beat_times"][i, : clips["num_beats"][i]]
  return np.round(times * FPS).astype(np.int64)


def _bas(clips, dance_row, music_row):
  motion = dance.motion_beats(clips["joints"][dance_row], fps=FPS)
  return dance.beat_alignment_score(_music_beat_frames(clips, music_row), motion, fps=FPS)


def test_same_arguments_give_identical_arrays_and_examples_depend_only_on_their_index():
  first = music_dance.make_music_dance("train", 3, seconds=4.0)
  again = music_dance.make_music_dance("train", 3, seconds=4.0)
  later = music_dance.make_music_dance("train", 2, seconds=4.0, start=1)
  assert first.keys() == again.keys() == later.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    np.testing.assert_array_equal(first[key][1:], later[key], err_msg=key)
  # Examples 0 and 1 dance to one track; example 2 has its own.
  np.testing.assert_array_equal(first["audio"][0], first["audio"][1])
  assert first["track_id"][0] == first["track_id"][1] != first["track_id"][2]
  assert np.abs(first["joints"][0] - first["joints"][1]).max() > 0.1
  assert np.abs(first["audio"][1] - first["audio"][2]).max() > 0.1
  other_seed = music_dance.make_music_dance("train", 1, seconds=4.0, seed=1)
  assert not np.array_equal(other_seed["audio"][0], first["audio"][0])


def test_splits_hold_out_whole_tracks():
  ids = {
    split: {music_dance.track_id(split, i) for i in range(200)} for split in music_dance.SPLITS
  }
  assert len(ids["train"]) == 100 and len(ids["test"]) == 200
  for a in music_dance.SPLITS:
    for b in music_dance.SPLITS:
      assert a == b or not ids[a] & ids[b], (a, b)
  train = music_dance.make_music_dance("train", 6, seconds=3.0)
  test = music_dance.make_music_dance("test", 3, seconds=3.0)
  assert set(train["track_id"].tolist()) == {0, 3, 6}
  assert set(test["track_id"].tolist()) == {2, 5, 8}
  for audio in test["audio"]:  # No test track sounds like a train track either.
    assert min(np.abs(audio - other).max() for other in train["audio"]) > 0.1


def test_arrays_have_the_documented_layout(test_clips):
  n, seconds = 8, 12.0
  width = music_dance.max_beats(seconds)
  assert test_clips["audio"].shape == (n, int(seconds * music_synth.SAMPLE_RATE))
  assert test_clips["audio"].dtype == np.float32 and np.abs(test_clips["audio"]).max() <= 1.0
  assert test_clips["joints"].shape == (n, int(seconds * FPS), 22, 3)
  for key in ("beat_times", "beat_in_bar", "beat_phrase", "beat_intensity", "beat_move"):
    assert test_clips[key].shape == (n, width), key
  for i in range(n):
    k = test_clips["num_beats"][i]
    times = test_clips["beat_times"][i]
    assert np.all(times[k:] == music_dance.PAD) and np.all(test_clips["beat_move"][i, k:] == -1)
    assert 0 < times[0] and times[k - 1] < seconds
    # Constant tempo: beats are 60 / tempo apart.
    np.testing.assert_allclose(np.diff(times[:k]), 60.0 / test_clips["tempo"][i], rtol=1e-6)
  # Feet on the floor: the lowest joint of every frame is at height 0 unless the dancer jumps.
  lowest = test_clips["joints"][..., 1].min(axis=2)
  jumping = np.isin(test_clips["beat_move"], [music_dance.MOVE_NAMES.index("jump")]).any(1)
  np.testing.assert_allclose(lowest[~jumping], 0.0, atol=1e-6)
  assert lowest.min() >= -1e-6 and lowest.max() < 0.2


def test_music_has_bars_phrases_and_intensity_changes(long_clips):
  for i in range(len(long_clips["tempo"])):
    k = long_clips["num_beats"][i]
    np.testing.assert_array_equal(long_clips["beat_in_bar"][i, :k], np.arange(k) % 4)
    phrase = long_clips["beat_phrase"][i, :k]
    intensity = long_clips["beat_intensity"][i, :k]
    lengths = np.bincount(phrase)
    assert set(lengths[:-1].tolist()) <= {16, 32}, lengths  # 4 or 8 bars; the last is cut off.
    starts = np.flatnonzero(np.diff(phrase)) + 1
    assert np.all(intensity[starts] != intensity[starts - 1])
    assert all(len(set(intensity[phrase == p].tolist())) == 1 for p in np.unique(phrase))
    # Louder phrases are louder in the audio: RMS per phrase rises with intensity.
    audio = long_clips["audio"][i]
    times = long_clips["beat_times"][i, :k]
    bounds = np.append(times[np.append(0, starts)], 40.0)
    rms = [
      np.sqrt(np.mean(audio[int(a * 22050) : int(b * 22050)] ** 2))
      for a, b in itertools.pairwise(bounds)
    ]
    levels = intensity[np.append(0, starts)]
    assert np.all(np.diff(np.array(rms)[np.argsort(levels)]) > 0), (levels, rms)


def test_stored_beats_are_onsets_in_the_audio(test_clips):
  import librosa

  hop = 512
  sr = music_synth.SAMPLE_RATE
  for i in (0, 3):
    envelope = librosa.onset.onset_strength(y=test_clips["audio"][i], sr=sr, hop_length=hop)
    peaks = librosa.util.peak_pick(
      envelope, pre_max=1, post_max=1, pre_avg=1, post_avg=1, delta=0.0, wait=0
    )
    times = test_clips["beat_times"][i, : test_clips["num_beats"][i]]
    beat_frames = np.round(times * sr / hop).astype(np.int64)
    nearest = np.abs(peaks[None, :] - beat_frames[:, None]).min(axis=1)
    assert nearest.max() <= 1, nearest
    # The peaks there are strong ones: well above the envelope's median.
    strength = envelope[np.clip(beat_frames[:, None] + [-1, 0, 1], 0, len(envelope) - 1)].max(1)
    assert np.median(strength) > 10 * np.median(envelope)


def test_ground_truth_beat_alignment_is_high_and_mismatched_music_is_not(test_clips):
  n = len(test_clips["tempo"])
  matched = np.array([_bas(test_clips, i, i) for i in range(n)])
  shuffled = np.array([_bas(test_clips, i, (i + 1) % n) for i in range(n)])
  print(f"ground-truth BAS {matched.mean():.3f}; mismatched music {shuffled.mean():.3f}")
  assert matched.mean() > 0.85 and matched.min() > 0.75
  assert shuffled.mean() < 0.45
  assert matched.mean() - shuffled.mean() > 0.5


def test_genres_are_separable_by_tempo_in_music_and_in_the_dance(test_clips):
  ranges = sorted(g.bpm for g in music_synth.GENRES)
  assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # Disjoint ranges.
  assert all(80 <= low and high <= 160 for low, high in ranges)
  assert len(set(music_synth.GENRE_NAMES)) == len(music_dance.GENRE_MOVES) >= 4
  assert len(set(test_clips["genre"].tolist())) >= 3
  genre_of_bpm = music_synth.GENRE_NAMES.index
  correct = 0
  for i, genre in enumerate(test_clips["genre"]):
    low, high = music_synth.GENRES[genre].bpm
    assert low <= test_clips["tempo"][i] <= high
    # Tempo read off the dance alone: the median gap between kinematic beats.
    gap = np.median(np.diff(dance.motion_beats(test_clips["joints"][i], fps=FPS))) / FPS
    bpm = 60.0 / gap
    guess = min(music_synth.GENRES, key=lambda g: abs(np.clip(bpm, *g.bpm) - bpm))
    correct += genre_of_bpm(guess.name) == genre
  assert correct >= len(test_clips["genre"]) - 1


def test_moves_come_from_the_genre_and_change_only_at_phrase_boundaries(long_clips):
  for i in range(len(long_clips["tempo"])):
    k = long_clips["num_beats"][i]
    phrase, move = long_clips["beat_phrase"][i, :k], long_clips["beat_move"][i, :k]
    vocabulary = music_dance.GENRE_MOVES[music_synth.GENRE_NAMES[long_clips["genre"][i]]]
    assert {music_dance.MOVE_NAMES[m] for m in move} <= set(vocabulary)
    changes = np.flatnonzero(np.diff(move)) + 1
    starts = np.flatnonzero(np.diff(phrase)) + 1
    np.testing.assert_array_equal(changes, starts)


def test_dance_energy_follows_the_music_intensity(long_clips):
  speeds, levels = [], []
  for i in range(len(long_clips["tempo"])):
    k = long_clips["num_beats"][i]
    speed = dance.mean_joint_speed(long_clips["joints"][i]) * FPS  # m/s, frame t -> t + 1.
    frames = np.round(long_clips["beat_times"][i, :k] * FPS).astype(int)
    phrase = long_clips["beat_phrase"][i, :k]
    for p in np.unique(phrase):
      beats = frames[phrase == p]
      if len(beats) < 8:  # A phrase cut short by the clip's end.
        continue
      speeds.append(speed[beats[0] : min(beats[-1], len(speed))].mean())
      levels.append(long_clips["beat_intensity"][i, :k][phrase == p][0])
  correlation = np.corrcoef(speeds, levels)[0, 1]
  print(f"phrase speed vs intensity: r = {correlation:.2f} over {len(levels)} phrases")
  assert len(levels) >= 8 and len(set(levels)) == 3
  assert correlation > 0.5
  # The energy of a phrase is the motion's own: smoothing the joints does not make it up.
  smooth = scipy.ndimage.gaussian_filter1d(long_clips["joints"][0], 1.0, axis=0)
  assert np.abs(smooth - long_clips["joints"][0]).max() < 0.1


def test_bad_arguments_are_named_errors():
  with pytest.raises(ValueError, match="split"):
    music_dance.make_music_dance("dev", 1)
  with pytest.raises(ValueError, match="count"):
    music_dance.make_music_dance("train", 0)
  with pytest.raises(ValueError, match="seconds"):
    music_dance.make_music_dance("train", 1, seconds=1.0)
  with pytest.raises(ValueError, match="whole number of frames"):
    music_dance.make_music_dance("train", 1, seconds=4.01)
  with pytest.raises(ValueError, match="start"):
    music_dance.make_music_dance("train", 1, start=-1)
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="sample_rate"):
    music_synth.synthesize_track(rng, 4.0, sample_rate=4000)
  with pytest.raises(ValueError, match="genre"):
    music_synth.synthesize_track(rng, 4.0, genre=4)


def test_tfds_builder_examples_equal_make_music_dance(tmp_path):
  config = music_dance_builder.MusicDanceConfig(
    name="tiny", description="Test size.", seconds=3.0, sample_rate=8000, num_train=3,
    num_validation=1, num_test=2,
  )  # fmt: skip
  builder = tfds.builder("music_dance", config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.file_format.value == "array_record"
  for split, count in (("train", 3), ("validation", 1), ("test", 2)):
    source = tfds.data_source("music_dance/tiny", split=split, data_dir=str(tmp_path))
    assert len(source) == count
    expected = music_dance.make_music_dance(split, count, seconds=3.0, sample_rate=8000)
    for i in range(count):
      example = source[i]
      k = expected["num_beats"][i]
      assert example["num_beats"] == k
      for key in ("audio", "joints", "genre", "tempo", "track_id"):
        np.testing.assert_array_equal(example[key], expected[key][i], err_msg=key)
      for key in ("beat_times", "beat_in_bar", "beat_phrase", "beat_intensity", "beat_move"):
        np.testing.assert_array_equal(example[key], expected[key][i, :k], err_msg=key)
