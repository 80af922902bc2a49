"""Image–caption records -> the training examples of the `sd_finetune` task.

Records come from `jaxgen.data.image_text.read_image_text` (COCO 2014/2017,
CUB-200-2011, image–caption folders). Each becomes an example by
`jaxgen.data.image_text_pipeline`'s transform: decode, shorter side resized
to the training resolution (bilinear, as diffusers' train_text_to_image.py),
a centre (or random) square crop, an optional flip, one of the image's
captions, tokenized with the pipeline's CLIP tokenizer:

  {"image": uint8 (R, R, 3), "text_tokens": int32 (model_max_length,)}

`data.loader="grain"` decodes on the fly in grain worker processes (the
task's `train_dataset`); `"memory"` decodes every record once into host
arrays (`train_arrays`: one caption per image, fixed by the data seed; flips
are then drawn on device by the loss).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgen.data.grain_pipeline import BadRecordError, ExampleDataset
from jaxgen.data.image_text import ImageTextDataError, read_image_text
from jaxgen.data.image_text_pipeline import ImageTextTransform, image_text_dataset

LOADERS = ("grain", "memory")

_LOG = logging.getLogger(__name__)


def check_manual_dir(data: Any) -> str:
  """`data.manual_dir` as a str; a named error when it is unset or not a folder."""
  manual_dir, kind = data.get("manual_dir"), data.get("kind")
  wanted = f"data.manual_dir: expected the local folder of the {kind!r} dataset"
  if not manual_dir:
    raise ImageTextDataError(f"{wanted} (data.manual_dir=DIR), found {manual_dir!r}")
  if "://" not in str(manual_dir) and not os.path.isdir(manual_dir):
    raise ImageTextDataError(f"{wanted}, found no folder at {manual_dir!r}")
  return str(manual_dir)


def check_loader(data: Any) -> str:
  loader = data.get("loader", "grain")
  if loader not in LOADERS:
    raise ValueError(f"data.loader: expected one of {LOADERS}, found {loader!r}")
  return loader


def read_records(data: Any) -> list:
  """The records of `data.kind` / `data.manual_dir` / `data.split`, at most `data.max_examples`."""
  manual_dir = check_manual_dir(data)
  records = list(read_image_text(data.kind, manual_dir, data.split))
  if data.get("max_examples"):
    records = records[: data.max_examples]
  if not records:
    raise ImageTextDataError(
      f"data.manual_dir: found no {data.split!r} records of kind {data.kind!r} in {manual_dir!r}"
    )
  return records


class CaptionTokens:
  """caption -> {"text_tokens": int32 (L,)}, padded and truncated as diffusers' SD scripts.

  Picklable (it holds the tokenizer object), so grain can run it in workers.
  """

  def __init__(self, tokenizer: Any):
    self.tokenizer = tokenizer

  def __call__(self, caption: str) -> Mapping[str, np.ndarray]:
    ids = self.tokenizer(
      [caption],
      padding="max_length",
      max_length=self.tokenizer.model_max_length,
      truncation=True,
      return_tensors="np",
    )["input_ids"]
    return {"text_tokens": np.asarray(ids[0], np.int32)}


def _transform_options(data: Any, resolution: int, tokenizer: Any) -> dict[str, Any]:
  return dict(
    resolution=resolution,
    random_crop=not data.get("center_crop", True),
    random_flip=bool(data.get("random_flip", False)),
    tokenize=CaptionTokens(tokenizer),
  )


def train_dataset(data: Any, resolution: int, tokenizer: Any) -> ExampleDataset:
  """The grain-fed training split: records decoded, cropped, flipped and tokenized in workers."""
  return image_text_dataset(
    read_records(data),
    worker_count=data.get("worker_count", 0),
    **_transform_options(data, resolution, tokenizer),
  )


def train_arrays(data: Any, resolution: int, tokenizer: Any) -> dict[str, np.ndarray]:
  """Every record decoded once into host arrays (no flip: the loss flips on device).

  Example i uses the generator of (data.seed, i), so its crop and caption are
  the same in every run. Bad records are skipped with a warning that counts
  them; none left is a named error.
  """
  records = read_records(data)
  options = dict(_transform_options(data, resolution, tokenizer), random_flip=False)
  transform = ImageTextTransform(min_size=resolution // 2, **options)
  examples, bad = [], []
  for i, record in enumerate(records):
    try:
      examples.append(transform(record, np.random.default_rng((data.seed, i))))
    except BadRecordError as e:
      bad.append(f"{getattr(record, 'image_path', i)}: {e}")
  if bad:
    _LOG.warning("skipped %d of %d image–caption records: %s", len(bad), len(records), bad[:3])
  if not examples:
    raise ImageTextDataError(f"data: none of the {len(records)} records could be used: {bad[:3]}")
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}
