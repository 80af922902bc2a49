"""Autoregressive text-to-image over VQGAN codes (DALL·E / CogView style), task `dalle`.

The prior is `jaxgen.models.dalle.DalleTransformer`: one decoder-only
transformer over [caption tokens ; image codes] of a trained `vqgan` run
(`vq.workdir`, loaded by `image_tokens.TokenPriorTask`):

  caption stream  the `CaptionTokenizer` ids ([BOS] words [EOS] [PAD]...) of
                  `text.max_length` slots; the text vocabulary is the
                  tokenizer's and its [PAD] id is the model's pad, which the
                  model swaps for DALL·E's per-position pad tokens (slots where
                  `text_mask` is 0 are padded too, so the mask is honoured);
  image stream    the (h, w) codes, row-major, after the image BOS.

Training: DALL·E's loss (`dalle_loss`: 1/8 text cross-entropy over real text
targets + 7/8 image cross-entropy), each caption dropped to the all-pad empty
caption with probability `dalle.caption_dropout`, so that classifier-free
guidance has an unconditional model to push away from. Metrics: text_loss,
image_loss and image_accuracy (teacher-forced arg-max agreement).

Sampling is ancestral (`samplers = ("ancestral",)`): one code per step, drawn
from the tempered, top-k/top-p filtered logits (`sample.temperature`,
`sample.top_k`, `sample.top_p`, read once when the task is built), the text
prefix cached once and the h·w steps in one `lax.scan`. So `num_steps` is no
free choice: it is h·w, and `sample.num_steps` / `generate(num_steps=)` must
be None or exactly that (a named error otherwise), which keeps the comparison
table's "steps" column honest next to MaskGIT's T. A run trained with caption
dropout always samples the conditional and the empty-caption streams as one
doubled batch and mixes c + (s - 1)·(c - u) (s = 1 is exactly the conditional
model, at twice the cost: the guidance scale is traced, so one program serves
every scale); a run trained without it has no empty caption, and any scale
but 1 is refused.

Reranking (DALL·E's CLIP reranking): `generate_reranked` draws
`num_candidates` samples per caption — the captions repeated as one batch,
one compiled program — scores them with `score_fn(images uint8 (N, H, W, 3),
captions) -> (N,)` and keeps each caption's best. `rerank_scorer(workdir)`
builds that scorer from a contrastive `clip` run trained on the same data
(`jaxgen.tasks.image.clip`, imported only when a run reranks). With
`rerank.workdir` set, `generate` (and so `evaluate`, `preview` and
`jaxgen sample`) reranks `rerank.num_candidates` samples per caption.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.models import dalle as dalle_model
from jaxgen.models import token_sampling
from jaxgen.tasks.image.captioned_images import (
  check_batch_size,
  conditions_captions,
  sample_in_chunks,
)
from jaxgen.tasks.image.image_tokens import TokenPriorTask
from jaxgen.tasks.registry import load_run_of
from jaxgen.training.task import SampleSpec

# (uint8 images (N, H, W, 3), their N captions) -> (N,) scores, higher is better.
ScoreFn = Callable[[np.ndarray, list[str]], np.ndarray]

SAMPLER = "ancestral"
# DalleConfig fields that the task derives (tokenizer, VQGAN run, text.max_length).
DERIVED_FIELDS = (
  "text_vocab",
  "text_length",
  "text_pad_id",
  "num_image_codes",
  "image_rows",
  "image_cols",
)


# `generate` option -> its default's key in the `sample` section.
SAMPLE_KEYS = {"sampler": "sampler", "num_steps": "num_steps", "guidance_scale": "guidance"}


class DalleTaskConfigError(ValueError):
  """A `dalle`, `text`, `sample` or `rerank` config field out of its range."""


class RerankError(ValueError):
  """Reranking asked for without a scorer, with a bad candidate count, or a scorer's bad output."""


def dalle_config(
  section: ml_collections.ConfigDict,
  *,
  text_vocab: int,
  text_length: int,
  text_pad_id: int,
  num_image_codes: int,
  token_grid: tuple[int, int],
) -> dalle_model.DalleConfig:
  """The model config: the `dalle` section's hyper-parameters plus the derived sizes, checked."""
  fields = section.to_dict()
  allowed = {f.name for f in dataclasses.fields(dalle_model.DalleConfig)} - set(DERIVED_FIELDS)
  derived = sorted(set(fields) & set(DERIVED_FIELDS))
  if derived:
    raise DalleTaskConfigError(
      f"dalle: {derived} are set from the tokenizer, text.max_length and the VQGAN run; "
      "remove them from the dalle section"
    )
  unknown = sorted(set(fields) - allowed)
  if unknown:
    raise DalleTaskConfigError(
      f"dalle: unknown fields {unknown}; expected some of {sorted(allowed)}"
    )
  if text_length < 2:
    raise DalleTaskConfigError(
      f"text.max_length: expected >= 2 (a caption of [BOS] and one more token), found {text_length}"
    )
  rows, cols = token_grid
  try:
    return dalle_model.DalleConfig(
      text_vocab=text_vocab,
      text_length=text_length,
      text_pad_id=text_pad_id,
      num_image_codes=num_image_codes,
      image_rows=rows,
      image_cols=cols,
      **fields,
    )
  except dalle_model.DalleConfigError as e:
    raise DalleTaskConfigError(f"dalle.{e}") from e


def token_options(sample: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(temperature, top_k, top_p) of `sample` as the sampler's arrays, checked."""
  try:
    return token_sampling.sampling_options(
      sample.temperature, sample.get("top_k"), sample.get("top_p")
    )
  except SamplingOptionError as e:
    raise DalleTaskConfigError(f"sample.{e}") from e


def check_num_candidates(num_candidates: Any, name: str = "num_candidates") -> int:
  """`num_candidates` as an int >= 1 (bools are not), or a named error."""
  if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
    raise RerankError(f"{name}: expected an integer >= 1, found {num_candidates!r}")
  return num_candidates


def caption_stream(tokens: jax.Array, mask: jax.Array, pad_id: int) -> jax.Array:
  """(B, L) int32 text ids for the model: the tokens, with slots outside `mask` set to [PAD]."""
  return jnp.where(mask > 0, tokens, pad_id).astype(jnp.int32)


def image_accuracy(image_logits: jax.Array, codes: jax.Array) -> jax.Array:
  """Fraction of cells whose arg-max logit is the true code (teacher-forced)."""
  targets = codes.reshape(codes.shape[0], -1)
  return jnp.mean(jnp.argmax(image_logits, axis=-1) == targets)


def check_scores(scores: Any, count: int) -> np.ndarray:
  """A scorer's output as float64 (count,), with named errors for other shapes or non-finite values."""
  scores = np.asarray(scores, np.float64)
  if scores.shape != (count,):
    raise RerankError(
      f"score_fn: expected ({count},) scores, one per candidate, found {scores.shape}"
    )
  if not np.all(np.isfinite(scores)):
    raise RerankError(f"score_fn: expected finite scores, found {scores[~np.isfinite(scores)][:5]}")
  return scores


def keep_best(
  candidates: np.ndarray, captions: list[str], num_candidates: int, score_fn: ScoreFn
) -> dict[str, np.ndarray]:
  """Scores N·K `candidates` (K consecutive rows per caption) and keeps each caption's best.

  Returns {"image": (N, ...) the kept rows, "score": (N,) their scores,
  "candidate_scores": (N, K), "chosen": (N,) int32 index of the kept one (the first on ties)}.
  """
  n, k = len(captions), num_candidates
  repeated = [caption for caption in captions for _ in range(k)]
  scores = check_scores(score_fn(candidates, repeated), n * k).reshape(n, k)
  chosen = np.argmax(scores, axis=1)
  rows = np.arange(n)
  return dict(
    image=candidates.reshape(n, k, *candidates.shape[1:])[rows, chosen],
    score=scores[rows, chosen],
    candidate_scores=scores,
    chosen=chosen.astype(np.int32),
  )


def rerank_scorer(workdir: str) -> ScoreFn:
  """`score_fn` of a `clip` run: the cosine similarity of each image with its caption."""
  # Lazily: only a run that reranks needs the contrastive model's code.
  from jaxgen.tasks.image.clip import ClipTask  # pylint: disable=g-import-not-at-top

  task, params = load_run_of(ClipTask, workdir, flag="rerank.workdir")
  return functools.partial(task.similarity, params)


class DalleTask(TokenPriorTask):
  """The `dalle` task (see module docstring)."""

  dependent_runs = ("vq.workdir", "rerank.workdir")
  samplers = (SAMPLER,)
  guidance_setting = "dalle.caption_dropout"
  # One sampler and a fixed step count: only the guidance scale is a command-line choice.
  sample_spec = SampleSpec("grid.png", (".png",), ("guidance_scale",))
  rerank_scorer = staticmethod(rerank_scorer)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.model_config = dalle_config(
      config.dalle,
      text_vocab=self.tokenizer.vocab_size,
      text_length=self.max_text_length,
      text_pad_id=self.tokenizer.pad_id,
      num_image_codes=self.num_codes,
      token_grid=self.token_grid,
    )
    self.model = dalle_model.DalleTransformer(self.model_config)
    # Read once: the compiled sampler bakes them in, so later config edits must not apply.
    self.token_options = token_options(config.sample)
    check_num_candidates(config.rerank.num_candidates, "rerank.num_candidates")
    try:  # the config's defaults, named before anything compiles
      self.sampling_options(None, None, None)
    except SamplingOptionError as e:
      key = SAMPLE_KEYS[e.option]
      raise DalleTaskConfigError(f"sample.{key}: {str(e).removeprefix(e.option + ': ')}") from e

  @property
  def guided(self) -> bool:
    """With caption dropout the empty caption is learned and every sample is guided."""
    return self.model_config.caption_dropout > 0

  # -- model ---------------------------------------------------------------

  def text_stream(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    return caption_stream(batch["text_tokens"], batch["text_mask"], self.tokenizer.pad_id)

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    return {"dalle": self.model.init(rng, self.text_stream(batch), batch["codes"])["params"]}

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    """`dalle_model.dalle_loss`, written out so that the image logits also give the accuracy."""
    drop_rng, dropout_rng = jax.random.split(rng)
    text = dalle_model.drop_captions(self.model_config, self.text_stream(batch), drop_rng)
    text_logits, image_logits = self.model.apply(
      {"params": params["dalle"]},
      text,
      batch["codes"],
      deterministic=False,
      rngs={"dropout": dropout_rng},
    )
    loss, metrics = dalle_model.token_losses(
      self.model_config, text, batch["codes"], text_logits, image_logits
    )
    return loss, dict(metrics, image_accuracy=image_accuracy(image_logits, batch["codes"]))

  # -- sampling ----------------------------------------------------------

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    """Options with None replaced by `sample.*` (num_steps: h·w), checked (see module docstring)."""
    steps = self.model_config.image_length
    if num_steps is None:
      num_steps = self.config.sample.get("num_steps")
    num_steps = steps if num_steps is None else num_steps
    sampler, num_steps, guidance_scale = super().sampling_options(
      sampler, num_steps, guidance_scale
    )
    if num_steps != steps:
      rows, cols = self.token_grid
      raise SamplingOptionError(
        "num_steps",
        f"the autoregressive sampler draws one code per step: expected {steps} "
        f"(the {rows}x{cols} token grid) or None, found {num_steps}",
      )
    return sampler, num_steps, guidance_scale

  def sample_codes(
    self,
    params,
    tokens: jax.Array,
    mask: jax.Array,
    rng: jax.Array,
    *,
    sampler: str,
    num_steps: int,
    guidance_scale: jax.Array,
  ) -> jax.Array:
    """Codes (B, h, w) int32: the model's KV-cache sampler, one `lax.scan` over the h·w cells."""
    del sampler, num_steps  # ancestral, one step per cell: checked by `sampling_options`
    options = self.token_options + (jnp.asarray(guidance_scale, jnp.float32),)
    text = caption_stream(tokens, mask, self.tokenizer.pad_id)
    # The model's public `sample_image_tokens` checks the guidance scale on the host; here
    # it is traced (checked by `sampling_options`), so its checked-options program is used.
    return dalle_model.sample_scan(
      self.model, {"params": params["dalle"]}, text, rng, options, self.guided
    )

  # -- reranking -----------------------------------------------------------

  @functools.cached_property
  def reranker(self) -> ScoreFn:
    """`rerank_scorer` of `rerank.workdir`, loaded on first use."""
    workdir = self.config.rerank.workdir
    if not workdir:
      raise RerankError(
        "rerank.workdir: reranking needs the directory of a clip run trained on the same "
        f"data, found {workdir!r}"
      )
    return rerank_scorer(workdir)

  def generate(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    sampler: str | None = None,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    rerank: bool | None = None,
  ) -> dict[str, np.ndarray]:
    """{"image": uint8 (N, H, W, 3)} for `conditions["caption"]`.

    `rerank` None reranks exactly when `rerank.workdir` is set: then the best of
    `rerank.num_candidates` samples per caption by that run's CLIP score, with
    "score", "candidate_scores" and "chosen" beside the images (see
    `generate_reranked`, which also explains `batch_size` there).
    """
    options = dict(sampler=sampler, num_steps=num_steps, guidance_scale=guidance_scale)
    if rerank is None:
      rerank = bool(self.config.rerank.workdir)
    if not rerank:
      return super().generate(params, conditions, rng, batch_size=batch_size, **options)
    self.sampling_options(sampler, num_steps, guidance_scale)  # before the scorer loads
    return self.generate_reranked(
      params,
      conditions,
      rng,
      num_candidates=self.config.rerank.num_candidates,
      score_fn=self.reranker,
      batch_size=batch_size,
      **options,
    )

  def generate_reranked(
    self,
    params,
    conditions: Mapping[str, Any],
    rng: jax.Array,
    *,
    num_candidates: int,
    score_fn: ScoreFn,
    sampler: str | None = None,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
  ) -> dict[str, np.ndarray]:
    """The best of `num_candidates` samples per caption by `score_fn`.

    Each caption is repeated `num_candidates` times and the repeats are sampled
    as one batch (chunks of `batch_size` captions — None: as many as make
    `generate_batch_size` rows — so every chunk shares one compiled program);
    `score_fn(images uint8 (N·K, H, W, 3), captions (N·K,))` scores every
    candidate, higher better, and each caption keeps its highest (`keep_best`:
    {"image": uint8 (N, H, W, 3), "score", "candidate_scores", "chosen"}).
    """
    captions = conditions_captions(conditions)
    k = check_num_candidates(num_candidates)
    sampler, num_steps, guidance_scale = self.sampling_options(sampler, num_steps, guidance_scale)
    batch_size = max(1, self.generate_batch_size // k) if batch_size is None else batch_size
    check_batch_size(batch_size)
    tokens, mask = self.tokenize(captions)
    sample_fn = self.caption_sampler(params, sampler, num_steps, guidance_scale)
    candidates = sample_in_chunks(
      sample_fn, np.repeat(tokens, k, axis=0), np.repeat(mask, k, axis=0), rng, batch_size * k
    )
    return keep_best(candidates, captions, k, score_fn)
