"""Image-caption records -> training examples: decode, resize, crop, flip, caption, tokens.

`image_text_dataset(records, ...)` is the `ExampleDataset` an image-caption
task returns from `Task.train_dataset()`; its transform runs in grain's
worker processes (`grain_pipeline.GrainIterator`). A record it cannot use is
skipped and counted (`grain_pipeline.BadRecordError`): an image that does not
decode, no caption, or an image whose shorter side is below `min_size`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxgen.data.grain_pipeline import BadRecordError, ExampleDataset
from jaxgen.data.grain_sources import TarImageTextRecord, as_uint8_image, captions_from_bytes

CORRUPT_IMAGE = "corrupt image"
MISSING_CAPTION = "missing caption"
IMAGE_TOO_SMALL = "image too small"

Tokenize = Callable[[str], Mapping[str, np.ndarray]]


def read_image_and_captions(record: Any) -> tuple[bytes | np.ndarray, tuple[str, ...]]:
  """(encoded image bytes or uint8 pixels, captions) of any record kind in `grain_sources`."""
  if isinstance(record, TarImageTextRecord):
    captions = ()
    if record.caption is not None:
      captions = captions_from_bytes(record.read(record.caption), record.caption.name)
    return record.read(record.image), captions
  if isinstance(record, Mapping):  # ArrayRecord / TFDS example
    image = record.get("image")
    if image is None and "image_path" in record:
      image = _read_file(record["image_path"])
    captions = record.get("captions", record.get("caption", ()))
    return image, _as_captions(captions)
  return _read_file(record.image_path), _as_captions(record.captions)


def _read_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise BadRecordError(CORRUPT_IMAGE, f"cannot read {path!r}: {e}") from e


def _as_captions(value: Any) -> tuple[str, ...]:
  if isinstance(value, (str, bytes, np.str_, np.bytes_)):
    value = [value]
  captions = []
  for caption in np.asarray(value, dtype=object).ravel() if len(value) else ():
    if isinstance(caption, (bytes, np.bytes_)):
      caption = caption.decode("utf-8", errors="replace")
    if isinstance(caption, str) and caption.strip():
      captions.append(caption.strip())
  return tuple(captions)


def decode_rgb(image: bytes | np.ndarray, *, draft_size: int | None = None) -> Image.Image:
  """An RGB PIL image; `BadRecordError` for bytes that are not a whole image.

  `draft_size` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding
  when the image is still at least that large (much faster for big photos).
  """
  pixels = as_uint8_image(image)
  if pixels is not None:
    if pixels.shape[-1] != 3:
      raise BadRecordError(CORRUPT_IMAGE, f"expected 3 channels, found shape {pixels.shape}")
    return Image.fromarray(pixels)
  try:
    picture = Image.open(io.BytesIO(bytes(image)))
    if draft_size and picture.format == "JPEG":
      picture.draft("RGB", (draft_size, draft_size))
    picture.load()  # decodes now: a truncated file fails here, not later
    return picture.convert("RGB")
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise BadRecordError(CORRUPT_IMAGE, f"{type(e).__name__}: {e}") from e


def resize_shorter_side(picture: Image.Image, size: int) -> Image.Image:
  """Scales (bilinear, antialiased) so that the shorter side is `size`, keeping the aspect."""
  width, height = picture.size
  scale = size / min(width, height)
  new = (max(size, round(width * scale)), max(size, round(height * scale)))
  return picture if new == picture.size else picture.resize(new, Image.BILINEAR)


def crop_square(
  pixels: np.ndarray, size: int, rng: np.random.Generator | None = None
) -> np.ndarray:
  """The centre `size`×`size` square, or a uniformly random one when `rng` is given."""
  height, width = pixels.shape[:2]
  if rng is None:
    top, left = (height - size) // 2, (width - size) // 2
  else:
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
  return pixels[top : top + size, left : left + size]


@dataclasses.dataclass(frozen=True)
class ImageTextTransform:
  """record, rng -> {"image": uint8 (resolution, resolution, 3), captions or tokens}.

  Picklable (a frozen dataclass of plain values and `tokenize`), so grain can
  send it to its worker processes. See `image_text_dataset` for the fields.
  """

  resolution: int
  random_crop: bool = False
  random_flip: bool = False
  random_caption: bool = True
  min_size: int = 0
  tokenize: Tokenize | None = None

  def __call__(self, record: Any, rng: np.random.Generator) -> dict[str, Any]:
    image, captions = read_image_and_captions(record)
    if not captions:
      raise BadRecordError(MISSING_CAPTION, "the record has no non-empty caption")
    picture = decode_rgb(image, draft_size=max(self.resolution, self.min_size))
    if min(picture.size) < self.min_size:
      raise BadRecordError(
        IMAGE_TOO_SMALL,
        f"{picture.size[0]}×{picture.size[1]} pixels, expected a shorter side of at least "
        f"{self.min_size}",
      )
    pixels = np.asarray(resize_shorter_side(picture, self.resolution))
    pixels = crop_square(pixels, self.resolution, rng if self.random_crop else None)
    if self.random_flip and rng.random() < 0.5:
      pixels = pixels[:, ::-1]
    caption = captions[int(rng.integers(len(captions)))] if self.random_caption else captions[0]
    example = dict(image=np.ascontiguousarray(pixels, np.uint8))
    if self.tokenize is None:
      example["caption"] = caption
    else:
      example.update({k: np.asarray(v) for k, v in self.tokenize(caption).items()})
    return example


def image_text_dataset(
  records: Sequence[Any],
  *,
  resolution: int,
  random_crop: bool = False,
  random_flip: bool = False,
  random_caption: bool = True,
  min_size: int | None = None,
  tokenize: Tokenize | None = None,
  worker_count: int = 0,
  worker_buffer_size: int = 8,
  read_threads: int = 2,
) -> ExampleDataset:
  """Image-caption records as the `ExampleDataset` a task's `train_dataset()` returns.

  Each example: `image`, uint8 (resolution, resolution, 3) — decoded, its
  shorter side resized to `resolution` (bilinear, antialiased), then the
  centre square (or a random one with `random_crop`), flipped left-right with
  probability 1/2 under `random_flip` — and one of the record's captions
  (a random one under `random_caption`, else the first): under `caption` as a
  str, or, with `tokenize(caption) -> {key: array}`, those arrays instead (the
  trainer needs numbers; `tokenize` runs in the workers, so it must pickle).
  The randomness comes from the iterator's seed, epoch and position.

  Records: `jaxgen.data.image_text.ImageTextRecord` (or anything with
  `image_path` and `captions`), `grain_sources.TarImageTextRecord`s, or
  mappings with `image` and `captions` (ArrayRecord, TFDS); see `grain_sources`.

  Skipped and counted: an image that does not decode (`corrupt image`), a
  record without a non-empty caption (`missing caption`), an image whose
  shorter side is below `min_size` (`image too small`; default
  `resolution // 2`, 0 keeps every size).

  Example (a task's hook; `tokenize` a module-level function or a picklable object):

    def train_dataset(self):
      records = image_text.coco_records(self.config.data.manual_dir, split="train")
      return image_text_dataset(
        records, resolution=self.config.data.resolution, random_flip=True,
        tokenize=CaptionTokens(self.tokenizer_dir, max_length=77),
        worker_count=self.config.data.worker_count,
      )
  """
  if not isinstance(resolution, int) or resolution <= 0:
    raise ValueError(f"resolution: expected a positive integer, found {resolution!r}")
  min_size = resolution // 2 if min_size is None else min_size
  if not isinstance(min_size, int) or min_size < 0:
    raise ValueError(f"min_size: expected an integer >= 0, found {min_size!r}")
  if tokenize is not None and not callable(tokenize):
    raise ValueError(f"tokenize: expected a callable str -> dict, found {type(tokenize).__name__}")
  transform = ImageTextTransform(
    resolution, random_crop, random_flip, random_caption, min_size, tokenize
  )
  return ExampleDataset(
    records,
    transform,
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    read_threads=read_threads,
  )
