"""Text-to-motion metrics: the HumanML3D protocol of Guo et al. (2022) on embeddings.

The evaluator networks (text and motion encoders) are separate; these are
plain functions of their (N, D) embeddings, pairing text i with motion i:

- R-precision: the test set is cut into batches of 32 (the remainder
  dropped, like the reference `DataLoader(drop_last=True)`); within a batch
  every text ranks the 32 motions by Euclidean distance and scores a top-k
  hit when its own motion is among the k nearest. Chance is k / 32.
- Matching score: mean distance between matched text and motion, over the
  same batches.
- FID: Fréchet distance between Gaussians fitted to real and generated
  motion embeddings.
- Diversity: mean distance over `num_pairs` random pairs of embeddings
  (300 in the paper); multimodality: the same within each prompt's
  generations (10 pairs each).
- Replications (20 in the paper) are summarised as mean ± 1.96·std/√n with
  the population std, as the reference does.

MPJPE and root trajectory error compare joint positions of (..., T, J, 3)
motions, optionally masked per frame (NTC `motion_mask`); NaN/inf in a kept
frame is a `NonFiniteMotionError`, not a NaN result.

Everything runs in float64 numpy on the host, like `frechet`.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxgen.data.motion import check_finite_frames
from jaxgen.metrics import frechet
from jaxgen.metrics.frechet import TooFewSamplesError

# Batches the reference evaluation ranks within.
EVAL_BATCH_SIZE = 32


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(N, M) distances ||a_i - b_j|| between rows of a (N, D) and b (M, D).

  Uses the expansion |a|^2 - 2 a.b + |b|^2 like the reference, clipped at 0
  so rounding never takes the square root of a negative number.
  """
  a = _as_embeddings("a", a)
  b = _as_embeddings("b", b)
  _check_same_dim("a", a, "b", b)
  squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
  return np.sqrt(np.clip(squared, 0, None))


def r_precision(
  text_emb: np.ndarray, motion_emb: np.ndarray, top_k: int = 3, batch_size: int = EVAL_BATCH_SIZE
) -> np.ndarray:
  """(top_k,) hit rates: entry k-1 is the fraction of texts whose motion ranks within top-k."""
  if top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  if top_k > batch_size:
    raise ValueError(f"top_k must be <= batch_size={batch_size}, got {top_k}")
  hits = np.zeros(top_k, np.int64)
  count = 0
  for distances in _batch_distances(text_emb, motion_emb, batch_size):
    # Rank of the matched motion among the batch's motions, 0 = nearest;
    # a stable argsort breaks ties by index, as np.argsort in the reference.
    order = np.argsort(distances, axis=1, kind="stable")
    rank = np.argmax(order == np.arange(len(order))[:, None], axis=1)
    hits += (rank[:, None] < np.arange(1, top_k + 1)[None, :]).sum(0)
    count += len(order)
  return hits / count


def matching_score(
  text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = EVAL_BATCH_SIZE
) -> float:
  """Mean distance between matched text and motion embeddings, over the R-precision batches."""
  total, count = 0.0, 0
  for distances in _batch_distances(text_emb, motion_emb, batch_size):
    total += float(np.trace(distances))
    count += len(distances)
  return total / count


def fid_from_embeddings(
  real_emb: np.ndarray, gen_emb: np.ndarray, *, method: str = "eigh"
) -> float:
  """Fréchet distance between Gaussians fitted to real and generated embeddings.

  `method="sqrtm"` reproduces the reference's scipy `sqrtm` (see `frechet`).
  """
  real = _as_embeddings("real_emb", real_emb)
  gen = _as_embeddings("gen_emb", gen_emb)
  _check_same_dim("real_emb", real, "gen_emb", gen)
  for name, emb in (("real_emb", real), ("gen_emb", gen)):
    if len(emb) < 2:
      raise TooFewSamplesError(
        f"{name} must have at least 2 samples for a covariance, got {len(emb)}"
      )
  return frechet.frechet_distance_from_statistics(
    frechet.statistics_from_features(real), frechet.statistics_from_features(gen), method=method
  )


def diversity(emb: np.ndarray, num_pairs: int = 300, *, rng: jax.Array) -> float:
  """Mean distance between `num_pairs` random pairs of embeddings.

  As the reference, the first and the second members of the pairs are each
  drawn without replacement, independently; it needs more samples than pairs.
  """
  emb = _as_embeddings("emb", emb)
  if num_pairs < 1:
    raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
  if len(emb) <= num_pairs:
    raise TooFewSamplesError(
      f"emb must have more than num_pairs={num_pairs} samples, got {len(emb)}"
    )
  first, second = _draw_pair_indices(rng, len(emb), num_pairs)
  return float(np.linalg.norm(emb[first] - emb[second], axis=-1).mean())


def multimodality(emb_per_prompt: np.ndarray, num_pairs: int = 10, *, rng: jax.Array) -> float:
  """Mean distance between generations of the same prompt, from (P, R, D) embeddings.

  One set of `num_pairs` index pairs (each side without replacement) is
  drawn and used for every prompt, as the reference does.
  """
  emb = np.asarray(emb_per_prompt, np.float64)
  if emb.ndim != 3:
    raise ValueError(
      f"emb_per_prompt must have shape (prompts, replicas, dim), got shape {emb.shape}"
    )
  if num_pairs < 1:
    raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
  if emb.shape[1] <= num_pairs:
    raise TooFewSamplesError(
      f"emb_per_prompt must have more than num_pairs={num_pairs} replicas per prompt, "
      f"got {emb.shape[1]}"
    )
  first, second = _draw_pair_indices(rng, emb.shape[1], num_pairs)
  return float(np.linalg.norm(emb[:, first] - emb[:, second], axis=-1).mean())


def mpjpe(
  pred_joints: np.ndarray,
  gt_joints: np.ndarray,
  mask: np.ndarray | None = None,
  *,
  root_relative: bool = True,
  root_joint: int = 0,
) -> float:
  """Mean per-joint position error of (..., T, J, 3) joints over the frames `mask` keeps.

  `root_relative` subtracts each frame's root joint first, so global
  translation is ignored (the common MPJPE convention); otherwise positions
  are compared as given. `mask` is (..., T), true for real frames.
  """
  pred, gt = _as_joint_pair(pred_joints, gt_joints, mask)
  if not -pred.shape[-2] <= root_joint < pred.shape[-2]:
    raise ValueError(f"root_joint must index one of {pred.shape[-2]} joints, got {root_joint}")
  if root_relative:
    pred = pred - pred[..., root_joint : root_joint + 1, :]
    gt = gt - gt[..., root_joint : root_joint + 1, :]
  per_frame = np.linalg.norm(pred - gt, axis=-1).mean(-1)
  return _masked_mean(per_frame, mask)


def root_trajectory_error(
  pred_joints: np.ndarray,
  gt_joints: np.ndarray,
  mask: np.ndarray | None = None,
  *,
  root_joint: int = 0,
) -> float:
  """Mean Euclidean distance between predicted and true root positions, (..., T, J, 3) inputs."""
  pred, gt = _as_joint_pair(pred_joints, gt_joints, mask)
  if not -pred.shape[-2] <= root_joint < pred.shape[-2]:
    raise ValueError(f"root_joint must index one of {pred.shape[-2]} joints, got {root_joint}")
  per_frame = np.linalg.norm(pred[..., root_joint, :] - gt[..., root_joint, :], axis=-1)
  return _masked_mean(per_frame, mask)


def replicated_summary(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and 95% half-width 1.96·std/√n over the replications on axis 0.

  std is the population std (ddof 0), as the reference's `np.std`. Per-k
  R-precision (n, 3) gives (3,) means and half-widths.
  """
  values = np.asarray(values, np.float64)
  if values.ndim == 0:
    raise ValueError("values must have a leading replication axis, got a scalar")
  if len(values) < 2:
    raise TooFewSamplesError(f"values must hold at least 2 replications, got {len(values)}")
  return values.mean(0), 1.96 * values.std(0) / np.sqrt(len(values))


def _batch_distances(text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int):
  """Yields the (B, B) text-to-motion distances of each full batch."""
  text = _as_embeddings("text_emb", text_emb)
  motion = _as_embeddings("motion_emb", motion_emb)
  if text.shape != motion.shape:
    raise ValueError(
      f"text_emb and motion_emb must have the same shape (paired rows), "
      f"got {text.shape} and {motion.shape}"
    )
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  num_batches = len(text) // batch_size
  if num_batches == 0:
    raise TooFewSamplesError(
      f"text_emb must have at least batch_size={batch_size} pairs, got {len(text)}"
    )
  for start in range(0, num_batches * batch_size, batch_size):
    stop = start + batch_size
    yield euclidean_distance_matrix(text[start:stop], motion[start:stop])


def _draw_pair_indices(
  rng: jax.Array, num_samples: int, num_pairs: int
) -> tuple[np.ndarray, np.ndarray]:
  first_key, second_key = jax.random.split(rng)
  first = jax.random.choice(first_key, num_samples, (num_pairs,), replace=False)
  second = jax.random.choice(second_key, num_samples, (num_pairs,), replace=False)
  return np.asarray(first), np.asarray(second)


def _as_embeddings(name: str, emb: np.ndarray) -> np.ndarray:
  emb = np.asarray(emb, np.float64)
  if emb.ndim != 2:
    raise ValueError(f"{name} must have shape (N, D), got shape {emb.shape}")
  return emb


def _check_same_dim(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(
      f"{name_a} and {name_b} must have the same embedding dimension, "
      f"got {a.shape[1]} and {b.shape[1]}"
    )


def _as_joint_pair(
  pred_joints: np.ndarray, gt_joints: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
  """Checked float64 joints; NaN/inf in a frame the mask keeps is a named error."""
  pred = np.asarray(pred_joints, np.float64)
  gt = np.asarray(gt_joints, np.float64)
  if pred.ndim < 3 or pred.shape[-1] != 3:
    raise ValueError(f"pred_joints must have shape (..., T, J, 3), got shape {pred.shape}")
  if gt.shape != pred.shape:
    raise ValueError(
      f"gt_joints must have the shape of pred_joints {pred.shape}, got shape {gt.shape}"
    )
  keep = None if mask is None or np.shape(mask) != pred.shape[:-2] else mask
  for name, joints in (("pred_joints", pred), ("gt_joints", gt)):
    check_finite_frames(joints, name, frame_ndim=2, keep=keep)
  return pred, gt


def _masked_mean(per_frame: np.ndarray, mask: np.ndarray | None) -> float:
  """Mean of (..., T) per-frame values over the frames `mask` keeps."""
  if mask is None:
    return float(per_frame.mean())
  mask = np.asarray(mask)
  if mask.shape != per_frame.shape:
    raise ValueError(
      f"mask must have shape {per_frame.shape} (the joints' leading axes and T), "
      f"got shape {mask.shape}"
    )
  mask = mask.astype(bool)
  if not mask.any():
    raise TooFewSamplesError("mask must keep at least one frame, got an all-false mask")
  return float(per_frame[mask].mean())
