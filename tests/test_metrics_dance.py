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
  np.testing.assert_array_equal(dance.motion_beats(joints, fps=60), _BEATS)


def test_beat_alignment_of_aligned_and_shifted_beats():
  joints, _ = _motion_with_speed_minima_on_beats()
  beats = dance.motion_beats(joints, fps=60)
  assert dance.beat_alignment_score(_BEATS, beats, fps=60) == pytest.approx(1.0, abs=1e-6)
  for shift in (1, 2, 4, -3):
    expected = np.exp(-(shift**2) / 18)
    assert dance.beat_alignment_score(_BEATS + shift, beats, fps=60) == pytest.approx(
      expected, rel=1e-12
    )


def test_beat_alignment_hand_computed():
  # Music beats 0 and 10 against one motion beat at 3: distances 3 and 7.
  expected = (np.exp(-9 / 18) + np.exp(-49 / 18)) / 2
  assert dance.beat_alignment_score([0, 10], [3], fps=60) == pytest.approx(expected, rel=1e-12)


def test_librosa_finds_click_track_beats():
  import librosa

  sr, hop_length = 15360, 512  # EDGE's audio rate: one hop per frame at 30 fps
  bpm, duration = 120.0, 6.0
  click_times = np.arange(0.5, duration - 0.25, 60.0 / bpm)
  audio = librosa.clicks(times=click_times, sr=sr, length=int(sr * duration))
  for fps in (30.0, 20.0):
    expected = np.round(click_times * fps).astype(int)
    beats = dance.music_beats_from_audio(audio, sr, hop_length, fps=fps, start_bpm=bpm)
    # The tracker may drop a weak beat at either end; every beat it reports is a click.
    assert len(beats) >= len(expected) - 2
    nearest = np.abs(beats[:, None] - expected[None, :]).min(axis=1)
    assert nearest.max() <= 1, (beats, expected)
  limited = dance.music_beats_from_audio(audio, sr, hop_length, fps=30.0, num_frames=90)
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
    dance.beat_alignment_score([], [1, 2], fps=60)
  with pytest.raises(TooFewSamplesError, match="motion_beats must hold at least one beat"):
    dance.beat_alignment_score([1, 2], np.array([], int), fps=60)
  with pytest.raises(ValueError, match=r"music_beats must be a 1-D array.*\(2, 2\)"):
    dance.beat_alignment_score(np.zeros((2, 2)), [1], fps=60)
  with pytest.raises(ValueError, match=r"joints must have shape \(T, J, 3\), got shape \(10, 24\)"):
    dance.motion_beats(np.zeros((10, 24)), fps=60)
  with pytest.raises(TooFewSamplesError, match="at least 2 frames, got 1"):
    dance.motion_beats(np.zeros((1, 24, 3)), fps=60)
  with pytest.raises(ValueError, match=r"audio must be mono.*\(2, 1000\)"):
    dance.music_beats_from_audio(np.zeros((2, 1000)), 15360, fps=60)
  with pytest.raises(ValueError, match="same feature dimension, got 72 and 32"):
    dance.fid_k(np.zeros((10, 72)), np.zeros((10, 32)))
  with pytest.raises(TooFewSamplesError, match="gen_features must have at least 2 samples"):
    dance.fid_g(np.ones((10, 32)), np.ones((1, 32)))


def _syncopated_dance(fps, duration=5.55):
  """A dance pausing (speed dip) on 13 irregular beats, sampled at `fps`; beat times in s."""
  beats = np.cumsum(np.tile([0.5, 0.3, 0.45, 0.35], 4))[:13]
  t = np.arange(int(duration * fps) + 1) / fps
  distance = np.abs(t[:, None] - beats[None]).min(1)
  speed = 1.0 - 0.9 * np.exp(-(distance**2) / (2 * 0.06**2))  # Metres per second.
  x = np.concatenate([[0.0], np.cumsum(speed[:-1] / fps)])
  skeleton = np.random.default_rng(0).normal(size=(24, 3))
  return skeleton[None] + x[:, None, None] * np.array([1.0, 0.0, 0.0]), beats


def test_beats_and_alignment_take_the_frame_rate():
  """The same dance at 20 and 60 fps has the same beats (in seconds) and BAS.

  With the smoothing fixed at 5 frames (the old signature, right only at
  60 fps) the 20 fps copy lost 7 of its 13 beats.
  """
  for fps in (20.0, 60.0):
    joints, beats = _syncopated_dance(fps)
    found = dance.motion_beats(joints, fps=fps)
    np.testing.assert_allclose(found / fps, beats, atol=0.5 / fps)
    music = np.round(beats * fps)
    assert dance.beat_alignment_score(music, found, fps=fps) == pytest.approx(1.0)
    late = music + round(0.05 * fps)  # 0.05 s = one BAS sigma at any rate.
    assert dance.beat_alignment_score(late, found, fps=fps) == pytest.approx(np.exp(-0.5))
  joints, _ = _syncopated_dance(20.0)
  assert len(dance.motion_beats(joints, fps=20.0, smoothing_seconds=5 / 20)) == 6
  with pytest.raises(ValueError, match="fps must be > 0, got 0"):
    dance.motion_beats(joints, fps=0)


def test_constant_ground_truth_dimension_is_left_out_with_a_warning():
  """A geometric test that never holds in the ground truth made FID_g ~3.6e19."""
  rng = np.random.default_rng(3)
  gt = rng.uniform(0.2, 0.8, size=(50, 32))
  gt[:, 5] = 0.0  # Constant over the ground truth.
  gen = rng.uniform(0.2, 0.8, size=(40, 32))  # Differs there by 0.2..0.8.
  with pytest.warns(dance.ConstantFeatureWarning, match=r"dimensions \[5\] are constant"):
    guarded = dance.fid_g(gt, gen)
  kept = np.delete(np.arange(32), 5)
  assert guarded == pytest.approx(dance.fid_g(gt[:, kept], gen[:, kept]), rel=1e-12)
  assert guarded < 100.0
  with pytest.warns(dance.ConstantFeatureWarning, match="40 of 40 generated samples differ"):
    gt_z, gen_z = dance.normalize_by_ground_truth(gt, gen)
  assert gt_z.shape == (50, 31) and gen_z.shape == (40, 31)
  with pytest.warns(dance.ConstantFeatureWarning):
    assert np.isfinite(dance.feature_diversity(gt, gen))
  with pytest.raises(ValueError, match="vary in at least one dimension"):
    dance.fid_g(np.ones((10, 32)), gen)
