"""Text-to-motion metrics (HumanML3D protocol) on hand-built embeddings and skeletons."""

import jax
import numpy as np
import pytest
import scipy.spatial

from jaxgen.metrics import frechet, motion
from jaxgen.metrics.frechet import TooFewSamplesError


def test_distance_matrix_equals_scipy_cdist():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
  np.testing.assert_allclose(
    motion.euclidean_distance_matrix(a, b), scipy.spatial.distance.cdist(a, b), atol=1e-12
  )


def test_perfect_match_has_r_precision_one_and_matching_score_zero():
  emb = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
  np.testing.assert_array_equal(motion.r_precision(emb, emb), [1.0, 1.0, 1.0])
  assert motion.matching_score(emb, emb) == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_ranks_and_dropped_remainder():
  # Batch of 3 in 1-D: text 0 -> motion 0 is nearest (rank 0), text 1 ->
  # motion 1 is farthest (rank 2), text 2 -> motion 2 is second (rank 1).
  text = np.array([[0.0], [10.0], [20.0], [100.0]])
  motions = np.array([[1.0], [25.0], [12.0], [-500.0]])  # last pair is the dropped remainder
  np.testing.assert_allclose(
    motion.r_precision(text, motions, top_k=3, batch_size=3), [1 / 3, 2 / 3, 1.0]
  )
  assert motion.matching_score(text, motions, batch_size=3) == pytest.approx((1 + 15 + 8) / 3)


def test_unrelated_embeddings_score_chance():
  rng = np.random.default_rng(2)
  text, motions = rng.normal(size=(2, 32 * 400, 8))
  precision = motion.r_precision(text, motions)
  chance = np.array([1, 2, 3]) / 32
  # Binomial standard errors over 12,800 texts are 0.0015-0.0026; allow ~4 of them.
  np.testing.assert_allclose(precision, chance, atol=0.01)


def test_fid_from_embeddings_matches_numpy_statistics():
  rng = np.random.default_rng(3)
  real, gen = rng.normal(size=(200, 6)), rng.normal(0.5, 2.0, size=(150, 6))
  expected = frechet.frechet_distance(
    real.mean(0), np.cov(real, rowvar=False), gen.mean(0), np.cov(gen, rowvar=False)
  )
  assert motion.fid_from_embeddings(real, gen) == pytest.approx(expected, rel=1e-10)
  assert motion.fid_from_embeddings(real, real) == pytest.approx(0.0, abs=1e-9)


def test_diversity():
  key = jax.random.key(0)
  assert motion.diversity(np.full((400, 8), 3.0), rng=key) == 0.0
  # Independent standard normals in D dims: E|x - y| ~= sqrt(2 D) (1 - 1 / (8 D)).
  emb = np.random.default_rng(4).normal(size=(2000, 64))
  value = motion.diversity(emb, num_pairs=300, rng=key)
  assert value == pytest.approx(np.sqrt(128) * (1 - 1 / 512), rel=0.03)
  assert motion.diversity(emb, num_pairs=300, rng=key) == value  # the key fixes the pairs


def test_multimodality_measures_spread_within_prompts_only():
  key = jax.random.key(1)
  # Prompts far apart, generations identical within each prompt: zero.
  per_prompt = np.repeat(np.arange(5.0)[:, None, None] * 100, 30, axis=1) * np.ones((1, 1, 4))
  assert motion.multimodality(per_prompt, num_pairs=10, rng=key) == 0.0
  # Two-point generations +-1 on one axis: every pair is 0 or 2 apart.
  signs = np.where(np.arange(30) % 2 == 0, 1.0, -1.0)
  per_prompt = np.zeros((5, 30, 4))
  per_prompt[:, :, 0] = signs
  value = motion.multimodality(per_prompt, num_pairs=10, rng=key)
  assert min(abs(value - 0.2 * differing) for differing in range(11)) < 1e-12


def test_mpjpe_of_translated_skeleton():
  rng = np.random.default_rng(5)
  gt = rng.normal(size=(2, 12, 22, 3))
  offset = np.array([3.0, 0.0, 4.0])  # length 5
  pred = gt + offset
  assert motion.mpjpe(pred, gt, root_relative=True) == pytest.approx(0.0, abs=1e-12)
  assert motion.mpjpe(pred, gt, root_relative=False) == pytest.approx(5.0)
  assert motion.root_trajectory_error(pred, gt) == pytest.approx(5.0)


def test_mpjpe_respects_frame_mask():
  rng = np.random.default_rng(6)
  gt = rng.normal(size=(2, 10, 5, 3))
  pred = gt.copy()
  mask = np.ones((2, 10), bool)
  mask[0, 6:] = False  # padding frames: garbage there must not count
  pred[0, 6:] += 1000.0
  pred[1, :3, :, 1] += 2.0  # every joint (root included) 2 off in 3 of 16 kept frames
  assert motion.mpjpe(pred, gt, mask, root_relative=False) == pytest.approx(2.0 * 3 / 16)
  assert motion.root_trajectory_error(pred, gt, mask) == pytest.approx(2.0 * 3 / 16)
  assert motion.mpjpe(pred, gt, mask, root_relative=True) == pytest.approx(0.0, abs=1e-12)


def test_replicated_summary():
  mean, half_width = motion.replicated_summary([1.0, 2.0, 3.0, 4.0])
  assert mean == pytest.approx(2.5)
  assert half_width == pytest.approx(1.96 * np.sqrt(1.25) / 2)
  means, half_widths = motion.replicated_summary(np.array([[0.5, 0.7, 0.8], [0.5, 0.7, 0.8]]))
  np.testing.assert_allclose(means, [0.5, 0.7, 0.8])
  np.testing.assert_allclose(half_widths, 0.0, atol=1e-15)


def test_named_errors():
  key = jax.random.key(0)
  emb = np.zeros((40, 8))
  with pytest.raises(
    ValueError, match=r"text_emb and motion_emb must have the same shape.*\(40, 8\).*\(40, 9\)"
  ):
    motion.r_precision(emb, np.zeros((40, 9)))
  with pytest.raises(TooFewSamplesError, match="at least batch_size=32 pairs, got 20"):
    motion.matching_score(emb[:20], emb[:20])
  with pytest.raises(ValueError, match=r"text_emb must have shape \(N, D\), got shape \(40,\)"):
    motion.r_precision(np.zeros(40), np.zeros(40))
  with pytest.raises(TooFewSamplesError, match="more than num_pairs=300 samples, got 40"):
    motion.diversity(emb, rng=key)
  with pytest.raises(
    TooFewSamplesError, match="more than num_pairs=10 replicas per prompt, got 10"
  ):
    motion.multimodality(np.zeros((3, 10, 8)), rng=key)
  with pytest.raises(
    ValueError, match=r"emb_per_prompt must have shape \(prompts, replicas, dim\)"
  ):
    motion.multimodality(emb, rng=key)
  with pytest.raises(ValueError, match="same embedding dimension, got 8 and 4"):
    motion.fid_from_embeddings(emb, np.zeros((40, 4)))
  joints = np.zeros((10, 22, 3))
  with pytest.raises(ValueError, match=r"gt_joints must have the shape of pred_joints"):
    motion.mpjpe(joints, np.zeros((10, 21, 3)))
  with pytest.raises(ValueError, match=r"mask must have shape \(10,\).*got shape \(9,\)"):
    motion.mpjpe(joints, joints, np.ones(9, bool))
  with pytest.raises(TooFewSamplesError, match="all-false mask"):
    motion.root_trajectory_error(joints, joints, np.zeros(10, bool))
  with pytest.raises(TooFewSamplesError, match="at least 2 replications, got 1"):
    motion.replicated_summary([0.5])
