"""CLIP trained contrastively on the captioned images: task `clip`.

jaxgen's CLIP dual encoder (`jaxgen.models.clip.CLIPModel`: a small ViT over
4×4 patches and a causal text transformer, each projected to one joint
embedding) trained from scratch on the same captioned images the image tasks
draw (`data.kind` shapes or scenes at `data.resolution`), with the same word
tokenizer. It is the text–image judge the generators are ranked by: the
DALL·E-style prior reranks its samples with `similarity`, and the video
metric CLIPSIM averages it over frames.

The text tower pools the state of the end-of-text token. jaxgen's caption
tokenizer frames every caption as [BOS] words [EOS] [PAD]... with
[BOS] = 2 and [EOS] = 3, so the tower's `eos_token_id` is set to the
tokenizer's [EOS] id: transformers' legacy rule for `eos_token_id == 2`
(pool at the largest id) would pick the caption's largest word instead.

Loss: CLIP's symmetric InfoNCE over the batch's image–caption similarity
matrix, scaled by the learned temperature exp(logit_scale) (initialised at
1/0.07, clamped at 100). The built-in data repeat their captions (292
training combinations of the shapes), so a batch often holds one caption
twice; with `loss.same_caption_positives` every image of the same caption
counts as a positive (the target spreads over them) instead of a false
negative. With distinct captions the loss is CLIP's exactly.

Evaluation (`evaluate`) on held-out combinations: image→text and
text→image top-1 retrieval among batches of `eval.retrieval_batch` (32)
held-out pairs, and the judge-aware test — does an image's caption score
higher than the same caption with one attribute (colour, position, size,
shape) changed to each other value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxgen.data import shapes
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.models.clip import CLIPConfig, CLIPModel, CLIPVisionConfig, clip_loss, l2_normalize
from jaxgen.models.clip_text import CLIPTextConfig
from jaxgen.tasks.image.captioned_data import (
  abstract_captioned_batch,
  data_kind,
  make_captioned_split,
)
from jaxgen.tasks.image.image_tokens import caption_tokenizer, tokenize_captions
from jaxgen.training.task import Task, check_prompts

PREVIEW_PAIRS = 8  # images × captions of the preview's similarity matrix


class ClipConfigError(ValueError):
  """A `clip` config field is missing, unknown or out of range."""


class ClipInputError(ValueError):
  """Images or captions handed to the CLIP task do not fit it."""


# -- model and loss --------------------------------------------------------------


def _tower_config(cls, section: ml_collections.ConfigDict, name: str, fixed: Mapping):
  """`cls(**section, **fixed)` with named errors for unknown fields or fields the task sets."""
  fields = dict(section.to_dict())
  allowed = {f.name for f in dataclasses.fields(cls)} - set(fixed)
  for key in fields:
    if key in fixed:
      raise ClipConfigError(
        f"clip.{name}.{key}: set by the task ({fixed[key]!r} for this data and tokenizer); "
        "remove it from the config"
      )
    if key not in allowed:
      raise ClipConfigError(f"clip.{name}.{key}: unknown field; expected some of {sorted(allowed)}")
  try:
    return cls(**fields, **fixed)
  except ValueError as e:
    raise ClipConfigError(f"clip.{name}: {e}") from e


def clip_model_config(config: ml_collections.ConfigDict, tokenizer) -> CLIPConfig:
  """The `CLIPConfig` of a config: towers sized by `clip.*`, the rest by data and tokenizer."""
  c = config.clip
  vision = _tower_config(
    CLIPVisionConfig,
    c.vision,
    "vision",
    dict(image_size=config.data.resolution, num_channels=shapes.CHANNELS),
  )
  text = _tower_config(
    CLIPTextConfig,
    c.text,
    "text",
    dict(
      vocab_size=tokenizer.vocab_size,
      max_position_embeddings=config.text.max_length,
      pad_token_id=tokenizer.pad_id,
      bos_token_id=tokenizer.bos_id,
      # Not 2: transformers would then pool at the largest id (see the module docstring).
      eos_token_id=tokenizer.eos_id,
    ),
  )
  try:
    return CLIPConfig(text, vision, c.projection_dim, float(c.logit_scale_init_value))
  except ValueError as e:
    raise ClipConfigError(f"clip.{e}") from e


def check_max_logit_scale(value) -> float:
  """`clip.max_logit_scale` (CLIP: 100), checked: a number > 1."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
    raise ClipConfigError(f"clip.max_logit_scale: expected a number > 1, found {value!r}")
  return float(value)


def check_eval_config(e: ml_collections.ConfigDict) -> None:
  """Named errors for `eval.{retrieval_batch, batch_size, num_examples}` out of range."""
  for key, low in (("retrieval_batch", 2), ("batch_size", 1)):
    value = e[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ClipConfigError(f"eval.{key}: expected an integer >= {low}, found {value!r}")
  if e.num_examples < e.retrieval_batch:
    raise ClipConfigError(
      f"eval.num_examples: expected at least eval.retrieval_batch={e.retrieval_batch} "
      f"held-out pairs, found {e.num_examples!r}"
    )


def check_captioned_batch(
  batch: Mapping[str, np.ndarray], expected: Mapping[str, jax.ShapeDtypeStruct]
) -> None:
  """Named errors for a batch without the `expected` keys, shapes and dtypes."""
  for key, spec in expected.items():
    if key not in batch:
      raise ClipInputError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
    found = np.asarray(batch[key])
    if found.shape != spec.shape or found.dtype != spec.dtype:
      raise ClipInputError(
        f"batch[{key!r}]: expected {np.dtype(spec.dtype).name} {spec.shape}, "
        f"found {found.dtype} {found.shape}"
      )


def to_pixels(images: jax.Array) -> jax.Array:
  """uint8 images (N, H, W, 3) -> float32 in [-1, 1], the towers' input."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def same_caption(tokens: jax.Array) -> jax.Array:
  """(B, B) bool: rows i, j hold the same token sequence."""
  return jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)


# -- evaluation helpers ------------------------------------------------------------


def attribute_perturbations(caption: str) -> dict[str, list[str]]:
  """attribute -> the captions that change only it, to each other value (shapes captions)."""
  spec = shapes.parse_caption(caption)
  return {
    name: [
      dataclasses.replace(spec, **{name: value}).caption
      for value in shapes.ATTRIBUTE_VALUES[name]
      if value != getattr(spec, name)
    ]
    for name in shapes.ATTRIBUTES
  }


def judge_scores(
  image_embeds: np.ndarray,
  own: np.ndarray,
  perturbed: Sequence[Mapping[str, list[str]]],
  text_embeds: Mapping[str, np.ndarray],
) -> dict[str, float]:
  """`judge_<attribute>`: fraction of (image, one-attribute change) pairs its own caption wins;
  `judge_all`: images whose caption beats every change. `own` (N, D) embeds the true captions,
  `perturbed` holds `attribute_perturbations` of each, `text_embeds` every caption's embedding.
  """
  true_score = np.sum(image_embeds * own, axis=-1)
  wins = {name: [] for name in shapes.ATTRIBUTES}
  beats_all = np.ones(len(own), bool)
  for i, changes in enumerate(perturbed):
    for name, alternatives in changes.items():
      scores = image_embeds[i] @ np.stack([text_embeds[c] for c in alternatives]).T
      won = true_score[i] > scores
      wins[name].append(won)
      beats_all[i] &= bool(won.all())
  metrics = {f"judge_{name}": float(np.mean(np.concatenate(w))) for name, w in wins.items()}
  metrics["judge_all"] = float(np.mean(beats_all))
  return metrics


def retrieval_hits(
  similarity: np.ndarray, captions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
  """(image→text, text→image) top-1 hits of a (K, K) image × caption similarity block.

  A hit is a pick that carries the true caption (a repeated caption cannot be told apart).
  """
  captions = np.asarray(captions)
  image_to_text = captions[np.argmax(similarity, axis=1)] == captions
  text_to_image = captions[np.argmax(similarity, axis=0)] == captions
  return image_to_text, text_to_image


def heat_colours(values: np.ndarray) -> np.ndarray:
  """uint8 RGB of values in [-1, 1]: blue (-1) through white (0) to red (1)."""
  v = np.clip(np.asarray(values, np.float32), -1.0, 1.0)[..., None]
  white, red, blue = (
    np.float32([255, 255, 255]),
    np.float32([200, 30, 30]),
    np.float32([30, 60, 200]),
  )
  colour = np.where(v >= 0, white + v * (red - white), white - v * (blue - white))
  return np.round(colour).astype(np.uint8)


def similarity_picture(
  images: np.ndarray, captions: Sequence[str], similarity: np.ndarray
) -> np.ndarray:
  """uint8 heat map: row i = image i (drawn on the left), column j = caption j (legend below).

  Cells are coloured by cosine similarity and print it in hundredths; the
  true pairs (the diagonal) are framed, and each row's best caption is
  marked with a dot.
  """
  n = len(images)
  scale = -(-64 // images.shape[1])  # cells of at least 64 pixels
  cell = images.shape[1] * scale
  thumbs = np.asarray(images).repeat(scale, axis=1).repeat(scale, axis=2)
  font = ImageFont.load_default()
  line = 12
  header, width = line + 4, (n + 1) * cell + 4
  legend = [f"{j + 1}: {c}" for j, c in enumerate(captions)]
  width = max(width, 6 * max(len(s) for s in legend) + 8)
  canvas = Image.new("RGB", (width, header + n * cell + 4 + n * line + 4), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  colours = heat_colours(similarity)
  best = np.argmax(similarity, axis=1)
  for j in range(n):
    draw.text((cell * (j + 1) + cell // 2 - 3, 2), str(j + 1), fill=(0, 0, 0), font=font)
  for i in range(n):
    top = header + i * cell
    canvas.paste(Image.fromarray(thumbs[i]), (0, top))
    for j in range(n):
      left = cell * (j + 1)
      box = (left, top, left + cell - 1, top + cell - 1)
      draw.rectangle(box, fill=tuple(int(x) for x in colours[i, j]))
      draw.text((left + 2, top + 2), f"{similarity[i, j]:.2f}"[:5], fill=(0, 0, 0), font=font)
      if i == j:
        draw.rectangle(box, outline=(0, 0, 0), width=2)
      if best[i] == j:
        centre = (left + cell // 2, top + cell * 2 // 3)
        draw.ellipse((centre[0] - 3, centre[1] - 3, centre[0] + 3, centre[1] + 3), fill=(0, 0, 0))
  for j, text in enumerate(legend):
    draw.text((4, header + n * cell + 4 + j * line), text, fill=(0, 0, 0), font=font)
  return np.asarray(canvas)


# -- the task -------------------------------------------------------------------------


class ClipTask(Task):
  """The `clip` task (see module docstring). Batches: `image` uint8, `text_tokens`, `text_mask`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.kind = data_kind(config.data)
    self.resolution = config.data.resolution
    self.tokenizer = caption_tokenizer(config.data)
    self.max_text_length = config.text.max_length
    self.model_config = clip_model_config(config, self.tokenizer)
    self.max_logit_scale = check_max_logit_scale(config.clip.max_logit_scale)
    self.same_caption_positives = bool(config.loss.same_caption_positives)
    self.model = CLIPModel(self.model_config)
    check_eval_config(config.eval)

  # -- data ------------------------------------------------------------------------

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) int32 (N, text.max_length) of checked captions."""
    return tokenize_captions(
      self.tokenizer, check_prompts(captions, "captions"), self.max_text_length
    )

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    d = self.config.data
    split = make_captioned_split(d, "train", d.num_train_examples, d.seed)
    tokens, mask = self.tokenize(list(split["caption"]))
    return dict(image=split["image"], text_tokens=tokens, text_mask=mask)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return abstract_captioned_batch(batch_size, self.resolution, self.max_text_length)

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    check_captioned_batch(batch, self.abstract_batch(len(batch.get("image", ()))))

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out captioned images (combinations never seen in training)."""
    return make_captioned_split(self.config.data, "test", num_examples, self.config.data.seed + 1)

  def check_images(self, images) -> np.ndarray:
    """uint8 (N, resolution, resolution, 3) images as an array, or a named error."""
    images = np.asarray(images)
    expected = (self.resolution, self.resolution, shapes.CHANNELS)
    if (
      images.ndim != 4
      or images.shape[1:] != expected
      or images.dtype != np.uint8
      or not len(images)
    ):
      raise ClipInputError(
        f"images: expected uint8 (N, {', '.join(map(str, expected))}) with N >= 1 "
        f"(data.resolution={self.resolution}), found {images.dtype} {images.shape}"
      )
    return images

  # -- model -----------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: Mapping[str, jax.Array]):
    pixels = to_pixels(batch["image"])
    return self.model.init(rng, batch["text_tokens"], pixels, batch["text_mask"])["params"]

  def embed(self, params, images: jax.Array, tokens: jax.Array, mask: jax.Array):
    """(image embeds, text embeds) L2-normalised (B, D), and the clamped scale exp(logit_scale)."""

    def both(model: CLIPModel, pixels, tokens, mask):
      image = l2_normalize(model.get_image_features(pixels))
      text = l2_normalize(model.get_text_features(tokens, mask))
      return image, text, model.logit_scale

    image, text, logit_scale = self.model.apply(
      {"params": params}, to_pixels(images), tokens, mask, method=both
    )
    return image, text, jnp.exp(jnp.minimum(logit_scale, math.log(self.max_logit_scale)))

  def loss(self, params, batch: Mapping[str, jax.Array], rng: jax.Array):
    del rng
    image, text, scale = self.embed(
      params, batch["image"], batch["text_tokens"], batch["text_mask"]
    )
    positives = same_caption(batch["text_tokens"]) if self.same_caption_positives else None
    loss, metrics = clip_loss(image, text, scale, positives)
    return loss, dict(metrics, logit_scale=scale)

  # -- embeddings (what other tasks and metrics call) ---------------------------------

  @functools.partial(jax.jit, static_argnames=("self",))
  def _image_embeds(self, params, images):
    pixels = to_pixels(images)
    features = self.model.apply({"params": params}, pixels, method=CLIPModel.get_image_features)
    return l2_normalize(features)

  @functools.partial(jax.jit, static_argnames=("self",))
  def _text_embeds(self, params, tokens, mask):
    features = self.model.apply(
      {"params": params}, tokens, mask, method=CLIPModel.get_text_features
    )
    return l2_normalize(features)

  @functools.partial(jax.jit, static_argnames=("self",))
  def _pair_similarity(self, params, images, tokens, mask):
    image, text, _ = self.embed(params, images, tokens, mask)
    return jnp.sum(image * text, axis=-1)

  def _chunk(self, n: int) -> int:
    return min(self.config.eval.batch_size, n)

  def encode_images(self, params, images) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, projection_dim) float32, L2-normalised."""
    images = self.check_images(images)
    return map_padded_chunks(
      lambda _, x: self._image_embeds(params, x), [images], self._chunk(len(images))
    )

  def encode_texts(self, params, captions: Sequence[str]) -> np.ndarray:
    """N captions -> (N, projection_dim) float32, L2-normalised."""
    tokens, mask = self.tokenize(captions)
    return map_padded_chunks(
      lambda _, t, m: self._text_embeds(params, t, m), [tokens, mask], self._chunk(len(tokens))
    )

  def similarity(self, params, images, captions: Sequence[str]) -> np.ndarray:
    """(N,) cosine similarity of image i with caption i, in [-1, 1]: one program, chunked."""
    images = self.check_images(images)
    captions = check_prompts(captions, "captions")
    if len(captions) != len(images):
      raise ClipInputError(
        f"captions: expected one per image ({len(images)}), found {len(captions)}"
      )
    tokens, mask = self.tokenize(captions)
    return map_padded_chunks(
      lambda _, x, t, m: self._pair_similarity(params, x, t, m),
      [images, tokens, mask],
      self._chunk(len(images)),
    )

  # -- judging and pictures -----------------------------------------------------------

  def evaluate(self, params, num_examples: int | None = None) -> dict[str, float]:
    """Held-out retrieval and (shapes) the one-attribute judge test; see the module docstring.

    Keys: `image_to_text_top1`, `text_to_image_top1` (among `eval.retrieval_batch`
    pairs; chance 1/K), `positive_cosine` (mean similarity of true pairs); for
    shapes `judge_<attribute>` (fraction of (image, changed caption) pairs the
    true caption wins; chance 0.5) and `judge_all` (images whose caption beats
    every one-attribute change). `num_pairs` held-out pairs are scored (whole
    batches of K).
    """
    k = self.config.eval.retrieval_batch
    n = num_examples or self.config.eval.num_examples
    if n < k:
      raise ClipInputError(f"num_examples: expected at least eval.retrieval_batch={k}, found {n}")
    n -= n % k
    data = self.eval_split(n)
    captions = [str(c) for c in data["caption"]]
    image_embeds = self.encode_images(params, data["image"])
    unique = sorted(set(captions))
    if self.kind == "shapes":
      perturbed = [attribute_perturbations(c) for c in captions]
      unique = sorted(set(unique).union(*(c for p in perturbed for c in p.values())))
    text_embeds = dict(zip(unique, self.encode_texts(params, unique)))
    own = np.stack([text_embeds[c] for c in captions])
    hits = [
      retrieval_hits(image_embeds[s : s + k] @ own[s : s + k].T, captions[s : s + k])
      for s in range(0, n, k)
    ]
    metrics = dict(
      image_to_text_top1=float(np.mean([h[0] for h in hits])),
      text_to_image_top1=float(np.mean([h[1] for h in hits])),
      positive_cosine=float(np.mean(np.sum(image_embeds * own, axis=-1))),
      num_pairs=float(n),
    )
    if self.kind == "shapes":
      metrics.update(judge_scores(image_embeds, own, perturbed, text_embeds))
    return metrics

  def preview(self, params, rng: jax.Array) -> np.ndarray:
    """The cosine similarity of 8 held-out images × their 8 captions, as a heat map picture."""
    del rng
    data = self.eval_split(PREVIEW_PAIRS)
    captions = [str(c) for c in data["caption"]]
    similarity = self.encode_images(params, data["image"]) @ self.encode_texts(params, captions).T
    return similarity_picture(data["image"], captions, similarity)
