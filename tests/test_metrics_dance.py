"""Music-to-dance metrics (Bailando conventions) on constructed motions and click tracks."""

import numpy as np
import pytest

from jaxgen.metrics import dance, frechet
from jaxgen.metrics.frechet import TooFewSamplesError

# Speed period 21 frames with minima at 10, 31, ...: 126 speed samples then
# start and end half a frame before/after a maximum, so scipy's 'reflect'
# boundary continues the cosine exactly and smoothing cannot move a minimum.
_PERIOD = 21
_BEATS = np.array([10, 31, 52, 73, 94, 115])


def _motion_with_speed_minima_on_beats(num_joints=24):
  t = np.arange(6 * _PERIOD)
  speed = 1.1 - np.cos(2 * np.pi * (t - _BEATS[0]) / _PERIOD)  # (T - 1,), > 0
  # Every joint moves along x by speed[t] between frames t and t + 1.
  root_x = np.concatenate([[0.0], np.cumsum(speed)])
  skeleton = np.random.default_rng(0).normal(size=(num_joints, 3))
  joints = skeleton[None] + root_x[:, None, None] * np.array([1.0, 0.0, 0.0])
  return joints, speed


def test_mean_joint_speed_of_constructed_motion():
  joints, speed = _motion_with_speed_minima_on_beats()
  np.testing.assert_allclose(dance.mean_joint_speed(joints), speed, atol=1e-12)


def test_motion_beats_sit_on_speed_minima():
  joints, _ = _motion_with_speed_minima_on_beats()
  np.testing.assert_array_equal(dance.motion_beats(joints, sigma=5), _BEATS)


def test_beat_alignment_of_aligned_and_shifted_beats():
  joints, _ = _motion_with_speed_minima_on_beats()
  beats = dance.motion_beats(joints)
  assert dance.beat_alignment_score(_BEATS, beats) == pytest.approx(1.0, abs=1e-6)
  for shift in (1, 2, 4, -3):
    expected = np.exp(-(shift**2) / 18)
    assert dance.beat_alignment_score(_BEATS + shift, beats, sigma=3) == pytest.approx(
      expected, rel=1e-12
    )


def test_beat_alignment_hand_computed():
  # Music beats 0 and 10 against one motion beat at 3: distances 3 and 7.
  expected = (np.exp(-9 / 18) + np.exp(-49 / 18)) / 2
  assert dance.beat_alignment_score([0, 10], [3]) == pytest.approx(expected, rel=1e-12)


def test_librosa_finds_click_track_beats():
  import librosa

  sr, hop_length = 15360, 512  # EDGE's audio rate: one hop per frame at 30 fps
  bpm, duration = 120.0, 6.0
  click_times = np.arange(0.5, duration - 0.25, 60.0 / bpm)
  audio = librosa.clicks(times=click_times, sr=sr, length=int(sr * duration))
  for fps in (30.0, 20.0):
    expected = np.round(click_times * fps).astype(int)
    beats = dance.music_beats_from_audio(audio, sr, hop_length, fps, start_bpm=bpm)
    # The tracker may drop a weak beat at either end; every beat it reports is a click.
    assert len(beats) >= len(expected) - 2
    nearest = np.abs(beats[:, None] - expected[None, :]).min(axis=1)
    assert nearest.max() <= 1, (beats, expected)
  limited = dance.music_beats_from_audio(audio, sr, hop_length, 30.0, num_frames=90)
  assert limited.max() < 90 and len(limited) >= 4


def test_fid_k_z_scores_by_ground_truth():
  rng = np.random.default_rng(1)
  gt = rng.normal(size=(60, 72)) * rng.uniform(0.1, 10.0, size=72) + 5.0
  shift = rng.normal(size=72)
  gen = gt + shift  # same covariance: FID is the squared z-scored mean shift
  expected = np.sum((shift / gt.std(0)) ** 2)
  assert dance.fid_k(gt, gen) == pytest.approx(expected, rel=1e-8)
  assert dance.fid_g(gt[:, :32], gt[:, :32]) == pytest.approx(0.0, abs=1e-8)
  # Per-feature units cancel: rescaling both sets leaves FID unchanged.
  scale = rng.uniform(0.01, 100.0, size=72)
  assert dance.fid_k(gt * scale, gen * scale) == pytest.approx(expected, rel=1e-8)
  # Equals a direct computation with numpy statistics.
  other = rng.normal(size=(40, 32))
  gt_z, gen_z = dance.normalize_by_ground_truth(gt[:, :32], other)
  direct = frechet.frechet_distance(
    gen_z.mean(0), np.cov(gen_z, rowvar=False), gt_z.mean(0), np.cov(gt_z, rowvar=False)
  )
  assert dance.fid_g(gt[:, :32], other) == pytest.approx(direct, rel=1e-10)


def test_feature_diversity_is_mean_pairwise_distance():
  gt = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])  # std (1, 2), mean (1, 2)
  gen = np.array([[1.0, 2.0], [4.0, 6.0], [1.0, 10.0]])  # z-scored: (0,0), (3,2), (0,4)
  expected = (np.hypot(3, 2) + 4.0 + np.hypot(3, 2)) / 3
  assert dance.feature_diversity(gt, gen) == pytest.approx(expected, rel=1e-9)


def test_named_errors():
  with pytest.raises(TooFewSamplesError, match="music_beats must hold at least one beat"):
    dance.beat_alignment_score([], [1, 2])
  with pytest.raises(TooFewSamplesError, match="motion_beats must hold at least one beat"):
    dance.beat_alignment_score([1, 2], np.array([], int))
  with pytest.raises(ValueError, match=r"music_beats must be a 1-D array.*\(2, 2\)"):
    dance.beat_alignment_score(np.zeros((2, 2)), [1])
  with pytest.raises(ValueError, match=r"joints must have shape \(T, J, 3\), got shape \(10, 24\)"):
    dance.motion_beats(np.zeros((10, 24)))
  with pytest.raises(TooFewSamplesError, match="at least 2 frames, got 1"):
    dance.motion_beats(np.zeros((1, 24, 3)))
  with pytest.raises(ValueError, match=r"audio must be mono.*\(2, 1000\)"):
    dance.music_beats_from_audio(np.zeros((2, 1000)), 15360)
  with pytest.raises(ValueError, match="same feature dimension, got 72 and 32"):
    dance.fid_k(np.zeros((10, 72)), np.zeros((10, 32)))
  with pytest.raises(TooFewSamplesError, match="gen_features must have at least 2 samples"):
    dance.fid_g(np.ones((10, 32)), np.ones((1, 32)))
