"""The pieces of the dance comparison table: baselines, genre judge, seam statistic, joins."""

import importlib.util
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.tasks.dance import dance_data
from jaxgen.tasks.dance.dance_table import (
  DanceTableError,
  accuracy,
  fit_genre_judge,
  frames_around,
  mismatched_pairing,
  retrieval_indices,
  retrieve_dances,
  seam_statistics,
  velocity_jumps,
  window_join_frames,
)

FPS = 20.0


# -- mismatched music ------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_mismatched_pairing_is_a_derangement(n):
  pairing = mismatched_pairing(n)
  np.testing.assert_array_equal(np.sort(pairing), np.arange(n))  # a permutation
  assert (pairing != np.arange(n)).all()  # no dance keeps its own music
  assert pairing[n - 1] == 0 and pairing[0] == 1


def test_mismatched_pairing_needs_two_tracks():
  with pytest.raises(DanceTableError, match="num_tracks: .* at least 2 tracks.* found 1"):
    mismatched_pairing(1)


# -- retrieval -------------------------------------------------------------------


def test_retrieval_picks_same_genre_dances_cut_to_length_and_spreads_them():
  pool_genres = np.array([2, 0, 2, 1, 0, 2])
  pool = np.arange(6 * 30 * 22 * 3, dtype=np.float32).reshape(6, 30, 22, 3)
  test_genres = np.array([2, 0, 2, 2, 1, 2])
  np.testing.assert_array_equal(retrieval_indices(test_genres, pool_genres), [0, 1, 2, 5, 3, 0])
  dances = retrieve_dances(test_genres, 24, pool, pool_genres)
  assert dances.shape == (6, 24, 22, 3)
  for dance, index, genre in zip(dances, [0, 1, 2, 5, 3, 0], test_genres):
    assert pool_genres[index] == genre
    np.testing.assert_array_equal(dance, pool[index, :24])


def test_retrieval_names_a_missing_genre_and_a_too_long_track():
  pool = np.zeros((2, 30, 22, 3))
  with pytest.raises(DanceTableError, match="test track 1 has genre 3, and no training dance"):
    retrieval_indices(np.array([0, 3]), np.array([0, 1]))
  with pytest.raises(DanceTableError, match="num_frames: the training dances hold 30 frames"):
    retrieve_dances(np.array([0]), 31, pool, np.array([0, 1]))


# -- genre judge -----------------------------------------------------------------


def _separable(rng, per_class, num_classes=4, num_noise=10):
  """Class c lifts dimension c by 1e-3 (noise 1e-4); then loud noise dimensions; one constant."""
  labels = np.repeat(np.arange(num_classes), per_class)
  signal = 1e-3 * (
    np.eye(num_classes)[labels] + 0.1 * rng.standard_normal((labels.size, num_classes))
  )
  noise = 1e3 * rng.standard_normal((labels.size, num_noise))
  constant = np.full(labels.size, 7.0)
  return np.column_stack([signal, noise, constant]), labels


def test_genre_judge_separates_separable_features():
  rng = np.random.default_rng(0)
  features, labels = _separable(rng, 40)
  judge = fit_genre_judge(features, labels, 4)
  held_out, held_labels = _separable(rng, 25)
  assert accuracy(judge.predict(held_out), held_labels) == 1.0
  assert judge.scale[-1] == 1.0 and np.abs(judge.weights[-1]).max() < 1e-6  # constant: no weight
  # Each class leans on its own signal dimension more than on any noise dimension.
  signal_weights = np.diag(judge.weights[:4])
  assert (signal_weights > 3 * np.abs(judge.weights[4:-1]).max(0)).all()


def test_genre_judge_is_the_regularised_optimum():
  rng = np.random.default_rng(2)
  features, labels = _separable(rng, 20, num_classes=3, num_noise=5)
  l2 = 1e-2
  judge = fit_genre_judge(features, labels, 3, l2=l2)
  # Stationarity, computed here: Z^T (softmax - onehot) / n + l2 W = 0 and sum(softmax - onehot) = 0.
  logits = judge.logits(features)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  residual = (p - np.eye(3)[labels]) / len(labels)
  z = (features - features.mean(0)) / np.where(features.std(0) > 0, features.std(0), 1.0)
  np.testing.assert_allclose(z.T @ residual + l2 * judge.weights, 0.0, atol=1e-4)
  np.testing.assert_allclose(residual.sum(0), 0.0, atol=1e-4)
  np.testing.assert_array_equal(judge.predict(features), np.argmax(logits, axis=1))


def test_accuracy_counts_equal_labels():
  assert accuracy(np.array([0, 1, 2, 3, 1]), np.array([0, 1, 1, 3, 2])) == 3 / 5
  with pytest.raises(DanceTableError, match="predicted, labels: .* found shapes"):
    accuracy(np.array([0, 1]), np.array([0, 1, 2]))


def test_genre_judge_names_bad_labels_and_features():
  features = np.zeros((4, 3))
  with pytest.raises(DanceTableError, match=r"labels: expected every class of 0..2 .* \[0, 1\]"):
    fit_genre_judge(features, np.array([0, 1, 0, 1]), 3)
  judge = fit_genre_judge(np.eye(4, 3), np.array([0, 1, 0, 1]), 2)
  with pytest.raises(DanceTableError, match=r"features: expected \(N, 3\) .* found \(2, 5\)"):
    judge.predict(np.zeros((2, 5)))
  with pytest.raises(DanceTableError, match="features: expected finite"):
    judge.predict(np.full((1, 3), np.nan))


# -- seams -----------------------------------------------------------------------


@pytest.mark.parametrize("num_frames,seq_len", [(600, 100), (237, 20), (100, 100), (101, 100)])
def test_join_frames_are_where_one_cross_fade_gives_way_to_the_next(num_frames, seq_len):
  n = dance_data.num_windows(num_frames, seq_len)
  half = seq_len // 2
  # Window k holds the constant k: past window 0's first half the stitched dance ramps
  # from one window to the next, and at each join it is (almost) window k alone.
  windows = jnp.broadcast_to(
    jnp.arange(n, dtype=jnp.float32)[None, :, None, None], (1, n, seq_len, 1)
  )
  stitched = np.asarray(dance_data.stitch_windows(windows, num_frames))[0, :, 0]
  assert stitched.shape == (num_frames,)
  joins = window_join_frames(num_frames, seq_len)
  assert len(joins) == n - 1
  np.testing.assert_array_equal(stitched[:half], 0.0)
  if n > 1:
    assert np.all(np.diff(stitched[half - 1 : (n - 1) * half + half]) > 0)
  for k, join in enumerate(joins, start=1):
    np.testing.assert_allclose(stitched[join - 1 : join + 1], k, atol=1.0 / seq_len + 1e-6)


def _accelerating(num_frames, c=0.001):
  """x_t = c t^2 along x for every joint: every velocity jump is exactly 2 c fps."""
  t = np.arange(num_frames, dtype=np.float64)
  joints = np.zeros((num_frames, 22, 3))
  joints[..., 0] = (c * t**2)[:, None]
  return joints


def test_velocity_jumps_match_the_second_difference():
  rng = np.random.default_rng(1)
  joints = rng.standard_normal((9, 22, 3))
  expected = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1).mean(-1) * FPS
  np.testing.assert_allclose(velocity_jumps(joints, FPS), expected, rtol=1e-12)
  np.testing.assert_allclose(velocity_jumps(_accelerating(10), FPS), 2 * 0.001 * FPS, rtol=1e-9)


def test_seam_statistic_finds_a_jump_injected_at_the_joins():
  c, d, joins = 0.001, 0.05, window_join_frames(200, 40)  # joins 40, 60, ..., 180
  joints = _accelerating(200, c)
  for join in joins:
    joints[join:, :, 0] += d  # every later frame moved by d: a step at the join
  stats = seam_statistics(joints, joins, FPS)
  # Jumps J - 2 and J - 1 read |2c + d| fps and |2c - d| fps; inside, 2c fps.
  np.testing.assert_allclose(stats["join_mean"], d * FPS, rtol=1e-9)
  np.testing.assert_allclose(stats["join_max"], (2 * c + d) * FPS, rtol=1e-9)
  np.testing.assert_allclose([stats["inside_mean"], stats["inside_max"]], 2 * c * FPS, rtol=1e-9)
  np.testing.assert_allclose(stats["mean_ratio"], d / (2 * c), rtol=1e-9)
  assert stats["num_joins"] == len(joins) == 8


def test_seam_statistic_puts_a_jump_between_joins_inside_the_windows():
  c, d, joins = 0.001, 0.05, window_join_frames(200, 40)
  joints = _accelerating(200, c)
  joints[50:, :, 0] += d  # frame 50 is no join
  stats = seam_statistics(joints, joins, FPS)
  np.testing.assert_allclose([stats["join_mean"], stats["join_max"]], 2 * c * FPS, rtol=1e-9)
  np.testing.assert_allclose(stats["inside_max"], (2 * c + d) * FPS, rtol=1e-9)
  assert stats["mean_ratio"] < 1 and stats["max_ratio"] < 0.1
  smooth = seam_statistics(_accelerating(200, c), joins, FPS)
  np.testing.assert_allclose([smooth["mean_ratio"], smooth["max_ratio"]], 1.0, rtol=1e-9)


def test_seam_pieces_name_bad_input():
  with pytest.raises(DanceTableError, match="seq_len: expected an even window"):
    window_join_frames(100, 21)
  with pytest.raises(DanceTableError, match=r"joins: expected at least one join frame in 2..8"):
    seam_statistics(_accelerating(10), np.array([9]), FPS)
  with pytest.raises(DanceTableError, match=r"joints: expected \(T, J, 3\) with T >= 3"):
    velocity_jumps(np.zeros((2, 22, 3)), FPS)


def test_frames_around_a_join_centre_it_and_stay_inside_the_dance():
  np.testing.assert_array_equal(frames_around(100, 600), np.arange(96, 104))
  np.testing.assert_array_equal(frames_around(2, 600), np.arange(0, 8))
  np.testing.assert_array_equal(frames_around(598, 600), np.arange(592, 600))


# -- the script's named errors (no trained run needed) ---------------------------


@pytest.fixture(scope="module")
def table_script():
  path = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "dance_table.py"
  )
  spec = importlib.util.spec_from_file_location("benchmarks_dance_table", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_script_names_a_missing_run_and_a_run_that_does_not_dance(table_script, tmp_path):
  with pytest.raises(table_script.DanceRunError, match="--run: expected NAME=RUN_DIR"):
    table_script.parse_run(str(tmp_path))
  with pytest.raises(table_script.DanceRunError, match="--run EDGE: .* holds no config.json"):
    table_script.parse_run(f"EDGE={tmp_path / 'missing'}")
  (tmp_path / "config.json").write_text(json.dumps({"task": "cyclegan"}))
  name, workdir = table_script.parse_run(f"GAN={tmp_path}")
  with pytest.raises(
    table_script.DanceRunError, match="--run GAN: .* task 'cyclegan', which does not dance"
  ):
    table_script.load_dance_run(name, workdir)
