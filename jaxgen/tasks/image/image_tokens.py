"""What every prior over VQGAN image tokens shares: the tokenizer run, codes, captions, output.

The token priors (autoregressive DALL-E/CogView style, MaskGIT-style masked
decoding, VQ-Diffusion) all model p(codes | caption) over the codes of a
trained `vqgan` run (`jaxgen.tasks.image.vqgan`, named by `vq.workdir`):

  training:   images -> VQGAN encoder -> codes (N, h, w) int32, once, on the host
  generation: caption -> tokens -> prior's code sampler -> VQGAN decoder -> images

`TokenPriorTask` is that shared half. It loads the tokenizer run, encodes
the training images of `config.data` (which must be the images the VQGAN
was trained on: same `kind` and `resolution`) into `train_arrays` {"codes",
"text_tokens", "text_mask"}, and turns a subclass's code sampler into
captioned image grids (`CaptionedDataTask`: conditions, chunked generation,
`save_samples`). A family subclasses it with `init`, `loss` and
`sample_codes`, its config holding `text.max_length`, `vq.workdir` and
`sample.{sampler, num_steps, guidance}`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.data.tokenizer import CaptionTokenizer, build_caption_tokenizer
from jaxgen.diffusion.samplers import SamplingOptionError
from jaxgen.tasks.image.captioned_data import data_kind, make_captioned_split, scene_caption_words
from jaxgen.tasks.image.captioned_images import CaptionedDataTask
from jaxgen.tasks.image.vqgan import VQGANTask
from jaxgen.tasks.registry import absolute_dependent_runs, load_run_of


class ImageTokenDataError(ValueError):
  """A prior's images differ from those its VQGAN was trained on, or a code batch is malformed."""


def load_vqgan_run(workdir: str) -> tuple[VQGANTask, Any]:
  """(the `vqgan` task, its EMA params) of a run directory, with a named error for others."""
  return load_run_of(VQGANTask, workdir, flag="vq.workdir")


def encode_images_to_codes(
  task: VQGANTask, params, images: np.ndarray, batch: int = 256
) -> np.ndarray:
  """uint8 images (N, H, W, 3) -> codes (N, h, w) int32, in chunks of `batch` (one compile)."""
  return map_padded_chunks(
    lambda _, chunk: task.encode_codes(params, chunk), [images], min(batch, len(images))
  )


def decode_codes_to_images(
  task: VQGANTask, params, codes: np.ndarray, batch: int = 256
) -> np.ndarray:
  """codes (N, h, w) int -> uint8 images (N, H, W, 3), in chunks of `batch` (one compile)."""
  images = map_padded_chunks(
    lambda _, chunk: task.decode_codes(params, chunk), [codes], min(batch, len(codes))
  )
  return to_uint8(images)


def caption_tokenizer(data: ml_collections.ConfigDict) -> CaptionTokenizer:
  """The `text_to_image` tokenizer of `data.kind`'s captions (shapes or scenes words)."""
  return build_caption_tokenizer(scene_caption_words() if data_kind(data) == "scenes" else None)


def tokenize_captions(
  tokenizer: CaptionTokenizer, captions: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, mask), both int32 (N, max_length), as the image tasks' batches hold them."""
  tokens, mask = tokenizer.encode(list(captions), max_length)
  return tokens.astype(np.int32), mask.astype(np.int32)


def check_same_images(
  vq_data: ml_collections.ConfigDict, data: ml_collections.ConfigDict, workdir: str
) -> None:
  """Named error unless the prior's `data` has the VQGAN run's image kind and resolution."""
  for key, found, expected in (
    ("kind", data_kind(data), data_kind(vq_data)),
    ("resolution", data.resolution, vq_data.resolution),
  ):
    if found != expected:
      raise ImageTokenDataError(
        f"data.{key}: the VQGAN in {workdir!r} was trained on {expected!r}, found {found!r}"
      )


def check_code_batch(
  batch: Mapping[str, np.ndarray], expected: Mapping[str, jax.ShapeDtypeStruct], num_codes: int
) -> None:
  """Named errors for a batch without the `expected` keys and shapes, or with codes out of range."""
  for key, spec in expected.items():
    if key not in batch:
      raise ImageTokenDataError(f"batch: expected key {key!r}, found keys {sorted(batch)}")
    if np.shape(batch[key]) != spec.shape:
      raise ImageTokenDataError(
        f"batch[{key!r}]: expected shape {spec.shape}, found {np.shape(batch[key])}"
      )
  codes = np.asarray(batch["codes"])
  if codes.min() < 0 or codes.max() >= num_codes:
    raise ImageTokenDataError(
      f"batch['codes']: expected ids in [0, {num_codes - 1}], found [{codes.min()}, {codes.max()}]"
    )


class TokenPriorTask(CaptionedDataTask):
  """A caption-conditioned prior over the codes of a `vqgan` run (see module docstring).

  Subclasses set `samplers` (the names `sample.sampler` may take) and
  `guidance_setting` (the config key that trains the unconditional model
  guidance needs), and write `guided`, `init`, `loss` and `sample_codes`. A
  relative `vq.workdir` is made absolute in `config` when the task is built.
  """

  dependent_runs = ("vq.workdir",)
  samplers: ClassVar[tuple[str, ...]] = ()
  guidance_setting: ClassVar[str] = ""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    absolute_dependent_runs(config, type(self))
    self.vq_task, vq_params = load_vqgan_run(config.vq.workdir)
    self.vq_params = {"vqgan": vq_params["vqgan"]}  # the discriminator is not needed
    check_same_images(self.vq_task.config.data, config.data, config.vq.workdir)
    self.resolution = config.data.resolution
    self.tokenizer = caption_tokenizer(config.data)
    self.max_text_length = config.text.max_length

  @property
  def token_grid(self) -> tuple[int, int]:
    """(h, w) codes per image."""
    return self.vq_task.token_grid

  @property
  def num_codes(self) -> int:
    return self.vq_task.num_codes

  @property
  def guided(self) -> bool:
    """Whether training learned the unconditional model (a dropped or null caption) that
    classifier-free guidance pushes away from; a family that learns one says so."""
    return False

  # -- data --------------------------------------------------------------

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return tokenize_captions(self.tokenizer, captions, self.max_text_length)

  def train_arrays(self) -> Mapping[str, np.ndarray]:
    """{"codes": (N, h, w) int32, "text_tokens", "text_mask": (N, L) int32} of the train split."""
    d = self.config.data
    split = make_captioned_split(d, "train", d.num_train_examples, d.seed)
    tokens, mask = self.tokenize(split["caption"])
    codes = encode_images_to_codes(self.vq_task, self.vq_params, split["image"])
    return dict(codes=codes, text_tokens=tokens, text_mask=mask)

  def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    h, w = self.token_grid
    text = jax.ShapeDtypeStruct((batch_size, self.max_text_length), jnp.int32)
    return dict(
      codes=jax.ShapeDtypeStruct((batch_size, h, w), jnp.int32), text_tokens=text, text_mask=text
    )

  def check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    expected = self.abstract_batch(len(batch.get("codes", ())))
    check_code_batch(batch, expected, self.num_codes)

  # -- sampling ----------------------------------------------------------

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
    """Codes (B, h, w) int32 for tokenized captions: the family's sampler, jittable.

    `sampler` and `num_steps` are static; `guidance_scale` is traced.
    """
    raise NotImplementedError

  @functools.partial(jax.jit, static_argnames=("self", "sampler", "num_steps"))
  def sample_images(
    self, params, vq_params, tokens, mask, rng, *, sampler: str, num_steps: int, guidance_scale
  ) -> jax.Array:
    """Images in [-1, 1] (B, H, W, 3): sampled codes through the VQGAN decoder, one program."""
    codes = self.sample_codes(
      params, tokens, mask, rng, sampler=sampler, num_steps=num_steps, guidance_scale=guidance_scale
    )
    return self.vq_task.decode_codes(vq_params, codes)

  def caption_sampler(self, params, sampler: str, num_steps: int, guidance_scale: float):
    """`sample_images` with options bound; guidance traced, so every chunk shares one program."""
    return functools.partial(
      self.sample_images,
      params,
      self.vq_params,
      sampler=sampler,
      num_steps=num_steps,
      guidance_scale=jnp.float32(guidance_scale),
    )

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    """Options with None replaced by `sample.{sampler, num_steps, guidance}`, checked."""
    s = self.config.sample
    sampler = s.sampler if sampler is None else sampler
    num_steps = s.num_steps if num_steps is None else num_steps
    guidance_scale = s.guidance if guidance_scale is None else guidance_scale
    if sampler not in self.samplers:
      raise SamplingOptionError("sampler", f"expected one of {self.samplers}, found {sampler!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
      raise SamplingOptionError("num_steps", f"expected an integer >= 1, found {num_steps!r}")
    if not np.isfinite(guidance_scale) or guidance_scale < 0:
      raise SamplingOptionError(
        "guidance_scale", f"expected a finite number >= 0, found {guidance_scale!r}"
      )
    if not self.guided and guidance_scale != 1.0:
      raise SamplingOptionError(
        "guidance_scale",
        f"expected 1: this run trained with {self.guidance_setting} off, so it has no "
        f"unconditional model to guide against; found {guidance_scale!r}",
      )
    return sampler, num_steps, float(guidance_scale)
