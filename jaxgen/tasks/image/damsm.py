"""AttnGAN's text–image matching model (DAMSM) pretrained on captioned images, task `damsm`.

The AttnGAN generator (`jaxgen.tasks.image.attngan`) is trained against a
frozen DAMSM, and the StackGAN++ task (`jaxgen.tasks.image.stackgan`)
conditions on its sentence embedding; both name a run of this task with
`damsm.workdir`. The model is `jaxgen.models.damsm` (`config.damsm`): the
bidirectional-LSTM text encoder and the image encoder on the small trainable
CNN backbone (`damsm.backbone="cnn"`; the reference's frozen Inception-v3
needs pretrained weights that nothing downloads here, so it is refused).
Params {"text_encoder", "image_encoder"}, batches {"image" uint8,
"text_tokens", "text_mask" int32} of `data.kind`'s captioned images, drawn as
the text-to-image tasks draw them.

Loss (AttnGAN's `pretrain_DAMSM.py`): words loss + sentence loss, each a batch
cross-entropy in both directions with the smoothing factors γ₁, γ₂, γ₃ of
`config.loss`. The reference masks same-class pairs (CUB's bird classes) out
of each row's competitors; the shapes have no classes beyond their caption,
so with `loss.mask_same_captions` a pair whose captions are identical is not
counted as a negative (`caption_classes`).

Captions reach the text encoder as words only: the caption tokenizer's
[BOS] and [EOS] are stripped (`caption_words`), as the reference feeds the
words of a caption.

`evaluate` reports the held-out loss and top-1 retrieval accuracy within
groups of `eval.group_size` images and captions, by sentence cosine and by
the word-level score; `preview` captions held-out images with the caption the
sentence score retrieves for each.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import shapes
from jaxgen.data.tokenizer import build_caption_tokenizer
from jaxgen.models import damsm
from jaxgen.render.grid import make_grid
from jaxgen.tasks.image.captioned_data import (
  abstract_captioned_batch,
  captioned_shapes_arrays,
  data_kind,
  make_captioned_split,
  scene_caption_words,
)
from jaxgen.tasks.registry import load_run_of
from jaxgen.training.task import Task

MIN_BATCH = 2  # a batch cross-entropy (and a GAN's BatchNorm) needs another example


class DAMSMTaskConfigError(ValueError):
  """A `damsm`, `loss`, `data` or `eval` setting the DAMSM task (or a task on its run) cannot use."""


class CaptionFeatures(NamedTuple):
  """The frozen text encoder's view of a caption batch."""

  words: jax.Array  # (B, T, D), zero at pads
  sentence: jax.Array  # (B, D)
  word_mask: jax.Array  # (B, T) bool, true for real words


def to_model_range(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def caption_words(tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[BOS] words [EOS] [PAD]… (B, L) -> (words then pads (B, L - 1), number of words (B,)).

  The caption tokenizer wraps every caption in [BOS] … [EOS]; the reference's
  text encoder reads the words alone.
  """
  lengths = jnp.sum(mask.astype(jnp.int32), axis=-1) - 2
  words = tokens[:, 1:]
  keep = jnp.arange(words.shape[1])[None, :] < lengths[:, None]
  return jnp.where(keep, words, 0), lengths


def caption_classes(tokens: jax.Array) -> jax.Array:
  """(B,) int32: each caption's class is the first row of the batch with the same tokens."""
  same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)
  return jnp.argmax(same, axis=1).astype(jnp.int32)


def word_scores(
  regions: jax.Array, words: jax.Array, word_mask: jax.Array, gamma1: float, gamma2: float
) -> jax.Array:
  """R(Q, D) of every (image, caption) pair (Eq. 10 of AttnGAN): (images, captions)."""
  context, _ = damsm.word_region_attention(words, regions, word_mask, gamma1)
  relevance = jnp.exp(gamma2 * damsm.cosine(words[:, None], context))
  return jnp.log(jnp.sum(jnp.where(word_mask[:, None, :], relevance, 0.0), axis=-1)).T


def sentence_scores(codes: jax.Array, sentences: jax.Array) -> jax.Array:
  """cos(image code, sentence) of every (image, caption) pair: (images, captions)."""
  return damsm.cosine(codes[:, None, :], sentences[None, :, :])


def retrieval_hits(scores: np.ndarray, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(image→text, text→image) top-1 hits of a square score matrix; an identical caption counts."""
  captions = np.asarray(captions)
  image_to_text = captions[np.argmax(scores, axis=1)] == captions
  text_to_image = captions[np.argmax(scores, axis=0)] == captions
  return image_to_text, text_to_image


def check_damsm_config(config: ml_collections.ConfigDict, vocab_size: int) -> damsm.DAMSMConfig:
  """The model config of `config.damsm` for a tokenizer's vocabulary; named errors first."""
  fields = dict(config.damsm.to_dict(), vocab_size=vocab_size)
  if "cnn_channels" in fields:
    fields["cnn_channels"] = tuple(fields["cnn_channels"])
  try:
    model = damsm.DAMSMConfig(**fields)
  except TypeError as e:
    raise DAMSMTaskConfigError(f"damsm: {e}") from e
  if not damsm.trainable_backbone(model):
    raise DAMSMTaskConfigError(
      f"damsm.backbone: expected 'cnn' (trained with the heads), found {model.backbone!r}: the "
      "reference's Inception-v3 is frozen and pretrained, and this task loads no weights"
    )
  factor = 2 ** len(model.cnn_channels)
  resolution = config.data.resolution
  if resolution % factor:
    raise DAMSMTaskConfigError(
      f"data.resolution: expected a multiple of {factor} (one stride-2 stage per "
      f"damsm.cnn_channels entry, {model.cnn_channels}), found {resolution}"
    )
  return model


def check_loss_config(loss: ml_collections.ConfigDict) -> None:
  for key in ("gamma1", "gamma2", "gamma3"):
    value = loss[key]
    if not (isinstance(value, (int, float)) and value > 0):
      raise DAMSMTaskConfigError(f"loss.{key}: expected a number > 0, found {value!r}")


def check_min_batch(batch: Mapping[str, np.ndarray], key: str = "image") -> None:
  if len(batch[key]) < MIN_BATCH:
    raise DAMSMTaskConfigError(
      f"train.batch_size: expected at least {MIN_BATCH} examples per batch (the losses compare "
      f"examples of one batch), found a batch of {len(batch[key])}"
    )


class DAMSMTask(Task):
  """The `damsm` task (see the module docstring). Params {"text_encoder", "image_encoder"}."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.resolution = config.data.resolution
    self.max_text_length = config.text.max_length
    kind = data_kind(config.data)
    self.tokenizer = build_caption_tokenizer(scene_caption_words() if kind == "scenes" else None)
    self.model_config = check_damsm_config(config, self.tokenizer.vocab_size)
    check_loss_config(config.loss)
    self.text_encoder = damsm.DAMSMTextEncoder(self.model_config)
    self.image_encoder = damsm.DAMSMImageEncoder(self.model_config)

  @property
  def embed_dim(self) -> int:
    """Width of the word, sentence, region and image features."""
    return self.model_config.embed_dim

  # -- data --------------------------------------------------------------

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    tokens, mask = self.tokenizer.encode(list(captions), self.max_text_length)
    return tokens.astype(np.int32), mask.astype(np.int32)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    return captioned_shapes_arrays(self.config.data, self.tokenize)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return abstract_captioned_batch(batch_size, self.resolution, self.max_text_length)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    shapes.check_image_batch(batch["image"], self.resolution)
    check_min_batch(batch)

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out captioned images (combinations never seen in training)."""
    return make_captioned_split(self.config.data, "test", num_examples, self.config.data.seed + 1)

  # -- model ---------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    text_rng, image_rng = jax.random.split(rng)
    words, lengths = caption_words(batch["text_tokens"], batch["text_mask"])
    images = jnp.zeros(batch["image"].shape, jnp.float32)
    return {
      "text_encoder": self.text_encoder.init(text_rng, words, lengths)["params"],
      "image_encoder": self.image_encoder.init(image_rng, images)["params"],
    }

  def encode_text(
    self, params, tokens: jax.Array, mask: jax.Array, *, dropout_rng: jax.Array | None = None
  ) -> CaptionFeatures:
    """Word and sentence features of tokenized captions; embedding dropout when given its rng."""
    words, lengths = caption_words(tokens, mask)
    train = dropout_rng is not None
    word_features, sentence = self.text_encoder.apply(
      {"params": params["text_encoder"]},
      words,
      lengths,
      train=train,
      rngs={"dropout": dropout_rng} if train else None,
    )
    word_mask = jnp.arange(words.shape[1])[None, :] < lengths[:, None]
    return CaptionFeatures(word_features, sentence, word_mask)

  def encode_images(self, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(regions (B, R, D), image code (B, D)) of images in [-1, 1]."""
    return self.image_encoder.apply({"params": params["image_encoder"]}, images)

  def matching_loss(
    self, regions: jax.Array, codes: jax.Array, text: CaptionFeatures, class_ids: jax.Array | None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """words loss + sentence loss (both directions each) with this config's γ₁, γ₂, γ₃."""
    g = self.config.loss
    w0, w1, _ = damsm.words_loss(
      regions,
      text.words,
      text.word_mask,
      class_ids=class_ids,
      gamma1=g.gamma1,
      gamma2=g.gamma2,
      gamma3=g.gamma3,
    )
    s0, s1 = damsm.sentence_loss(codes, text.sentence, class_ids=class_ids, gamma3=g.gamma3)
    return w0 + w1 + s0 + s1, {"words_loss": w0 + w1, "sentence_loss": s0 + s1}

  def classes(self, tokens: jax.Array) -> jax.Array | None:
    """Caption classes for the losses' same-class masking, or None when it is off."""
    return caption_classes(tokens) if self.config.loss.mask_same_captions else None

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    text = self.encode_text(params, batch["text_tokens"], batch["text_mask"], dropout_rng=rng)
    regions, codes = self.encode_images(params, to_model_range(batch["image"]))
    loss, metrics = self.matching_loss(regions, codes, text, self.classes(batch["text_tokens"]))
    return loss, dict(metrics, damsm_loss=loss)

  # -- judging and pictures ------------------------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def scores(self, params, images: jax.Array, tokens: jax.Array, mask: jax.Array):
    """(sentence scores, word scores, matching loss) of a group: scores are (images, captions)."""
    text = self.encode_text(params, tokens, mask)
    regions, codes = self.encode_images(params, to_model_range(images))
    g = self.config.loss
    loss, _ = self.matching_loss(regions, codes, text, self.classes(tokens))
    words = word_scores(regions, text.words, text.word_mask, g.gamma1, g.gamma2)
    return sentence_scores(codes, text.sentence), words, loss

  def evaluate(self, params, num_examples: int | None = None) -> dict[str, float]:
    """Held-out matching loss and top-1 retrieval accuracy within groups of `eval.group_size`.

    Keys: `loss`, `{sentence,words}_{image_to_text,text_to_image}` (an identical
    caption counts as a hit) and `chance` (1 / group size).
    """
    group = self.config.eval.group_size
    num = num_examples or self.config.eval.num_examples
    if num < group or group < MIN_BATCH:
      raise DAMSMTaskConfigError(
        f"eval.group_size: expected {MIN_BATCH} <= group size <= the number of examples "
        f"({num}), found {group}"
      )
    data = self.eval_split(num - num % group)
    tokens, mask = self.tokenize(data["caption"])
    hits: dict[str, list[np.ndarray]] = {}
    losses = []
    for start in range(0, len(tokens), group):
      part = slice(start, start + group)
      by_sentence, by_words, loss = self.scores(
        params, jnp.asarray(data["image"][part]), jnp.asarray(tokens[part]), jnp.asarray(mask[part])
      )
      losses.append(float(loss))
      for name, scores in (("sentence", by_sentence), ("words", by_words)):
        i2t, t2i = retrieval_hits(np.asarray(scores), data["caption"][part])
        hits.setdefault(f"{name}_image_to_text", []).append(i2t)
        hits.setdefault(f"{name}_text_to_image", []).append(t2i)
    metrics = {k: float(np.mean(np.concatenate(v))) for k, v in hits.items()}
    return dict(metrics, loss=float(np.mean(losses)), chance=1.0 / group)

  def preview(self, params, rng: jax.Array, num: int = 16) -> np.ndarray:
    """Held-out images, each captioned with the caption of the group its sentence score picks."""
    del rng
    data = self.eval_split(num)
    tokens, mask = self.tokenize(data["caption"])
    by_sentence, _, _ = self.scores(params, jnp.asarray(data["image"]), tokens, mask)
    picked = np.asarray(data["caption"])[np.argmax(np.asarray(by_sentence), axis=1)]
    return make_grid(data["image"], [str(c) for c in picked], scale=3, ncols=8)


def load_damsm_run(workdir: str) -> tuple[DAMSMTask, Any]:
  """(the `damsm` task, its params) of a run directory, with a named error for others."""
  return load_run_of(DAMSMTask, workdir, flag="damsm.workdir")


def check_same_images(
  damsm_data: ml_collections.ConfigDict, data: ml_collections.ConfigDict, workdir: str
) -> None:
  """Named error unless `data` has the DAMSM run's image kind and resolution."""
  for key, found, expected in (
    ("kind", data_kind(data), data_kind(damsm_data)),
    ("resolution", data.resolution, damsm_data.resolution),
  ):
    if found != expected:
      raise DAMSMTaskConfigError(
        f"data.{key}: the DAMSM in {workdir!r} was trained on {expected!r}, found {found!r}"
      )
