"""The ffmpeg binary every reader and writer of videos runs (imageio-ffmpeg ships one)."""

from __future__ import annotations

import shutil


class FfmpegNotFoundError(RuntimeError):
  """Reading or writing a video needs an ffmpeg binary that is not installed."""


def find_ffmpeg(needed_for: str) -> str:
  """Path of an ffmpeg binary: imageio-ffmpeg's, else one on PATH.

  `needed_for` starts the error message ("writing .mp4", "decoding ...").
  """
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top

    return imageio_ffmpeg.get_ffmpeg_exe()
  except (ImportError, RuntimeError) as error:
    path = shutil.which("ffmpeg")
    if path is None:
      raise FfmpegNotFoundError(
        f"{needed_for} needs ffmpeg: `pip install imageio-ffmpeg` (ships a binary) or install "
        f"ffmpeg on PATH; found neither ({error})"
      ) from error
    return path
