"""Scoring text-to-motion models with a trained `t2m_evaluator` co-embedding.

  evaluator = load_evaluator("runs/t2m_evaluator")
  scores = evaluate_generations(evaluator, captions, real, real_lengths, fake, fake_lengths, rng)

or, for a whole run (what `jaxgen eval-motion --run runs/X --evaluator
runs/t2m_evaluator` prints):

  scores = score_run("runs/t2m_mdm", "runs/t2m_evaluator", num_examples=256)

The metrics (R-precision, matching score, FID, diversity, multimodality)
are `jaxgen.metrics.motion` on the evaluator's embeddings, following the
HumanML3D protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgen.metrics import motion as motion_metrics
from jaxgen.tasks.motion.motion_task import MotionGenerativeTask
from jaxgen.tasks.motion.t2m_evaluator import MotionEvaluatorTask
from jaxgen.tasks.registry import load_run_of, task_class
from jaxgen.training.inference import load_run_config, restore_ema_params

_LOG = logging.getLogger(__name__)


class EvaluationError(ValueError):
  """A run or option that text-to-motion scoring cannot use."""


@dataclasses.dataclass
class Evaluator:
  """A trained co-embedding: captions and de-normalised motions -> embeddings (N, dim)."""

  task: MotionEvaluatorTask
  params: Any
  batch_size: int = 64

  @property
  def embedding_dim(self) -> int:
    return self.task.model_config.dim_coemb_hidden

  def embed_text(self, captions: Sequence[str]) -> np.ndarray:
    return self.task.embed_text(self.params, captions, self.batch_size)

  def embed_motion(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """features (N, T, D) de-normalised (T <= max_frames), lengths (N,) frames."""
    return self.task.embed_motion(self.params, features, lengths, self.batch_size)


def train_evaluator(config: ml_collections.ConfigDict, workdir: str) -> Evaluator:
  """Trains the co-embedding into `workdir` (resuming there) and returns it."""
  from jaxgen.training.trainer import train  # pylint: disable=g-import-not-at-top  (heavy)

  if config.task != "t2m_evaluator":
    raise EvaluationError(f"config.task: expected 't2m_evaluator', found {config.task!r}")
  train(MotionEvaluatorTask(config), config, workdir)
  return load_evaluator(workdir)


def load_evaluator(workdir: str, batch_size: int = 64) -> Evaluator:
  """The evaluator trained in `workdir` (its newest checkpoint, EMA weights)."""
  task, params = load_run_of(
    MotionEvaluatorTask, workdir, flag="--evaluator", error=EvaluationError
  )
  return Evaluator(task, params, batch_size)


def embedding_scores(
  text_emb: np.ndarray, motion_emb: np.ndarray, rng: jax.Array, diversity_pairs: int = 300
) -> dict[str, float]:
  """R-precision top-1/2/3, matching score and diversity of paired embeddings."""
  top = motion_metrics.r_precision(text_emb, motion_emb, top_k=3)
  pairs = min(diversity_pairs, len(motion_emb) - 1)
  return dict(
    r_precision_top1=float(top[0]),
    r_precision_top2=float(top[1]),
    r_precision_top3=float(top[2]),
    matching_score=motion_metrics.matching_score(text_emb, motion_emb),
    diversity=motion_metrics.diversity(motion_emb, pairs, rng=rng),
  )


def evaluate_generations(
  evaluator: Evaluator,
  captions: Sequence[str],
  real_features: np.ndarray,
  real_lengths: np.ndarray,
  fake_features: np.ndarray,
  fake_lengths: np.ndarray,
  rng: jax.Array,
  diversity_pairs: int = 300,
) -> dict[str, dict[str, float]]:
  """The HumanML3D protocol for generated motions against the ground truth of the same captions.

  Returns {"real": scores, "generated": scores}: R-precision top-1/2/3 and
  matching score (each caption against its own motion, in batches of 32),
  diversity (min(diversity_pairs, N-1) random pairs) and FID. The
  generated FID is against the real motions; the real one is between two
  random halves of the real set (the floor sampling noise sets).
  """
  n = len(captions)
  for name, value in (
    ("real_features", real_features),
    ("fake_features", fake_features),
    ("real_lengths", real_lengths),
    ("fake_lengths", fake_lengths),
  ):
    if len(value) != n:
      raise ValueError(f"{name}: expected one entry per caption ({n}), found {len(value)}")
  text = evaluator.embed_text(captions)
  real = evaluator.embed_motion(real_features, real_lengths)
  fake = evaluator.embed_motion(fake_features, fake_lengths)
  real_rng, fake_rng, split_rng = jax.random.split(rng, 3)
  scores = dict(
    real=embedding_scores(text, real, real_rng, diversity_pairs),
    generated=embedding_scores(text, fake, fake_rng, diversity_pairs),
  )
  order = np.asarray(jax.random.permutation(split_rng, n))
  scores["real"]["fid"] = motion_metrics.fid_from_embeddings(
    real[order[: n // 2]], real[order[n // 2 :]]
  )
  scores["generated"]["fid"] = motion_metrics.fid_from_embeddings(real, fake)
  return scores


def evaluate_multimodality(
  evaluator: Evaluator,
  features: np.ndarray,
  lengths: np.ndarray,
  rng: jax.Array,
  num_pairs: int = 10,
) -> float:
  """Multimodality of (P, R, T, D) generations (R per prompt) with (P, R) lengths."""
  features = np.asarray(features)
  if features.ndim != 4:
    raise ValueError(f"features: expected (prompts, replicas, frames, dim), found {features.shape}")
  P, R = features.shape[:2]
  emb = evaluator.embed_motion(
    features.reshape((P * R,) + features.shape[2:]), np.asarray(lengths).reshape(P * R)
  )
  return motion_metrics.multimodality(emb.reshape(P, R, -1), num_pairs, rng=rng)


def evaluate_text_to_motion(
  task: MotionGenerativeTask,
  params,
  evaluator: Evaluator,
  rng: jax.Array,
  *,
  num_examples: int | None = None,
  **generate_options,
) -> dict[str, dict[str, float]]:
  """Generates the test split's captions at their true lengths and scores them.

  The generated motions are judged over the frames the task made (a token
  model rounds lengths down to whole codes).
  """
  data = evaluator.task.split("test")
  n = len(data["caption"]) if num_examples is None else min(num_examples, len(data["caption"]))
  captions, lengths, real = data["caption"][:n], data["length"][:n], data["motion"][:n]
  gen_rng, score_rng = jax.random.split(rng)
  samples = task.generate(
    params,
    dict(caption=np.asarray(captions, dtype=str), length=lengths),
    gen_rng,
    **generate_options,
  )
  return evaluate_generations(
    evaluator, captions, real, lengths, samples["motion"], samples["length"], score_rng
  )


def check_score_options(task_cls: type, name: str, options: Mapping[str, Any]) -> dict:
  """The options that are set, with a named error for any the task's `generate` does not take."""
  options = {k: v for k, v in options.items() if v is not None}
  unknown = sorted(set(options) - set(task_cls.sample_spec.options))
  if unknown:
    raise EvaluationError(
      f"options: task {name!r} takes {list(task_cls.sample_spec.options)}, found {unknown}"
    )
  return options


def score_run(
  run_dir: str, evaluator_dir: str, *, num_examples: int | None = None, seed: int = 0, **options
) -> dict:
  """Scores of a text-to-motion run on its test split (`jaxgen eval-motion`).

  Args:
    run_dir: run directory of a text-to-motion task (t2m_mdm, t2m_gpt, t2m_vae).
    evaluator_dir: run directory of a `t2m_evaluator` on the same data.
    num_examples: test captions to generate (default: all).
    seed: generation and scoring seed.
    **options: the run's sampling options (`task.sample_spec.options`, e.g.
      sampler, num_steps, guidance_scale); None means the config's.

  Returns:
    {"real": scores, "generated": scores} as `evaluate_generations`, plus
    "seconds" (generation and scoring time) and "options" (those set).
  """
  if num_examples is not None and num_examples < motion_metrics.EVAL_BATCH_SIZE:
    raise EvaluationError(
      f"num_examples: expected at least {motion_metrics.EVAL_BATCH_SIZE} "
      f"test captions (one R-precision batch), found {num_examples}"
    )
  config = load_run_config(run_dir)
  task_cls = task_class(config)
  if not issubclass(task_cls, MotionGenerativeTask):
    raise EvaluationError(
      f"--run: expected a text-to-motion run (t2m_mdm, t2m_gpt, t2m_vae), "
      f"found a {config.task!r} run in {run_dir!r}"
    )
  options = check_score_options(task_cls, config.task, options)
  evaluator = load_evaluator(evaluator_dir)
  task = task_cls(config)
  params = restore_ema_params(task, run_dir)
  start = time.monotonic()
  scores = evaluate_text_to_motion(
    task, params, evaluator, jax.random.PRNGKey(seed), num_examples=num_examples, **options
  )
  scores["seconds"] = round(time.monotonic() - start, 1)
  scores["options"] = options
  _LOG.info("scored %s with %s in %.1f s", run_dir, evaluator_dir, scores["seconds"])
  return scores
