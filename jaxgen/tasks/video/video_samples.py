"""Clips in and out of the video tasks: given frames, chunked sampling, grids, files.

`save_video_grid` writes what `jaxgen sample` promises on a video run: one
captioned grid of all clips as a GIF or MP4 (every frame of the grid is
`jaxgen.render.grid.make_grid` of that frame of every clip), and each clip
as `<stem>_clips/<i>.npy` (uint8 (T, H, W, 3)) with `captions.json`
(file name -> caption), a folder `jaxgen eval --metric fvd` reads as it is
(`jaxgen.metrics.video_folder`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
import tqdm

from jaxgen.data.chunks import map_padded_chunks
from jaxgen.data.images import to_uint8
from jaxgen.render.grid import make_grid
from jaxgen.render.motion import find_ffmpeg, write_video
from jaxgen.tasks.video.video_conditioning import VideoModeError

OUT_EXTENSIONS = (".gif", ".mp4")
CLIPS_SUFFIX = "_clips"


class FirstFrameError(ValueError):
  """A --first-frame image the video model cannot start from (size, channels, dtype)."""


class VideoArrayError(ValueError):
  """Video arrays (a batch, given frames) of the wrong shape or dtype."""


class GivenFramesError(ValueError):
  """A --frames clip the video model cannot take its given frames from (count, size, dtype)."""


def check_videos(videos, frames: int, resolution: int, name: str) -> None:
  """Named error unless `videos` is uint8 (N, frames, resolution, resolution, 3)."""
  videos = np.asarray(videos)
  expected = (frames, resolution, resolution, 3)
  if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[1:] != expected:
    raise VideoArrayError(
      f"{name}: expected uint8 clips (N, {', '.join(map(str, expected))}), found "
      f"{videos.dtype} {videos.shape}"
    )


def check_first_frame(image, resolution: int, name: str) -> np.ndarray:
  """The image as uint8 (resolution, resolution, 3); FirstFrameError naming what is wrong."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise FirstFrameError(f"--first-frame {name!r}: expected 8-bit pixels, found {image.dtype}")
  if image.ndim != 3 or image.shape[-1] != 3:
    found = "one channel (grey or palette)" if image.ndim == 2 else f"shape {image.shape}"
    raise FirstFrameError(
      f"--first-frame {name!r}: expected an RGB image ({resolution}, {resolution}, 3), "
      f"found {found}"
    )
  if image.shape[:2] != (resolution, resolution):
    raise FirstFrameError(
      f"--first-frame {name!r}: expected {resolution}x{resolution} pixels (the run's "
      f"resolution), found {image.shape[1]}x{image.shape[0]}"
    )
  return image


def place_given_frames(clip, known: np.ndarray, resolution: int, name: str) -> np.ndarray:
  """uint8 (T, r, r, 3): `clip`'s frames where the (T,) mask `known` is 1, zeros elsewhere.

  `clip` (uint8 (L, r, r, 3)) is either a whole clip, L >= T (its first T
  frames; only the known ones are read), or just the known frames in order
  (frame 0 for a first frame; frames 0, k, 2k, ... for keyframes).
  """
  clip = np.asarray(clip)
  length, positions = len(known), np.flatnonzero(known)
  if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
    raise GivenFramesError(
      f"--frames {name!r}: expected 8-bit RGB frames (L, {resolution}, {resolution}, 3), found "
      f"{clip.dtype} {clip.shape}"
    )
  if clip.shape[1:3] != (resolution, resolution):
    raise GivenFramesError(
      f"--frames {name!r}: expected {resolution}x{resolution} pixels (the run's resolution), "
      f"found {clip.shape[2]}x{clip.shape[1]}"
    )
  if len(clip) >= length:
    given = clip[:length][positions]
  elif len(clip) == len(positions):
    given = clip
  else:
    raise GivenFramesError(
      f"--frames {name!r}: expected a whole clip (at least {length} frames) or only the "
      f"{len(positions)} given frames (frames {positions.tolist()}), found {len(clip)} frames"
    )
  frames = np.zeros((length, resolution, resolution, 3), np.uint8)
  frames[positions] = given
  return frames


def known_frames(frames, mode: str, count: int, length: int, resolution: int) -> np.ndarray:
  """float32 (count, length, H, W, 3) in [-1, 1]: the given frames (zeros for mode "text")."""
  if mode == "text":
    if frames is not None:
      raise VideoArrayError(
        "conditions['frames']: mode 'text' generates every frame; expected no frames, found "
        f"an array of shape {np.shape(frames)}"
      )
    return np.zeros((count, length, resolution, resolution, 3), np.float32)
  if frames is None:
    raise VideoModeError(
      "mode",
      f"{mode!r} starts from given frames; expected conditions['frames'] (N, {length}, "
      f"{resolution}, {resolution}, 3) uint8, found none",
    )
  check_videos(frames, length, resolution, "conditions['frames']")
  if len(frames) != count:
    raise VideoArrayError(
      f"conditions['frames']: expected one clip per caption ({count}), found {len(frames)}"
    )
  return np.asarray(frames, np.float32) / 127.5 - 1.0


def sample_in_chunks(
  sample_fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray], rng: jax.Array, batch_size: int
) -> np.ndarray:
  """uint8 clips from `sample_fn(*chunk, rng)` -> [-1, 1] clips, in equal chunks, with a
  progress bar over them; chunk i samples with `fold_in(rng, i)`."""
  size = min(batch_size, len(arrays[0]))
  bar = tqdm.tqdm(total=-(-len(arrays[0]) // size), desc="video chunks", unit="chunk")

  def sample_chunk(i, *chunk):
    clips = to_uint8(np.asarray(sample_fn(*chunk, jax.random.fold_in(rng, i))))
    bar.update(1)
    return clips

  try:
    return map_padded_chunks(sample_chunk, list(arrays), size)
  finally:
    bar.close()


def grid_frames(
  videos: np.ndarray, captions: Sequence[str], *, scale: int, ncols: int | None
) -> np.ndarray:
  """uint8 (T, H', W', 3): frame t is the captioned grid of every clip's frame t (even sides)."""
  frames = np.stack(
    [make_grid(videos[:, t], captions, scale=scale, ncols=ncols) for t in range(videos.shape[1])]
  )
  h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # libx264's yuv420p needs even sides
  return frames[:, :h, :w]


def clips_dir(path: str) -> str:
  """Where `save_video_grid` puts the `.npy` clips of the grid at `path`."""
  return os.path.splitext(path)[0] + CLIPS_SUFFIX


def save_video_grid(
  path: str,
  videos: np.ndarray,
  captions: Sequence[str],
  *,
  scale: int = 4,
  ncols: int | None = None,
  fps: float = 8.0,
) -> str:
  """Writes the captioned grid (GIF or MP4 by `path`'s ending) and the `.npy` clips; returns path."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in OUT_EXTENSIONS:
    raise ValueError(f"path: expected a file ending in one of {OUT_EXTENSIONS}, found {path!r}")
  if extension == ".mp4":
    find_ffmpeg()  # before anything is drawn
  videos = np.asarray(videos)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  frames = grid_frames(videos, captions, scale=scale, ncols=ncols)
  write_video(path, frames, fps)
  folder = clips_dir(path)
  os.makedirs(folder, exist_ok=True)
  names = {}
  for i, (clip, caption) in enumerate(zip(videos, captions)):
    name = f"{i:04d}.npy"
    np.save(os.path.join(folder, name), clip)
    names[name] = caption
  with open(os.path.join(folder, "captions.json"), "w") as f:
    json.dump(names, f, indent=1)
  return str(path)


def filmstrip(videos: np.ndarray, captions: Sequence[str], columns: int = 8) -> np.ndarray:
  """uint8 picture: one row per clip, `columns` evenly spaced frames, the caption under the first."""
  frames = videos.shape[1]
  picks = np.unique(np.linspace(0, frames - 1, min(columns, frames)).round().astype(int))
  cells = videos[:, picks].reshape(-1, *videos.shape[2:])
  labels = [
    captions[i] if j == 0 else f"t={picks[j]}"
    for i in range(len(videos))
    for j in range(len(picks))
  ]
  return make_grid(cells, labels, ncols=len(picks), scale=3)
