"""The built-in captioned image data the text-to-image tasks share: captioned shapes or the
procedural scenes' photos (`data.kind`), their splits, training arrays and batch shapes.

Held-out splits are the "test" split drawn with `data.seed + 1`: caption
combinations never seen in training, as the shapes judge scores them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.data import scenes, shapes


class CaptionedDataError(ValueError):
  """A `data` setting the built-in captioned data cannot serve."""


IMAGE_CHANNELS = shapes.CHANNELS
DATA_KINDS = ("shapes", "scenes")  # `data.kind`: captioned shapes, or the procedural scenes' photos


def data_kind(data: ml_collections.ConfigDict) -> str:
  """`data.kind` (default "shapes"), checked."""
  kind = data.get("kind", "shapes")
  if kind not in DATA_KINDS:
    raise CaptionedDataError(f"data.kind: expected one of {DATA_KINDS}, found {kind!r}")
  return kind


def scene_caption_words() -> list[str]:
  """Every word of the scenes' captions (`jaxgen.data.scenes`), e.g. "two green trees, a red house
  and a grey rock on grass by the water under a yellow sun"."""
  objects = [scenes.LABEL_NAMES[c] for c in scenes.OBJECT_COLOUR_NAMES]
  return [
    *("a", "two", "three", "and", ",", "on", "grass", "by", "the", "water", "under"),
    *scenes.OBJECT_COLOUR_NAMES.values(),
    *objects,
    *(name + "s" for name in objects),
  ]


def make_captioned_split(
  data: ml_collections.ConfigDict, split: str, count: int, seed: int
) -> dict[str, np.ndarray]:
  """`count` captioned images ("image", "caption", ...) of `data.kind`'s split."""
  if data_kind(data) == "scenes":
    return scenes.make_scenes(split, count, resolution=data.resolution, seed=seed)
  return shapes.make_split(split, count, resolution=data.resolution, seed=seed)


def captioned_shapes_arrays(
  data: ml_collections.ConfigDict, tokenize: Callable
) -> dict[str, np.ndarray]:
  """Training arrays: uint8 images and their int32 caption tokens + mask."""
  split = make_captioned_split(data, "train", data.num_train_examples, data.seed)
  tokens, mask = tokenize(list(split["caption"]))
  return dict(
    image=split["image"], text_tokens=tokens.astype(np.int32), text_mask=mask.astype(np.int32)
  )


def abstract_captioned_batch(
  batch_size: int, resolution: int, text_length: int
) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of a batch of uint8 RGB images with caption tokens + mask."""
  r, c, L = resolution, IMAGE_CHANNELS, text_length
  return dict(
    image=jax.ShapeDtypeStruct((batch_size, r, r, c), jnp.uint8),
    text_tokens=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
    text_mask=jax.ShapeDtypeStruct((batch_size, L), jnp.int32),
  )


def held_out_split(data: ml_collections.ConfigDict, count: int) -> dict[str, np.ndarray]:
  """`count` held-out captioned images (combinations never seen in training)."""
  return make_captioned_split(data, "test", count, data.seed + 1)
