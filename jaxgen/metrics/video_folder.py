"""Reading a folder of videos as uint8 clips for FVD.

Each entry directly inside the folder is one video, in natural name order
(`clip2` before `clip10`):

* `*.npy`: a (T, H, W, 3) uint8 array;
* a sub-folder of frame images (`*.png`, `*.jpg`, ...), frames in natural
  name order, read as RGB;
* `*.gif`, and `*.mp4`/`*.avi`/`*.mov`/`*.mkv`/`*.webm`, through imageio when
  it is installed (GIF needs only Pillow; the others need imageio's ffmpeg or
  pyav plugin: `pip install imageio[ffmpeg]`).

Other files are ignored. `probe_videos` reads only headers (npy headers,
image headers, container metadata) and checks frame counts and sizes before
any pixel is decoded or any network compiled. A clip is a video's first
`clip_length` frames (as StyleGAN-V's FVD); every video of one folder must
share one frame size.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxgen.metrics import image_folder

NUMPY_EXTENSION = ".npy"
FRAME_EXTENSIONS = image_folder.IMAGE_EXTENSIONS
IMAGEIO_EXTENSIONS = frozenset({".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm"})


class VideoFolderError(ValueError):
  """A video folder is unusable for the requested metric."""


class EmptyVideoFolderError(VideoFolderError):
  """A folder (or a frame sub-folder) holds no videos (or frames)."""


class TooFewFramesError(VideoFolderError):
  """A video is shorter than the clip length."""


class MixedVideoSizesError(VideoFolderError):
  """Videos (or the frames of one video) that must share one size do not."""


class VideoReadError(VideoFolderError):
  """A video file cannot be read (wrong array layout, missing decoder)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a header says about one video."""

  path: Path
  num_frames: int
  height: int
  width: int

  @property
  def size(self) -> tuple[int, int]:
    return self.height, self.width


def _natural_key(path: Path) -> list[object]:
  """`frame2` sorts before `frame10`: digit runs compare as numbers."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _frame_paths(folder: Path) -> list[Path]:
  return sorted(
    (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS),
    key=_natural_key,
  )


def _is_video(path: Path) -> bool:
  if path.is_dir():
    return True
  return path.is_file() and path.suffix.lower() in {NUMPY_EXTENSION, *IMAGEIO_EXTENSIONS}


def list_videos(folder: str | os.PathLike, *, name: str = "folder") -> list[Path]:
  """Videos directly inside `folder` (files and frame sub-folders), in natural order."""
  folder = Path(folder)
  if not folder.is_dir():
    raise VideoFolderError(f"{name} must be a directory of videos, {str(folder)!r} is not one")
  paths = sorted((p for p in folder.iterdir() if _is_video(p)), key=_natural_key)
  if not paths:
    raise EmptyVideoFolderError(
      f"{name} {str(folder)!r} holds no videos: expected {NUMPY_EXTENSION} arrays, "
      f"sub-folders of frames or {sorted(IMAGEIO_EXTENSIONS)} files"
    )
  return paths


def _imageio():
  if importlib.util.find_spec("imageio") is None:
    raise VideoReadError(
      "reading .gif/.mp4 videos needs imageio (pip install imageio[ffmpeg]); "
      "or store each clip as a (T, H, W, 3) uint8 .npy file or a folder of PNG frames"
    )
  import imageio.v3 as iio  # Imported here: only container formats need it.

  return iio


def _imageio_call(path: Path, fn, **kwargs):
  try:
    return fn(path, **kwargs)
  except (OSError, ValueError, RuntimeError) as error:
    raise VideoReadError(
      f"cannot read video {str(path)!r} ({error}); .mp4 and similar need imageio's ffmpeg "
      "or pyav plugin (pip install imageio[ffmpeg])"
    ) from error


def probe_video(path: str | os.PathLike) -> VideoInfo:
  """Frame count and size of one video from its header(s), without decoding pixels."""
  path = Path(path)
  if path.is_dir():
    frames = _frame_paths(path)
    if not frames:
      raise EmptyVideoFolderError(f"frame folder {str(path)!r} holds no frame images")
    try:
      size = image_folder.common_image_size(frames, name=f"the frames of {str(path)!r}")
    except image_folder.MixedImageSizesError as error:
      raise MixedVideoSizesError(str(error)) from error
    return VideoInfo(path, len(frames), *size)
  if path.suffix.lower() == NUMPY_EXTENSION:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
      raise VideoReadError(
        f"{str(path)!r} must hold a (T, H, W, 3) uint8 array, found {array.dtype} {array.shape}"
      )
    return VideoInfo(path, *array.shape[:3])
  iio = _imageio()
  shape = _imageio_call(path, iio.improps, index=None).shape
  if len(shape) not in (3, 4):
    raise VideoReadError(f"{str(path)!r} must decode to (T, H, W[, C]) frames, found {shape}")
  return VideoInfo(path, *shape[:3])


def probe_videos(
  paths: Sequence[Path], *, clip_length: int, name: str = "videos"
) -> tuple[int, int]:
  """Checks every video has >= clip_length frames and all share one size; returns (H, W)."""
  infos = [probe_video(p) for p in paths]
  short = [info for info in infos if info.num_frames < clip_length]
  if short:
    listed = ", ".join(f"{info.path.name} ({info.num_frames})" for info in short[:5])
    raise TooFewFramesError(
      f"{name}: every video needs at least {clip_length} frames for {clip_length}-frame clips; "
      f"{len(short)} of {len(infos)} have fewer: {listed}"
    )
  first = infos[0]
  for info in infos[1:]:
    if info.size != first.size:
      raise MixedVideoSizesError(
        f"{name} must all have one frame size: {first.path.name} is "
        f"{first.height}x{first.width} but {info.path.name} is {info.height}x{info.width} "
        "(height x width)"
      )
  return first.size


def _rgb(frames: np.ndarray) -> np.ndarray:
  """(T, H, W[, C]) decoded frames -> (T, H, W, 3): grey repeated, alpha dropped."""
  if frames.ndim == 3:
    frames = frames[..., None]
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  return frames[..., :3]


def load_clip(path: str | os.PathLike, clip_length: int) -> np.ndarray:
  """The first `clip_length` frames of a video as (clip_length, H, W, 3) uint8."""
  path = Path(path)
  if path.is_dir():
    frames = np.stack([image_folder.load_image(p) for p in _frame_paths(path)[:clip_length]])
  elif path.suffix.lower() == NUMPY_EXTENSION:
    frames = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[:clip_length])
  else:
    iio = _imageio()
    frames = _rgb(np.asarray(_imageio_call(path, iio.imread, index=None))[:clip_length])
    if frames.dtype != np.uint8:
      raise VideoReadError(f"{str(path)!r} must decode to uint8 frames, found {frames.dtype}")
  if frames.shape[0] < clip_length:
    raise TooFewFramesError(
      f"{str(path)!r} has {frames.shape[0]} frames, fewer than the clip length {clip_length}"
    )
  return frames


def iterate_clip_batches(
  paths: Sequence[Path], *, clip_length: int, batch_size: int
) -> Iterator[tuple[np.ndarray, int]]:
  """Yields (batch, num_valid): (batch_size, clip_length, H, W, 3) uint8, zero-padded after num_valid.

  The fixed batch shape lets the network compile once per folder.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  for start in range(0, len(paths), batch_size):
    clips = [load_clip(p, clip_length) for p in paths[start : start + batch_size]]
    if any(clip.shape != clips[0].shape for clip in clips):
      shapes = sorted({clip.shape for clip in clips})
      raise MixedVideoSizesError(f"clips of one batch must share one shape, found {shapes}")
    batch = np.zeros((batch_size,) + clips[0].shape, np.uint8)
    batch[: len(clips)] = np.stack(clips)
    yield batch, len(clips)
