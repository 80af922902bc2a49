"""Prompt handling and output for the caption-conditioned image tasks.

`CaptionedImageTask` is the `GenerativeTask` side of `TextToImageTask` (and
so `LatentDiffusionTask`), the token priors, the text GANs and
`SDFinetuneTask`: conditions, option checks, chunked generation and the
captioned PNG grid, over the functions below (prompt checks, chunked
sampling into uint8 images, the grid). `CaptionedDataTask` adds what every
task on the built-in captioned data shares: held-out captions, the judge,
the preview.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np

from jaxgen.data import judge as shapes_judge
from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.render.grid import make_grid, save_png
from jaxgen.tasks.image import captioned_data
from jaxgen.training.task import GenerativeTask, PromptError, SampleSpec, check_prompts

# (tokens, mask, rng) -> [-1, 1] images: one compiled program per chunk of prompts.
CaptionSampler = Callable[[np.ndarray, np.ndarray, jax.Array], jax.Array]


def caption_conditions(
  prompts: Sequence[str], seconds: float | None, task_name: str
) -> dict[str, np.ndarray]:
  """{"caption": (N,) str array}; named errors for no prompts, an empty one, or a duration."""
  if seconds is not None:
    raise PromptError(
      f"seconds: images have no duration; expected None for task {task_name!r}, found {seconds!r}"
    )
  return {"caption": np.asarray(check_prompts(prompts), dtype=str)}


def conditions_captions(conditions: Mapping[str, Any]) -> list[str]:
  """The checked prompts of `conditions["caption"]`; named error when the entry is missing."""
  if "caption" not in conditions:
    raise PromptError(f"conditions: expected a 'caption' entry, found keys {sorted(conditions)}")
  return check_prompts(conditions["caption"], "conditions['caption']")


def check_batch_size(batch_size: int) -> None:
  """Named error unless `batch_size` is a positive integer (bools are not)."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size: expected a positive integer, found {batch_size!r}")


def sample_in_chunks(
  sample_fn: CaptionSampler, tokens: np.ndarray, mask: np.ndarray, rng: jax.Array, batch_size: int
) -> np.ndarray:
  """uint8 images from `sample_fn(tokens, mask, rng)` -> [-1, 1] images, run in chunks.

  Chunks hold `batch_size` prompts (the last padded), so every chunk shares
  one compiled program; chunk i samples with `fold_in(rng, i)`.
  """

  def sample_chunk(i, tok, msk):
    return to_uint8(np.asarray(sample_fn(tok, msk, jax.random.fold_in(rng, i))))

  return map_padded_chunks(sample_chunk, [tokens, mask], min(batch_size, len(tokens)))


def save_captioned_grid(
  path: str,
  images: np.ndarray,
  captions: Sequence[Any],
  *,
  scale: int = 4,
  ncols: int | None = None,
) -> str:
  """Writes uint8 `images` as one PNG grid, each captioned; returns `path` as a str."""
  save_png(path, make_grid(images, [str(c) for c in captions], scale=scale, ncols=ncols))
  return str(path)


class CaptionedImageTask(GenerativeTask):
  """A task that draws images for captions and writes them as one captioned PNG grid.

  Subclasses supply `sampling_options`, `tokenize` and `caption_sampler`;
  `generate` checks everything before it compiles, then runs the sampler in chunks.
  """

  sample_spec = SampleSpec("grid.png", (".png",), ("sampler", "num_steps", "guidance_scale"))
  generate_batch_size: ClassVar[int] = 256  # prompts per chunk when `generate` is given None
  grid_scale: ClassVar[int] = 4  # `save_samples`' pixel upscaling when given None

  def sampling_options(
    self, sampler: str | None, num_steps: int | None, guidance_scale: float | None
  ) -> tuple[str, int, float]:
    """The options with None replaced by the config's defaults, checked (SamplingOptionErrors)."""
    raise NotImplementedError

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) of the captions, as `caption_sampler`'s program takes them."""
    raise NotImplementedError

  def caption_sampler(
    self, params, sampler: str, num_steps: int, guidance_scale: float
  ) -> CaptionSampler:
    """The sampling program for checked options, over `params`."""
    raise NotImplementedError

  def conditions(
    self, prompts: Sequence[str], *, seconds: float | None = None
  ) -> dict[str, np.ndarray]:
    """{"caption": (N,) str array}; named errors for no prompts, an empty one, or a duration."""
    return caption_conditions(prompts, seconds, self.config.task)

  def check_options(self, options: Mapping[str, Any]) -> None:
    """SamplingOptionErrors for `generate`'s sampler, num_steps and guidance_scale."""
    self.sampling_options(
      options.get("sampler"), options.get("num_steps"), options.get("guidance_scale")
    )

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
  ) -> dict[str, np.ndarray]:
    """{"image": uint8 (N, H, W, 3)} for `conditions["caption"]`.

    Options left None take the config's `sample.*` values; all are checked
    before anything compiles. Prompts run in chunks of `batch_size` (None:
    `generate_batch_size`; the last padded), so every chunk shares one compiled program.
    """
    captions = conditions_captions(conditions)
    sampler, num_steps, guidance_scale = self.sampling_options(sampler, num_steps, guidance_scale)
    batch_size = self.generate_batch_size if batch_size is None else batch_size
    check_batch_size(batch_size)
    tokens, mask = self.tokenize(captions)
    sample_fn = self.caption_sampler(params, sampler, num_steps, guidance_scale)
    return {"image": sample_in_chunks(sample_fn, tokens, mask, rng, batch_size)}

  def save_samples(
    self,
    samples: Mapping[str, np.ndarray],
    conditions: Mapping[str, Any],
    path: str,
    *,
    scale: int | None = None,
    ncols: int | None = None,
  ) -> str:
    """Writes the images as one PNG grid, each captioned with its prompt; returns `path`."""
    self.check_output(path)
    scale = self.grid_scale if scale is None else scale
    return save_captioned_grid(
      path, samples["image"], conditions["caption"], scale=scale, ncols=ncols
    )


class CaptionedDataTask(CaptionedImageTask):
  """A `CaptionedImageTask` trained on jaxgen's built-in captioned data (`captioned_data`):
  held-out captions, the shapes judge's evaluation and a preview grid of held-out captions."""

  def eval_split(self, num_examples: int) -> dict[str, np.ndarray]:
    """Held-out captioned images (combinations never seen in training)."""
    return captioned_data.held_out_split(self.config.data, num_examples)

  def evaluate(
    self, params, rng: jax.Array, *, num_examples: int | None = None, **options
  ) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """The shapes judge's accuracies (colour, position, shape, size, all) on samples for
    held-out captions, drawn with `generate`'s `options`.

    Returns (accuracies, the uint8 samples judged, their captions).
    """
    if captioned_data.data_kind(self.config.data) != "shapes":
      raise captioned_data.CaptionedDataError(
        f"data.kind: the judge reads captioned shapes, found {self.config.data.kind!r}"
      )
    data = self.eval_split(num_examples or self.config.eval.num_examples)
    captions = list(data["caption"])
    images = self.generate(params, self.conditions(captions), rng, **options)["image"]
    return shapes_judge.judge_images(images, data)["accuracy"], images, captions

  def preview(self, params, rng: jax.Array, num: int = 16) -> np.ndarray:
    captions = list(self.eval_split(num)["caption"])
    images = self.generate(params, self.conditions(captions), rng, batch_size=num)["image"]
    return make_grid(images, captions, scale=3, ncols=8)
