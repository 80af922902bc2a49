"""Prompt handling and output for the caption-conditioned image tasks.

The parts of `TextToImageTask.conditions`, `generate` and `save_samples`
(and so `LatentDiffusionTask`'s) that need no task instance: prompt checks,
chunked sampling into uint8 images, and the captioned PNG grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.render.grid import make_grid, save_png
from jaxgen.training.task import PromptError, check_prompts


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
  sample_fn: Callable[[np.ndarray, np.ndarray, jax.Array], jax.Array],
  tokens: np.ndarray,
  mask: np.ndarray,
  rng: jax.Array,
  batch_size: int,
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
