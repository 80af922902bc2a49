"""What the image–text TFDS builders share: manual folder, features, image bytes, skipped images.

Images are stored encoded (`tfds.features.Image`) as their file's own bytes
when the file is an RGB or greyscale image in the data set's format, so
nothing is re-compressed; any other file (CMYK or palette JPEG, RGBA PNG,
WebP, a PNG named .jpg) is converted to RGB and encoded in the data set's
format (JPEG at quality 95 without chroma subsampling, or PNG). Every image is decoded once while
preparing, so a truncated or corrupt file is skipped (counted, with a
warning) rather than stored.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator

import tensorflow_datasets as tfds
from PIL import Image

from jaxgen.data import image_text

_LOG = logging.getLogger(__name__)
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
_JPEG_QUALITY = 95


def manual_dir(dl_manager: tfds.download.DownloadManager, dataset: str) -> str:
  """dl_manager.manual_dir as a str, or a named error saying how to pass it."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError as e:  # TFDS: not passed, missing or empty.
    raise image_text.ImageTextDataError(
      f"{dataset} is read from a local folder: pass download_config="
      f"tfds.download.DownloadConfig(manual_dir=...) pointing at it ({e})."
    ) from e


def features(
  encoding: str | None, **extra: tfds.features.FeatureConnector
) -> tfds.features.FeaturesDict:
  """Features "image" (in the `encoding` that `examples` stores), "captions", then `extra`."""
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Image(encoding_format=encoding),
      "captions": tfds.features.Sequence(tfds.features.Text()),
      **extra,
    }
  )


def encoded_image(path: str, encoding: str | None) -> bytes:
  """The bytes to store for one image file (see the module docstring); OSError if unreadable.

  `encoding` is 'jpeg', 'png' or None (keep JPEG and PNG files as they are,
  write anything else as PNG).
  """
  with open(path, "rb") as f:
    data = f.read()
  with Image.open(io.BytesIO(data)) as image:
    image.load()  # Decodes the whole file: truncated data raises OSError here.
    kept = (_PIL_FORMATS[encoding],) if encoding else tuple(_PIL_FORMATS.values())
    if image.format in kept and image.mode in ("RGB", "L"):
      return data
    out = io.BytesIO()
    pil_format = _PIL_FORMATS[encoding or "png"]
    # Full-resolution colour (no 4:2:0 chroma subsampling): the copy stays close to the file.
    options = {"quality": _JPEG_QUALITY, "subsampling": 0} if pil_format == "JPEG" else {}
    image.convert("RGB").save(out, format=pil_format, **options)
  return out.getvalue()


def examples(
  records: image_text.ImageTextRecords,
  encoding: str | None,
  to_example: Callable[[image_text.ImageTextRecord, bytes], dict],
  source: str,
) -> Iterator[tuple[str, dict]]:
  """(key, example) per record whose image decodes; the others are counted and logged."""
  unreadable = []
  for record in records:
    try:
      data = encoded_image(record.image_path, encoding)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      unreadable.append(f"{record.image_path} ({type(e).__name__}: {e})")
      continue
    yield record.key, to_example(record, data)
  if unreadable:
    _LOG.warning(
      "%s: skipped %d of %d images that do not decode: %s",
      source,
      len(unreadable),
      len(records),
      unreadable[:3],
    )
