"""Reading image folders and streaming them through the FID InceptionV3.

Images are read as RGB uint8 (PIL `convert("RGB")`, as pytorch-fid) in sorted
file-name order. Batches are padded to a fixed `batch_size`, so the network
compiles once per image size; consecutive images of one size share a batch,
and a size change starts a new batch (mixed-size folders work, each distinct
size compiling once). Feature statistics are accumulated batch by batch in
float64, so a 50k-image folder never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from jaxgen.metrics import frechet
from jaxgen.models import inception

# The extensions pytorch-fid accepts.
IMAGE_EXTENSIONS = frozenset(
  {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)


class ImageFolderError(ValueError):
  """An image folder is unusable for the requested metric."""


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


def load_image(path: str | os.PathLike) -> np.ndarray:
  """(H, W, 3) uint8 RGB."""
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(height, width) read from the file header, without decoding pixels."""
  with Image.open(path) as image:
    width, height = image.size
  return height, width


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


def iterate_batches(paths: Sequence[Path], batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Yields (batch, num_valid): (batch_size, H, W, 3) uint8, zero-padded after num_valid rows."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  pending: list[np.ndarray] = []
  for path in paths:
    image = load_image(path)
    if pending and (image.shape != pending[0].shape or len(pending) == batch_size):
      yield _pad_batch(pending, batch_size), len(pending)
      pending = []
    pending.append(image)
  if pending:
    yield _pad_batch(pending, batch_size), len(pending)


def _pad_batch(images: list[np.ndarray], batch_size: int) -> np.ndarray:
  batch = np.zeros((batch_size,) + images[0].shape, np.uint8)
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
