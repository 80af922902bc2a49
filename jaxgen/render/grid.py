"""Image grids with optional captions, written as PNG."""

from __future__ import annotations

import io
import os
import textwrap
from typing import Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont


def make_grid(
  images: np.ndarray,
  captions: Sequence[str] | None = None,
  *,
  ncols: int | None = None,
  scale: int = 1,
  pad: int = 2,
  caption_width: int | None = None,
) -> np.ndarray:
  """Tiles N×H×W×3 uint8 images into one picture, each with its caption below.

  Args:
    images: uint8 array [N, H, W, 3] (or [N, H, W, 1]).
    captions: optional text per image, wrapped under it.
    ncols: images per row (default: about square).
    scale: integer nearest-neighbour upscaling, for small images.
    pad: pixels between tiles.
    caption_width: characters per caption line (default fits the tile).
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
  if captions is not None and len(captions) != len(images):
    raise ValueError(f"captions must have one entry per image ({len(images)}), got {len(captions)}")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  n, h, w, _ = images.shape
  if scale > 1:
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))

  font = ImageFont.load_default()
  line_height = 11
  wrapped = None
  text_h = 0
  if captions is not None:
    width_chars = caption_width or max(8, w // 6)
    wrapped = [textwrap.wrap(c, width_chars) or [""] for c in captions]
    text_h = line_height * max(len(lines) for lines in wrapped) + 2

  cell_h, cell_w = h + text_h + pad, w + pad
  canvas = Image.new("RGB", (ncols * cell_w + pad, nrows * cell_h + pad), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    r, c = divmod(i, ncols)
    x, y = pad + c * cell_w, pad + r * cell_h
    canvas.paste(Image.fromarray(images[i]), (x, y))
    if wrapped is not None:
      for j, line in enumerate(wrapped[i]):
        draw.text((x, y + h + 1 + j * line_height), line, fill=(0, 0, 0), font=font)
  return np.asarray(canvas)


def save_png(path: str, image: np.ndarray) -> str:
  """Writes an H×W×3 uint8 array as PNG, creating parent folders (local or gs://)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
  path.write_bytes(buffer.getvalue())
  return os.fspath(path)
