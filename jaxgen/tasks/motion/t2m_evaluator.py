"""Training and using the Guo et al. text/motion co-embedding as a text-to-motion judge.

Train it like any task (`jaxgen train --config configs/t2m_evaluator_synthetic.py`,
or `train_evaluator(config, workdir)`), then `load_evaluator(workdir)` gives an
`Evaluator` whose embeddings feed `jaxgen.metrics.motion`:

  evaluator = load_evaluator("runs/t2m_evaluator")
  scores = evaluate_generations(evaluator, captions, real, real_lengths, fake, fake_lengths, rng)

Inputs to the evaluator are de-normalised motion features; it normalises
them with its own statistics (those of its training split), as the
reference evaluator does.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.metrics import motion as motion_metrics
from jaxgen.models.motion_evaluator import EvaluatorConfig, MotionEvaluator, co_embedding_loss
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.tasks.motion.t2m_mdm import MotionDataMixin, check_lengths

_LOG = logging.getLogger(__name__)


class MotionEvaluatorTask(MotionDataMixin):
  """The `motion_evaluator` task: contrastive co-embedding training."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model_config = EvaluatorConfig(feature_dim=self.fmt.feature_dim,
                                        vocab_size=self.tokenizer.vocab_size,
                                        **config.evaluator.to_dict())
    self.model = MotionEvaluator(self.model_config)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    arrays = self.motion_arrays(self._train_split)
    arrays["length"] = self._train_split["length"]
    return arrays

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    lengths = batch["motion_mask"].sum(-1).astype(jnp.int32)
    return self.model.init(rng, batch["text_tokens"], batch["text_mask"], batch["motion"],
                           lengths)["params"]

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    shift_rng, dropout_rng = jax.random.split(rng)
    lengths = batch["motion_mask"].sum(-1).astype(jnp.int32)
    text_emb, motion_emb = self.model.apply(
        {"params": params}, batch["text_tokens"], batch["text_mask"], batch["motion"], lengths,
        train=True, rngs={"dropout": dropout_rng})
    batch_size = text_emb.shape[0]
    shift = jax.random.randint(shift_rng, (), 1, max(batch_size, 2))
    loss, metrics = co_embedding_loss(text_emb, motion_emb, shift, self.config.loss.margin)
    distances = jnp.linalg.norm(text_emb[:, None] - motion_emb[None], axis=-1)
    metrics["batch_top1"] = jnp.mean(jnp.argmin(distances, axis=1) == jnp.arange(batch_size))
    return loss, metrics

  @functools.partial(jax.jit, static_argnames=("self",))
  def _embed_text(self, params, tokens, mask):
    return self.model.apply({"params": params}, tokens, mask,
                            method=MotionEvaluator.embed_text)

  @functools.partial(jax.jit, static_argnames=("self",))
  def _embed_motion(self, params, motion, lengths):
    return self.model.apply({"params": params}, motion, lengths,
                            method=MotionEvaluator.embed_motion)

  def preview(self, params, rng: jax.Array, num: int = 32) -> np.ndarray:
    """The text-to-motion distance matrix of `num` test pairs (dark = close) as uint8."""
    del rng
    data = self.split("test")
    evaluator = Evaluator(self, params)
    text = evaluator.embed_text(data["caption"][:num])
    motion = evaluator.embed_motion(data["motion"][:num], data["length"][:num])
    d = motion_metrics.euclidean_distance_matrix(text, motion)
    picture = (255 * d / max(d.max(), 1e-6)).astype(np.uint8)
    return np.repeat(np.repeat(picture, 8, 0), 8, 1)[..., None].repeat(3, -1)


@dataclasses.dataclass
class Evaluator:
  """A trained co-embedding: captions and de-normalised motions -> embeddings (N, dim)."""

  task: MotionEvaluatorTask
  params: Any
  batch_size: int = 64

  @property
  def embedding_dim(self) -> int:
    return self.task.model_config.dim_coemb_hidden

  def _chunks(self, arrays: Sequence[np.ndarray], fn) -> np.ndarray:
    """fn over fixed-size chunks (the last one padded): one compile per shape."""
    out = map_padded_chunks(lambda _, *parts: fn(self.params, *parts), arrays, self.batch_size)
    return out.astype(np.float64)

  def embed_text(self, captions: Sequence[str]) -> np.ndarray:
    tokens, mask = self.task.tokenize(list(captions))
    return self._chunks([tokens, mask], self.task._embed_text)

  def embed_motion(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """features (N, T, D) de-normalised (T <= max_frames), lengths (N,) frames."""
    features = np.asarray(features, np.float32)
    T, D = self.task.max_frames, self.task.fmt.feature_dim
    if features.ndim != 3 or features.shape[-1] != D or features.shape[1] > T:
      raise ValueError(f"features: expected (N, frames <= {T}, {D}) de-normalised motion "
                       f"features, found {features.shape}")
    lengths = check_lengths(lengths, len(features), features.shape[1])
    if not np.isfinite(features).all():
      raise ValueError("features: expected finite values, found NaN or inf")
    padded = np.zeros((len(features), T, D), np.float32)
    padded[:, :features.shape[1]] = features
    mask = np.arange(T)[None, :] < lengths[:, None]
    normalised = np.asarray(self.task.normalizer.normalize(padded), np.float32) * mask[..., None]
    return self._chunks([normalised, lengths], self.task._embed_motion)


def train_evaluator(config: ml_collections.ConfigDict, workdir: str) -> Evaluator:
  """Trains the co-embedding into `workdir` (resuming there) and returns it."""
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top
  if config.task != "t2m_evaluator":
    raise ValueError(f"config.task: expected 'motion_evaluator', found {config.task!r}")
  train(MotionEvaluatorTask(config), config, workdir)
  return load_evaluator(workdir)


def load_evaluator(workdir: str, batch_size: int = 64) -> Evaluator:
  """The evaluator trained in `workdir` (its newest checkpoint, EMA weights)."""
  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top
  task, params = load_run(workdir)
  if task.config.task != "t2m_evaluator":
    raise ValueError(f"workdir: expected a motion_evaluator run, found a "
                     f"{task.config.task!r} run in {workdir!r}")
  return Evaluator(task, params, batch_size)


def embedding_scores(text_emb: np.ndarray, motion_emb: np.ndarray, rng: jax.Array,
                     diversity_pairs: int = 300) -> dict[str, float]:
  """R-precision top-1/2/3, matching score and diversity of paired embeddings."""
  top = motion_metrics.r_precision(text_emb, motion_emb, top_k=3)
  pairs = min(diversity_pairs, len(motion_emb) - 1)
  return dict(r_precision_top1=float(top[0]), r_precision_top2=float(top[1]),
              r_precision_top3=float(top[2]),
              matching_score=motion_metrics.matching_score(text_emb, motion_emb),
              diversity=motion_metrics.diversity(motion_emb, pairs, rng=rng))


def evaluate_generations(evaluator: Evaluator, captions: Sequence[str], real_features: np.ndarray,
                         real_lengths: np.ndarray, fake_features: np.ndarray,
                         fake_lengths: np.ndarray, rng: jax.Array,
                         diversity_pairs: int = 300) -> dict[str, dict[str, float]]:
  """The HumanML3D protocol for generated motions against the ground truth of the same captions.

  Returns {"real": scores, "generated": scores}: R-precision top-1/2/3 and
  matching score (each caption against its own motion, in batches of 32),
  diversity (min(diversity_pairs, N-1) random pairs) and FID. The
  generated FID is against the real motions; the real one is between two
  random halves of the real set (the floor sampling noise sets).
  """
  n = len(captions)
  for name, value in (("real_features", real_features), ("fake_features", fake_features),
                      ("real_lengths", real_lengths), ("fake_lengths", fake_lengths)):
    if len(value) != n:
      raise ValueError(f"{name}: expected one entry per caption ({n}), found {len(value)}")
  text = evaluator.embed_text(captions)
  real = evaluator.embed_motion(real_features, real_lengths)
  fake = evaluator.embed_motion(fake_features, fake_lengths)
  real_rng, fake_rng, split_rng = jax.random.split(rng, 3)
  scores = dict(real=embedding_scores(text, real, real_rng, diversity_pairs),
                generated=embedding_scores(text, fake, fake_rng, diversity_pairs))
  order = np.asarray(jax.random.permutation(split_rng, n))
  scores["real"]["fid"] = motion_metrics.fid_from_embeddings(real[order[:n // 2]],
                                                             real[order[n // 2:]])
  scores["generated"]["fid"] = motion_metrics.fid_from_embeddings(real, fake)
  return scores


def evaluate_multimodality(evaluator: Evaluator, features: np.ndarray, lengths: np.ndarray,
                           rng: jax.Array, num_pairs: int = 10) -> float:
  """Multimodality of (P, R, T, D) generations (R per prompt) with (P, R) lengths."""
  features = np.asarray(features)
  if features.ndim != 4:
    raise ValueError(f"features: expected (prompts, replicas, frames, dim), found {features.shape}")
  P, R = features.shape[:2]
  emb = evaluator.embed_motion(features.reshape((P * R,) + features.shape[2:]),
                               np.asarray(lengths).reshape(P * R))
  return motion_metrics.multimodality(emb.reshape(P, R, -1), num_pairs, rng=rng)


def evaluate_text_to_motion(task, params, evaluator: Evaluator, rng: jax.Array, *,
                            num_examples: int | None = None,
                            **generate_options) -> dict[str, dict[str, float]]:
  """Generates the test split's captions at their true lengths and scores them.

  `task` is any motion task with the generation contract
  `task.generate(params, captions, lengths, rng, **generate_options)`.
  """
  data = evaluator.task.split("test")
  n = len(data["caption"]) if num_examples is None else min(num_examples, len(data["caption"]))
  captions, lengths, real = data["caption"][:n], data["length"][:n], data["motion"][:n]
  gen_rng, score_rng = jax.random.split(rng)
  fake = task.generate(params, captions, lengths, gen_rng, **generate_options)
  return evaluate_generations(evaluator, captions, real, lengths, fake, lengths, score_rng)


def main(argv: Sequence[str] | None = None) -> dict:
  """`python -m jaxgen.tasks.motion.t2m_evaluator --run DIR --evaluator DIR`: scores as JSON."""
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  from jaxgen.tasks.registry import load_run  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description="Score a text-to-motion run with a trained evaluator")
  parser.add_argument("--run", required=True, help="run directory of a text-to-motion model")
  parser.add_argument("--evaluator", required=True, help="run directory of the evaluator")
  parser.add_argument("--num-examples", type=int, default=None, help="test captions (default all)")
  parser.add_argument("--sampler", default=None)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--guidance", type=float, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="also write the scores to this JSON file")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  evaluator = load_evaluator(args.evaluator)
  task, params = load_run(args.run)
  options = {k: v for k, v in dict(sampler=args.sampler, num_steps=args.steps,
                                   guidance_scale=args.guidance).items() if v is not None}
  start = time.monotonic()
  scores = evaluate_text_to_motion(task, params, evaluator, jax.random.PRNGKey(args.seed),
                                   num_examples=args.num_examples, **options)
  scores["seconds"] = round(time.monotonic() - start, 1)
  scores["options"] = options
  text = json.dumps(scores, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  return scores


if __name__ == "__main__":
  main()
