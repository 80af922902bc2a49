"""Reading image folders and streaming them through the FID InceptionV3.

Images are read as RGB uint8 (PIL `convert("RGB")`, as pytorch-fid) in sorted
file-name order. 16-bit grayscale files (PIL modes I;16 and I) are scaled,
not clipped, into that range: `load_image` rounds v * 255 / 65535, and
`load_image_float` keeps the full precision as float32 in [0, 255] (SSIM and
PSNR read that). Pillow decodes 16-bit colour PNGs at 8 bits (their high
byte); `warn_reduced_precision` says so. A file that cannot be read is an
`UnreadableImageError` naming it. Batches are padded to a fixed `batch_size`, so the network
compiles once per image size; consecutive images of one size share a batch,
and a size change starts a new batch (mixed-size folders work, each distinct
size compiling once). Feature statistics are accumulated batch by batch in
float64, so a 50k-image folder never sits in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from jaxgen.metrics import frechet
from jaxgen.models import inception

# The extensions pytorch-fid accepts.
IMAGE_EXTENSIONS = frozenset(
  {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)
# PIL modes of single-channel images with 16-bit values (mode I: how PNG/TIFF 16-bit may open).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
SIXTEEN_BIT_MAX = 65535.0

_LOG = logging.getLogger(__name__)


class ImageFolderError(ValueError):
  """An image folder is unusable for the requested metric."""


class UnreadableImageError(ImageFolderError):
  """An image file cannot be opened or decoded, or holds pixels of no known range."""


class EmptyFolderError(ImageFolderError):
  """A folder holds no image files."""


class MixedImageSizesError(ImageFolderError):
  """Images that must share one size do not."""


def list_images(folder: str | os.PathLike, *, name: str = "folder") -> list[Path]:
  """Image files directly inside `folder`, sorted by name. `name` labels errors."""
  folder = Path(folder)
  if not folder.is_dir():
    raise ImageFolderError(f"{name} must be a directory of images, {str(folder)!r} is not one")
  paths = sorted(
    p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
  )
  if not paths:
    raise EmptyFolderError(
      f"{name} {str(folder)!r} holds no images (extensions {sorted(IMAGE_EXTENSIONS)})"
    )
  return paths


def read_with_pil(path: str | os.PathLike, read: Callable[[Image.Image], Any]) -> Any:
  """`read(image)` of the opened file; a file PIL cannot open or decode is named."""
  try:
    with Image.open(path) as image:
      return read(image)
  except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
    raise UnreadableImageError(
      f"{os.fspath(path)}: cannot read the image ({type(error).__name__}: {error}); "
      "remove or replace the file"
    ) from error


def _rgb_float(image: Image.Image, path: str | os.PathLike) -> np.ndarray:
  """(H, W, 3) float32 in [0, 255]; 16-bit values scaled at full precision."""
  if image.mode in SIXTEEN_BIT_MODES:
    values = np.asarray(image, np.float64)
    if values.size and (values.min() < 0 or values.max() > SIXTEEN_BIT_MAX):
      raise UnreadableImageError(
        f"{os.fspath(path)}: expected 16-bit values in [0, 65535] (PIL mode {image.mode}), "
        f"found [{values.min():g}, {values.max():g}]"
      )
    gray = (values * (255.0 / SIXTEEN_BIT_MAX)).astype(np.float32)
    return np.repeat(gray[..., None], 3, axis=-1)
  if image.mode == "F":
    raise UnreadableImageError(
      f"{os.fspath(path)}: floating-point pixels (PIL mode F) have no known range; "
      "expected 8- or 16-bit images"
    )
  return np.asarray(image.convert("RGB"), np.float32)


def load_image_float(path: str | os.PathLike) -> np.ndarray:
  """(H, W, 3) float32 RGB in [0, 255], 16-bit files at full precision."""
  return read_with_pil(path, lambda image: _rgb_float(image, path))


def load_image(path: str | os.PathLike) -> np.ndarray:
  """(H, W, 3) uint8 RGB; 16-bit files scaled (rounded), not clipped, to [0, 255]."""

  def read(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
      return np.round(_rgb_float(image, path)).astype(np.uint8)
    return np.asarray(image.convert("RGB"))

  return read_with_pil(path, read)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(height, width) read from the file header, without decoding pixels."""
  width, height = read_with_pil(path, lambda image: image.size)
  return height, width


def _is_sixteen_bit_colour_png(path: Path) -> bool:
  # PNG signature (8 bytes), IHDR length and type (8), width, height (8), bit depth, colour type.
  with open(path, "rb") as f:
    header = f.read(26)
  return (
    header[:8] == b"\x89PNG\r\n\x1a\n"
    and len(header) == 26
    and header[24] == 16
    and (
      header[25] in (2, 6)  # RGB, RGBA
    )
  )


def warn_reduced_precision(paths: Sequence[Path], *, name: str = "images") -> int:
  """Logs a warning if some paths are 16-bit colour PNGs (read at 8 bits); returns their count."""
  count = sum(1 for p in paths if p.suffix.lower() == ".png" and _is_sixteen_bit_colour_png(p))
  if count:
    _LOG.warning(
      "%s: %d of %d images are 16-bit colour PNGs, which Pillow decodes at 8 bits (high byte): "
      "they are scaled correctly but compared at 8-bit precision",
      name,
      count,
      len(paths),
    )
  return count


def common_image_size(paths: Sequence[Path], *, name: str = "images") -> tuple[int, int]:
  """The one (height, width) all `paths` share; MixedImageSizesError otherwise."""
  first = image_size(paths[0])
  for path in paths[1:]:
    size = image_size(path)
    if size != first:
      raise MixedImageSizesError(
        f"{name} must all have one size: {paths[0].name} is {first[0]}x{first[1]} but "
        f"{path.name} is {size[0]}x{size[1]} (height x width)"
      )
  return first


def iterate_batches(
  paths: Sequence[Path], batch_size: int, *, full_precision: bool = False
) -> Iterator[tuple[np.ndarray, int]]:
  """Yields (batch, num_valid): (batch_size, H, W, 3), zero-padded after num_valid rows.

  Pixels are uint8 (`load_image`), or float32 in [0, 255] with `full_precision`
  (`load_image_float`, for 16-bit files).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  load = load_image_float if full_precision else load_image
  pending: list[np.ndarray] = []
  for path in paths:
    image = load(path)
    if pending and (image.shape != pending[0].shape or len(pending) == batch_size):
      yield _pad_batch(pending, batch_size), len(pending)
      pending = []
    pending.append(image)
  if pending:
    yield _pad_batch(pending, batch_size), len(pending)


def _pad_batch(images: list[np.ndarray], batch_size: int) -> np.ndarray:
  batch = np.zeros((batch_size,) + images[0].shape, images[0].dtype)
  batch[: len(images)] = np.stack(images)
  return batch


def iterate_inception_outputs(
  paths: Sequence[Path],
  variables: Any,
  *,
  batch_size: int,
  progress: bool = True,
  description: str = "inception",
) -> Iterator[inception.InceptionOutputs]:
  """Streams InceptionOutputs (host numpy, padding removed) batch by batch."""
  with tqdm(total=len(paths), unit="img", desc=description, disable=not progress) as bar:
    for batch, num_valid in iterate_batches(paths, batch_size):
      images = batch.astype(np.float32) / 255.0  # pytorch-fid's ToTensor
      outputs = jax.device_get(inception.inception_outputs(variables, images))
      bar.update(num_valid)
      yield jax.tree_util.tree_map(lambda x: np.asarray(x[:num_valid]), outputs)


def pool_feature_statistics(
  paths: Sequence[Path],
  variables: Any,
  *,
  batch_size: int,
  progress: bool = True,
  description: str = "inception",
) -> frechet.GaussianStatistics:
  """Float64 mean/covariance statistics of the 2048-d pool3 features, accumulated per batch."""
  stats = frechet.empty_statistics(inception.POOL_FEATURES)
  for outputs in iterate_inception_outputs(
    paths, variables, batch_size=batch_size, progress=progress, description=description
  ):
    stats = frechet.update_statistics(stats, outputs.pool)
  return stats


def collect_inception_outputs(
  paths: Sequence[Path],
  variables: Any,
  *,
  batch_size: int,
  progress: bool = True,
  description: str = "inception",
) -> inception.InceptionOutputs:
  """All InceptionOutputs of `paths` concatenated (N x 2048 + 2 x N x 1008 floats)."""
  outputs = list(
    iterate_inception_outputs(
      paths, variables, batch_size=batch_size, progress=progress, description=description
    )
  )
  return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outputs)
