"""The Guo et al. text/motion co-embedding as a trainable task: `t2m_evaluator`.

Trained like any task (`jaxgen train --config configs/t2m_evaluator_synthetic.py`);
`jaxgen.tasks.motion.evaluation` turns a trained run into the judge of
text-to-motion models. Inputs to the embeddings are de-normalised motion
features; the task normalises them with its own statistics (those of its
training split), as the reference evaluator does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.metrics import motion as motion_metrics
from jaxgen.models.motion_evaluator import EvaluatorConfig, MotionEvaluator, co_embedding_loss
from jaxgen.tasks.motion.motion_task import MotionTask, check_lengths, frame_mask


class MotionEvaluatorTask(MotionTask):
  """The `t2m_evaluator` task: contrastive co-embedding training, and the embeddings."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config = EvaluatorConfig(
      feature_dim=self.fmt.feature_dim,
      vocab_size=self.tokenizer.vocab_size,
      **config.evaluator.to_dict(),
    )
    self.model = MotionEvaluator(self.model_config)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    arrays = self.motion_arrays(self._train_split)
    arrays["length"] = self._train_split["length"]
    return arrays

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    lengths = batch["motion_mask"].sum(-1).astype(jnp.int32)
    return self.model.init(rng, batch["text_tokens"], batch["text_mask"], batch["motion"], lengths)[
      "params"
    ]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    shift_rng, dropout_rng = jax.random.split(rng)
    lengths = batch["motion_mask"].sum(-1).astype(jnp.int32)
    text_emb, motion_emb = self.model.apply(
      {"params": params},
      batch["text_tokens"],
      batch["text_mask"],
      batch["motion"],
      lengths,
      train=True,
      rngs={"dropout": dropout_rng},
    )
    batch_size = text_emb.shape[0]
    shift = jax.random.randint(shift_rng, (), 1, max(batch_size, 2))
    loss, metrics = co_embedding_loss(text_emb, motion_emb, shift, self.config.loss.margin)
    distances = jnp.linalg.norm(text_emb[:, None] - motion_emb[None], axis=-1)
    metrics["batch_top1"] = jnp.mean(jnp.argmin(distances, axis=1) == jnp.arange(batch_size))
    return loss, metrics

  # -- embeddings ------------------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def _embed_text(self, params, tokens, mask):
    return self.model.apply({"params": params}, tokens, mask, method=MotionEvaluator.embed_text)

  @functools.partial(jax.jit, static_argnames=("self",))
  def _embed_motion(self, params, motion, lengths):
    return self.model.apply(
      {"params": params}, motion, lengths, method=MotionEvaluator.embed_motion
    )

  def embed_text(self, params, captions: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """float64 (N, dim) embeddings of captions, in fixed-size chunks (one compile)."""
    tokens, mask = self.tokenize(list(captions))
    out = map_padded_chunks(
      lambda _, *parts: self._embed_text(params, *parts), [tokens, mask], batch_size
    )
    return out.astype(np.float64)

  def embed_motion(
    self, params, features: np.ndarray, lengths: np.ndarray, batch_size: int = 64
  ) -> np.ndarray:
    """float64 (N, dim) embeddings of de-normalised features (N, T <= max_frames, D)."""
    features = np.asarray(features, np.float32)
    T, D = self.max_frames, self.fmt.feature_dim
    if features.ndim != 3 or features.shape[-1] != D or features.shape[1] > T:
      raise ValueError(
        f"features: expected (N, frames <= {T}, {D}) de-normalised motion "
        f"features, found {features.shape}"
      )
    lengths = check_lengths(lengths, len(features), features.shape[1])
    if not np.isfinite(features).all():
      raise ValueError("features: expected finite values, found NaN or inf")
    padded = np.zeros((len(features), T, D), np.float32)
    padded[:, : features.shape[1]] = features
    mask = frame_mask(lengths, T)
    normalised = np.asarray(self.normalizer.normalize(padded), np.float32) * mask[..., None]
    out = map_padded_chunks(
      lambda _, *parts: self._embed_motion(params, *parts), [normalised, lengths], batch_size
    )
    return out.astype(np.float64)

  def preview(self, params, rng: jax.Array, num: int = 32) -> np.ndarray:
    """The text-to-motion distance matrix of `num` test pairs (dark = close) as uint8."""
    del rng
    data = self.split("test")
    text = self.embed_text(params, data["caption"][:num])
    motion = self.embed_motion(params, data["motion"][:num], data["length"][:num])
    d = motion_metrics.euclidean_distance_matrix(text, motion)
    picture = (255 * d / max(d.max(), 1e-6)).astype(np.uint8)
    return np.repeat(np.repeat(picture, 8, 0), 8, 1)[..., None].repeat(3, -1)
