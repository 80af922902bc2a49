"""CLIP score (text-image agreement) and CLIPSIM (its mean over video frames).

Definitions, as torchmetrics 1.9 (`CLIPScore`, `clip_score`) computes them:

    score_i    = 100 * cos(E_image_i, E_text_i)        (projected CLIP embeddings)
    CLIP score = max(mean_i score_i, 0)

torchmetrics clips the *mean* at 0 (not each pair as Hessel et al.'s
`2.5 * max(cos, 0)` does); jaxgen follows torchmetrics, whose number papers
report. CLIPSIM (GODIVA, Make-A-Video) is the same average taken over every
frame of every video, each frame paired with its video's caption; video papers
usually print it on the cosine scale, i.e. this value / 100.

The model is a local transformers `CLIPModel` folder (`load_clip_scorer`):
config.json + model.safetensors, the tokenizer files (vocab.json, merges.txt)
and, when present, the image processor settings: preprocessor_config.json
(hub / transformers 4.x) or the "image_processor" entry of
processor_config.json (transformers 5.x `save_pretrained`); otherwise
`CLIPImageProcessor` defaults. Nothing downloads.

Image preprocessing reproduces `CLIPImageProcessor` (its PIL backend, the one
OpenAI's CLIP and transformers 4.x use): resize the shorter side to
`shortest_edge` with PIL bicubic on uint8, center crop, rescale by 1/255,
normalize with the CLIP mean/std. `preprocess_images` calls PIL itself and is
exact. `preprocess_images_jax` is a jittable version for device arrays: JAX's
bicubic (Keys, a = -0.5, antialiased when shrinking, edge taps renormalized)
equals PIL's filter in float arithmetic to ~1e-3 of a level, but PIL filters
8-bit images in two passes (width, then height), each rounded to uint8 with
22-bit fixed-point weights. The JAX version rounds and clips after each pass
too; what remains is PIL's weight quantization: up to 2 levels on under 1% of
pixels (measured on random images; see tests). Without the rounding JAX
bicubic would differ by up to ~50 levels on noise (overshoot is not clipped).

Captions are tokenized with the folder's `CLIPTokenizer`, padded to
`max_position_embeddings` so the text tower compiles once. A caption longer
than that is truncated by the tokenizer, which keeps the end-of-text token;
torchmetrics instead slices the ids after tokenizing and drops it (so long
captions score differently there; a warning is logged here).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxgen.convert.transformers_clip import load_clip_model
from jaxgen.errors import UnsupportedConfigError
from jaxgen.metrics import image_folder
from jaxgen.models.clip import CLIPConfig, CLIPModel, l2_normalize

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"
# PIL resampling codes (PIL.Image.Resampling) and the jax.image.resize method equal to each.
PIL_RESAMPLE_NAMES = {
  0: "nearest",
  1: "lanczos",
  2: "bilinear",
  3: "bicubic",
  4: "box",
  5: "hamming",
}
JAX_RESAMPLE_METHODS = {2: "bilinear", 3: "bicubic"}

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------
# Image preprocessing.


@dataclasses.dataclass(frozen=True)
class CLIPImagePreprocessing:
  """`CLIPImageProcessor` settings (its defaults: OpenAI CLIP at 224 pixels).

  Attributes:
    shortest_edge: the shorter image side after resizing.
    crop_size: (height, width) of the center crop.
    resample: PIL resampling code (3 = bicubic).
  """

  shortest_edge: int = 224
  crop_size: tuple[int, int] = (224, 224)
  resample: int = 3
  do_resize: bool = True
  do_center_crop: bool = True
  do_rescale: bool = True
  rescale_factor: float = 1 / 255
  do_normalize: bool = True
  image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
  image_std: tuple[float, float, float] = OPENAI_CLIP_STD

  def __post_init__(self):
    if self.resample not in PIL_RESAMPLE_NAMES:
      raise UnsupportedConfigError(
        f"resample: expected a PIL resampling code in {PIL_RESAMPLE_NAMES}, found {self.resample!r}"
      )
    for name in ("image_mean", "image_std"):
      if len(getattr(self, name)) != 3:
        raise ValueError(f"{name}: expected 3 (RGB) values, found {getattr(self, name)!r}")
    sizes = {"shortest_edge": self.shortest_edge, "crop_size": self.crop_size}
    for name, value in sizes.items():
      values = value if isinstance(value, tuple) else (value,)
      if not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name}: expected positive ints, found {value!r}")
    if self.do_resize and self.do_center_crop and max(self.crop_size) > self.shortest_edge:
      # transformers zero-pads such crops; no CLIP release does this.
      raise UnsupportedConfigError(
        f"crop_size: expected at most shortest_edge={self.shortest_edge}, found {self.crop_size}"
      )

  @classmethod
  def from_dict(cls, config: Mapping[str, Any]) -> CLIPImagePreprocessing:
    """From the dict of a preprocessor_config.json (4.x int sizes or 5.x size dicts)."""
    size, crop = config.get("size", 224), config.get("crop_size", 224)
    if isinstance(size, Mapping):
      if set(size) != {"shortest_edge"}:
        raise UnsupportedConfigError(
          f"size: expected {{'shortest_edge': n}} (CLIPImageProcessor), found {size!r}"
        )
      size = size["shortest_edge"]
    if isinstance(crop, Mapping):
      crop = (crop["height"], crop["width"])
    elif isinstance(crop, int):
      crop = (crop, crop)
    fields = {f.name for f in dataclasses.fields(cls)} - {"shortest_edge", "crop_size"}
    values = {k: v for k, v in config.items() if k in fields}
    for name in ("image_mean", "image_std"):
      if name in values:
        values[name] = tuple(float(v) for v in values[name])
    return cls(shortest_edge=size, crop_size=tuple(crop), **values)

  @classmethod
  def from_folder(cls, folder: PathLike) -> CLIPImagePreprocessing:
    """preprocessor_config.json if present, else processor_config.json's "image_processor",
    else `CLIPImageProcessor` defaults."""
    path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
    if os.path.isfile(path):
      with open(path) as f:
        return cls.from_dict(json.load(f))
    path = os.path.join(folder, PROCESSOR_CONFIG_NAME)
    if os.path.isfile(path):
      with open(path) as f:
        processor = json.load(f)
      if "image_processor" in processor:
        return cls.from_dict(processor["image_processor"])
    logger.info("no image processor config in %s; using CLIPImageProcessor defaults", folder)
    return cls()

  def to_dict(self) -> dict[str, Any]:
    """preprocessor_config.json contents that `CLIPImageProcessor.from_pretrained` reads."""
    values = dataclasses.asdict(self)
    height, width = values.pop("crop_size")
    values.update(
      size={"shortest_edge": values.pop("shortest_edge")},
      crop_size={"height": height, "width": width},
      image_mean=list(self.image_mean),
      image_std=list(self.image_std),
      image_processor_type="CLIPImageProcessor",
    )
    return values


def resized_shape(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
  """(height, width) with the shorter side set to `shortest_edge`, the longer one truncated.

  transformers' `get_resize_output_image_size(default_to_square=False)` (torchvision's rule).
  """
  short, long = min(height, width), max(height, width)
  new_long = int(shortest_edge * long / short)
  return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def _center_crop_box(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
  if height < crop[0] or width < crop[1]:
    raise ValueError(
      f"images: expected at least the crop_size {crop} after resizing, found {(height, width)} "
      "(transformers would zero-pad; jaxgen does not)"
    )
  return (height - crop[0]) // 2, (width - crop[1]) // 2


def _check_rgb_uint8(image: np.ndarray, name: str) -> None:
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{name}: expected an (H, W, 3) RGB image, found shape {image.shape}")
  if image.dtype != np.uint8:
    raise ValueError(
      f"{name}: expected uint8 pixels (PIL resizes 8-bit images), found {image.dtype}; "
      "convert with np.round(x * 255).astype(np.uint8) or use preprocess_images_jax"
    )


def preprocess_images(
  images: np.ndarray | Sequence[np.ndarray], preprocessing: CLIPImagePreprocessing
) -> np.ndarray:
  """Exactly `CLIPImageProcessor` (PIL backend): uint8 RGB images of any sizes -> float32 NHWC.

  images: (N, H, W, 3) uint8, or a sequence of (H_i, W_i, 3) uint8 arrays.
  Returns (N, crop_h, crop_w, 3) float32 pixel values.
  """
  if isinstance(images, np.ndarray) and images.ndim == 4:
    images = list(images)
  if not len(images):
    raise ValueError("images: expected at least one image, found none")
  mean = np.asarray(preprocessing.image_mean, np.float32)
  std = np.asarray(preprocessing.image_std, np.float32)
  out = []
  for i, image in enumerate(images):
    image = np.asarray(image)
    _check_rgb_uint8(image, f"images[{i}]")
    if preprocessing.do_resize:
      height, width = resized_shape(*image.shape[:2], preprocessing.shortest_edge)
      pil = Image.fromarray(image).resize((width, height), resample=preprocessing.resample)
      image = np.asarray(pil)
    if preprocessing.do_center_crop:
      top, left = _center_crop_box(*image.shape[:2], preprocessing.crop_size)
      image = image[
        top : top + preprocessing.crop_size[0], left : left + preprocessing.crop_size[1]
      ]
    if preprocessing.do_rescale:  # In float64, then float32, as transformers' `rescale`.
      image = (image.astype(np.float64) * preprocessing.rescale_factor).astype(np.float32)
    image = image.astype(np.float32)
    if preprocessing.do_normalize:
      image = (image - mean) / std
    out.append(image)
  shapes = {x.shape for x in out}
  if len(shapes) > 1:
    raise ValueError(
      f"images: without a center crop every resized image must share one shape, found {shapes}"
    )
  return np.stack(out)


def _resize_axis_like_pil(x: jax.Array, axis: int, size: int, method: str) -> jax.Array:
  """One PIL 8-bit resampling pass: filter along `axis` in float, round half up, clip to uint8 range."""
  if x.shape[axis] == size:
    return x  # PIL skips a pass whose size does not change.
  shape = list(x.shape)
  shape[axis] = size
  x = jax.image.resize(x, shape, method, antialias=True)
  return jnp.clip(jnp.floor(x + 0.5), 0.0, 255.0)


def preprocess_images_jax(images: jax.Array, preprocessing: CLIPImagePreprocessing) -> jax.Array:
  """Jittable `CLIPImageProcessor` for a (B, H, W, 3) batch of values in [0, 255] (uint8 or float).

  Matches `preprocess_images` up to PIL's fixed-point weights (see the module docstring).
  Float inputs are rounded to integer levels first, as PIL sees uint8 images.
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images: expected (batch, height, width, 3) RGB, found shape {images.shape}")
  x = jnp.clip(jnp.round(images.astype(jnp.float32)), 0.0, 255.0)
  if preprocessing.do_resize:
    if preprocessing.resample not in JAX_RESAMPLE_METHODS:
      raise UnsupportedConfigError(
        f"resample: preprocess_images_jax supports {JAX_RESAMPLE_METHODS}, found "
        f"{preprocessing.resample} ({PIL_RESAMPLE_NAMES[preprocessing.resample]}); "
        "use preprocess_images"
      )
    method = JAX_RESAMPLE_METHODS[preprocessing.resample]
    height, width = resized_shape(x.shape[1], x.shape[2], preprocessing.shortest_edge)
    x = _resize_axis_like_pil(x, 2, width, method)  # PIL: horizontal pass first.
    x = _resize_axis_like_pil(x, 1, height, method)
  if preprocessing.do_center_crop:
    top, left = _center_crop_box(x.shape[1], x.shape[2], preprocessing.crop_size)
    x = x[:, top : top + preprocessing.crop_size[0], left : left + preprocessing.crop_size[1]]
  if preprocessing.do_rescale:
    x = x * jnp.float32(preprocessing.rescale_factor)
  if preprocessing.do_normalize:
    mean = jnp.asarray(preprocessing.image_mean, jnp.float32)
    x = (x - mean) / jnp.asarray(preprocessing.image_std, jnp.float32)
  return x


def load_rgb_image(path: PathLike) -> np.ndarray:
  """(H, W, 3) uint8, transparency composited onto white as transformers 5.x `convert_to_rgb` does."""

  def read(image: Image.Image) -> np.ndarray:
    if "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if image.mode in image_folder.SIXTEEN_BIT_MODES:
      return image_folder.load_image(path)  # Scaled to 8 bits, not clipped.
    return np.asarray(image.convert("RGB"))

  return image_folder.read_with_pil(path, read)


# ----------------------------------------------------------------------------
# Model, tokenizer and embeddings.


@dataclasses.dataclass(frozen=True)
class CLIPScorer:
  """A local CLIP: architecture, params, its tokenizer and image preprocessing.

  batch_size: images / captions per compiled call (the last batch is padded).
  """

  config: CLIPConfig
  params: Any
  tokenizer: Any
  preprocessing: CLIPImagePreprocessing
  batch_size: int = 32

  def __post_init__(self):
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f"batch_size: expected a positive int, found {self.batch_size!r}")
    vision = self.config.vision_config
    expected = (vision.image_size, vision.image_size)
    if self.preprocessing.do_center_crop and self.preprocessing.crop_size != expected:
      raise ValueError(
        f"preprocessing: crop_size {self.preprocessing.crop_size} must equal the vision tower's "
        f"image_size {expected} (check the folder's {PREPROCESSOR_CONFIG_NAME})"
      )


def load_clip_scorer(folder: PathLike, batch_size: int = 32) -> CLIPScorer:
  """Reads a transformers `CLIPModel` folder with its tokenizer files (see the module docstring)."""
  from transformers import CLIPTokenizer  # Imported here: only folder I/O needs it.

  if not os.path.isdir(folder):
    raise FileNotFoundError(
      f"folder: expected a transformers CLIPModel folder, {folder} is not one"
    )
  config, params = load_clip_model(folder)
  tokenizer_files = [os.path.join(folder, n) for n in ("vocab.json", "merges.txt")]
  if not all(os.path.isfile(p) for p in tokenizer_files):
    raise FileNotFoundError(
      f"folder: expected CLIPTokenizer files vocab.json and merges.txt in {folder} "
      "(save them with CLIPProcessor/CLIPTokenizer.save_pretrained)"
    )
  tokenizer = CLIPTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)
  preprocessing = CLIPImagePreprocessing.from_folder(folder)
  params = jax.tree.map(jnp.asarray, params)
  return CLIPScorer(config, params, tokenizer, preprocessing, batch_size)


def tokenize_captions(
  tokenizer: Any, captions: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
  """(N, max_length) int32 ids and attention mask; over-long captions are truncated (end token kept)."""
  if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
    raise ValueError(f"captions: expected a sequence of strings, found {type(captions).__name__}")
  lengths = [len(ids) for ids in tokenizer(list(captions))["input_ids"]]
  too_long = sum(length > max_length for length in lengths)
  if too_long:
    logger.warning(
      "%d of %d captions exceed %d tokens and are truncated", too_long, len(lengths), max_length
    )
  tokens = tokenizer(
    list(captions),
    padding="max_length",
    truncation=True,
    max_length=max_length,
    return_tensors="np",
  )
  return tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)


@functools.partial(jax.jit, static_argnames="config")
def _image_embeddings(params: Any, pixel_values: jax.Array, config: CLIPConfig) -> jax.Array:
  model = CLIPModel(config)
  return model.apply({"params": params}, pixel_values, method=CLIPModel.get_image_features)


@functools.partial(jax.jit, static_argnames="config")
def _text_embeddings(
  params: Any, input_ids: jax.Array, mask: jax.Array, config: CLIPConfig
) -> jax.Array:
  model = CLIPModel(config)
  return model.apply({"params": params}, input_ids, mask, method=CLIPModel.get_text_features)


def _in_batches(fn, arrays: tuple[np.ndarray, ...], batch_size: int) -> np.ndarray:
  """Applies `fn` to fixed-size batches of `arrays` (the last one padded by repeating row 0)."""
  total = len(arrays[0])
  out = []
  for start in range(0, total, batch_size):
    chunk = [a[start : start + batch_size] for a in arrays]
    valid = len(chunk[0])
    if valid < batch_size:
      chunk = [np.concatenate([c, np.repeat(c[:1], batch_size - valid, 0)]) for c in chunk]
    out.append(np.asarray(fn(*chunk))[:valid])
  return np.concatenate(out)


def image_features(scorer: CLIPScorer, pixel_values: np.ndarray) -> np.ndarray:
  """(N, H, W, 3) preprocessed pixels -> (N, projection_dim) float32 image embeddings."""
  return _in_batches(
    lambda x: _image_embeddings(scorer.params, x, scorer.config),
    (np.asarray(pixel_values, np.float32),),
    scorer.batch_size,
  )


def text_features(scorer: CLIPScorer, captions: Sequence[str]) -> np.ndarray:
  """N captions -> (N, projection_dim) float32 text embeddings."""
  ids, mask = tokenize_captions(
    scorer.tokenizer, captions, scorer.config.text_config.max_position_embeddings
  )
  return _in_batches(
    lambda i, m: _text_embeddings(scorer.params, i, m, scorer.config),
    (ids, mask),
    scorer.batch_size,
  )


# ----------------------------------------------------------------------------
# Scores.


class ScoreResult(NamedTuple):
  """value: the metric (clipped mean); per_item: 100 * cos per image-caption pair (CLIP score)
  or per video (CLIPSIM: the mean over its frames), unclipped."""

  value: float
  per_item: np.ndarray


def pair_scores(image_embeddings: jax.Array, text_embeddings: jax.Array) -> jax.Array:
  """100 * cos between row i of each (N, D) array: torchmetrics' per-pair score, before any clip."""
  image_embeddings, text_embeddings = jnp.asarray(image_embeddings), jnp.asarray(text_embeddings)
  if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
    raise ValueError(
      f"image_embeddings, text_embeddings: expected two (N, D) arrays of one shape, found "
      f"{image_embeddings.shape} and {text_embeddings.shape}"
    )
  return 100.0 * jnp.sum(l2_normalize(image_embeddings) * l2_normalize(text_embeddings), axis=-1)


def clipped_mean(scores: np.ndarray) -> float:
  """max(mean, 0), torchmetrics' reduction (sum of pair scores / count, then clipped)."""
  return max(float(np.mean(np.asarray(scores, np.float64))), 0.0)


def image_text_scores(
  scorer: CLIPScorer, images: np.ndarray | Sequence[np.ndarray], captions: Sequence[str]
) -> np.ndarray:
  """Per-pair 100 * cos of image i (uint8 RGB, any size) with caption i: (N,) float32."""
  if len(images) != len(captions):
    raise ValueError(
      f"images, captions: expected one caption per image, found {len(images)} images and "
      f"{len(captions)} captions"
    )
  pixels = preprocess_images(images, scorer.preprocessing)
  return np.asarray(pair_scores(image_features(scorer, pixels), text_features(scorer, captions)))


def clip_score(
  scorer: CLIPScorer, images: np.ndarray | Sequence[np.ndarray], captions: Sequence[str]
) -> ScoreResult:
  """CLIP score of N images (uint8 RGB, any sizes) with their N captions, as torchmetrics `CLIPScore`."""
  scores = image_text_scores(scorer, images, captions)
  return ScoreResult(clipped_mean(scores), scores)


def clipsim(scorer: CLIPScorer, videos: np.ndarray, captions: str | Sequence[str]) -> ScoreResult:
  """CLIPSIM: the CLIP score of every frame with its video's caption, averaged over all frames.

  videos: (B, T, H, W, 3) uint8 with B captions, or one (T, H, W, 3) video with one caption.
  per_item holds each video's mean over its frames.
  """
  videos = np.asarray(videos)
  if videos.ndim == 4 and isinstance(captions, str):
    videos, captions = videos[None], [captions]
  if videos.ndim != 5 or videos.shape[-1] != 3:
    raise ValueError(
      f"videos: expected (batch, frames, height, width, 3) or (frames, height, width, 3) with one "
      f"caption string, found shape {videos.shape}"
    )
  if isinstance(captions, str) or len(captions) != len(videos):
    raise ValueError(
      f"captions: expected one caption per video ({len(videos)}), found "
      f"{'a single string' if isinstance(captions, str) else len(captions)}"
    )
  batch, frames = videos.shape[:2]
  frame_captions = [caption for caption in captions for _ in range(frames)]
  frame_images = videos.reshape((batch * frames,) + videos.shape[2:])
  scores = image_text_scores(scorer, frame_images, frame_captions)
  return ScoreResult(clipped_mean(scores), scores.reshape(batch, frames).mean(axis=1))


# ----------------------------------------------------------------------------
# Captions for a folder of images.

CAPTION_FILE_NAMES = ("captions.json", "captions.txt")


class CaptionsError(ValueError):
  """A captions file does not give exactly one caption per image."""


def read_captions(
  path: PathLike, image_names: Sequence[str], *, name: str = "captions", images_name: str = "images"
) -> list[str]:
  """Captions for `image_names` (sorted file names), in that order.

  `path` is either a JSON object mapping each file name to its caption, or a
  text file with one caption per line in sorted file-name order. Every image
  needs exactly one non-empty caption; `name` / `images_name` label errors.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CaptionsError(f"{name}: expected a .txt or .json captions file, {path!r} is not a file")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.endswith(".json"):
    mapping = json.loads(text)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
      raise CaptionsError(f"{name} {path!r}: expected a JSON object of file name -> caption string")
    missing = [n for n in image_names if n not in mapping]
    extra = sorted(set(mapping) - set(image_names))
    if missing or extra:
      raise CaptionsError(
        f"{name} {path!r} must map every file of {images_name} and nothing else: no caption for "
        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, captions for unknown files "
        f"{extra[:5]}{' ...' if len(extra) > 5 else ''}"
      )
    captions = [mapping[n] for n in image_names]
  else:
    captions = [line.strip() for line in text.splitlines()]
    if len(captions) != len(image_names):
      raise CaptionsError(
        f"{name} {path!r} holds {len(captions)} captions, {images_name} holds {len(image_names)} "
        "images; expected one line per image in sorted file-name order"
      )
  empty = [n for n, c in zip(image_names, captions) if not c.strip()]
  if empty:
    raise CaptionsError(f"{name} {path!r}: empty caption for {empty[:5]}")
  return captions
