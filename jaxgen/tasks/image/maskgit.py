"""Masked parallel decoding over VQGAN image tokens (MaskGIT style), task `maskgit`.

One of the token priors on `image_tokens.TokenPriorTask` (over the codes
of a trained `vqgan` run, named by `vq.workdir`). The model is
`jaxgen.models.maskgit.MaskGITTransformer` in its caption-conditioned
layout: the caption's tokens (the shapes tokenizer's ids, padding masked
out of attention) are a prefix of the image-token stream that every image
token attends to in every layer.

Training (`masked_token_loss`): per example a mask ratio γ(r), r ~ U(0, 1),
under `loss.mask_schedule` (the paper's cosine); the hidden codes are
predicted at once with label-smoothed cross-entropy on the masked positions
only. With probability `loss.caption_dropout` an example's caption is
replaced by the model's learned null caption, so one network is both the
conditional and the unconditional model that classifier-free guidance
extrapolates between.

Sampling (`samplers = ("maskgit",)`): from an all-masked grid, `num_steps`
= T steps of confidence-based re-masking (`diffusion.masked_decoding.
parallel_decode`, one `lax.scan`): predict every token, keep the most
confident (log-probability plus Gumbel noise of `sample.choice_temperature`
annealed linearly to 0), hide the rest again, fewer each step as γ falls to
0. T is a sampling option (the comparison table runs T = 4, 8, 16); each T
compiles its own program. Guidance extrapolates the logits
uncond + s·(cond − uncond) with both halves in one batched call inside the
scan; a run trained without caption dropout has no trained null caption and
samples at s = 1 only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import ml_collections

from jaxgen.diffusion import masked_decoding
from jaxgen.models import maskgit as maskgit_model
from jaxgen.models.maskgit import (
  MaskGITConfig,
  MaskGITConfigError,
  MaskGITTransformer,
  masked_token_loss,
)
from jaxgen.tasks.image.image_tokens import TokenPriorTask

SAMPLER = "maskgit"
# The `maskgit.*` keys a config may set; the vocabulary and sequence sizes come from the
# VQGAN run (codebook, token grid) and the caption tokenizer (`text.max_length`).
MODEL_KEYS = (
  "width",
  "num_layers",
  "num_heads",
  "mlp_dim",
  "dropout",
  "layer_norm_eps",
  "initializer_range",
)


class MaskGITTaskConfigError(ValueError):
  """A `maskgit` config field out of range (model sizes, masking, loss, sampling)."""


def _check_range(key: str, value, low: float, high: float, *, high_open: bool = False) -> None:
  """Named error unless low <= value <= high (or < high when `high_open`)."""
  inside = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value
  inside = inside and (value < high if high_open else value <= high)
  if not inside:
    bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
    raise MaskGITTaskConfigError(f"{key}: expected a number in {bound}, found {value!r}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Named errors for the task's own fields, before any run is loaded or anything compiles."""
  unknown = sorted(set(config.maskgit.keys()) - set(MODEL_KEYS))
  if unknown:
    raise MaskGITTaskConfigError(
      f"maskgit: expected keys among {MODEL_KEYS} (sizes of the vocabulary and the sequence "
      f"come from the VQGAN run and text.max_length), found {unknown}"
    )
  l, s = config.loss, config.sample
  if l.mask_schedule not in masked_decoding.SCHEDULES:
    raise MaskGITTaskConfigError(
      f"loss.mask_schedule: expected one of {sorted(masked_decoding.SCHEDULES)}, "
      f"found {l.mask_schedule!r}"
    )
  _check_range("loss.caption_dropout", l.caption_dropout, 0.0, 1.0)
  _check_range("loss.label_smoothing", l.label_smoothing, 0.0, 1.0, high_open=True)
  _check_range("sample.choice_temperature", s.choice_temperature, 0.0, math.inf)
  _check_range("sample.temperature", s.temperature, 0.0, math.inf)


def maskgit_config(
  section: ml_collections.ConfigDict,
  num_codes: int,
  num_image_tokens: int,
  caption_vocab_size: int,
  caption_length: int,
) -> MaskGITConfig:
  """The caption-conditioned `MaskGITConfig` of a `maskgit.*` section; errors name the key."""
  try:
    return MaskGITConfig(
      codebook_size=num_codes,
      num_image_tokens=num_image_tokens,
      caption_vocab_size=caption_vocab_size,
      caption_length=caption_length,
      **section.to_dict(),
    )
  except MaskGITConfigError as e:
    raise MaskGITTaskConfigError(f"maskgit.{e}") from e


class MaskGITTask(TokenPriorTask):
  """The `maskgit` task: a caption-conditioned MaskGIT over a `vqgan` run's codes."""

  samplers = (SAMPLER,)
  guidance_setting = "loss.caption_dropout"

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    super().__init__(config)
    h, w = self.token_grid
    self.model_config = maskgit_config(
      config.maskgit, self.num_codes, h * w, self.tokenizer.vocab_size, self.max_text_length
    )
    self.model = MaskGITTransformer(self.model_config)

  @property
  def guided(self) -> bool:
    """Whether training dropped captions, so the null caption guidance needs is trained."""
    return self.config.loss.caption_dropout > 0

  # -- training ------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    variables = self.model.init(
      rng, batch["codes"], caption=batch["text_tokens"], caption_mask=batch["text_mask"]
    )
    return {"maskgit": variables["params"]}

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    """(label-smoothed CE on the masked codes, {"masked_accuracy", "mask_ratio"})."""
    l = self.config.loss
    loss, metrics = masked_token_loss(
      self.model,
      {"params": params["maskgit"]},
      batch["codes"],
      rng,
      caption=batch["text_tokens"],
      caption_mask=batch["text_mask"],
      caption_dropout=l.caption_dropout,
      label_smoothing=l.label_smoothing,
      schedule=l.mask_schedule,
    )
    return loss, {
      "masked_accuracy": metrics["masked_accuracy"],
      "mask_ratio": metrics["masked_fraction"],
    }

  # -- sampling ------------------------------------------------------------

  def code_logits_fn(self, params, tokens: jax.Array, mask: jax.Array, guidance_scale):
    """`codes (B, N) -> logits (B, N, K)` over the K codes, guided when the run allows it
    (caption dropout in training: uncond + s·(cond − uncond) against the learned null caption)."""
    return maskgit_model.code_logits_fn(
      self.model,
      {"params": params["maskgit"]},
      caption=tokens,
      caption_mask=mask,
      guidance_scale=guidance_scale if self.guided else None,
    )

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
    """Codes (B, h, w) int32 by `num_steps` parallel-decoding steps: one scan."""
    del sampler  # the one sampler, checked by `sampling_options`
    c, s = self.model_config, self.config.sample
    codes = masked_decoding.parallel_decode(
      self.code_logits_fn(params, tokens, mask, guidance_scale),
      rng,
      tokens.shape[0],
      c.num_image_tokens,
      num_steps,
      c.mask_id,
      s.choice_temperature,
      self.config.loss.mask_schedule,  # the reference decodes on the schedule it trains with
      s.temperature,
    )
    return codes.reshape(tokens.shape[0], *self.token_grid)
