"""CLIPSIM of a folder of captioned videos: how well every frame agrees with its video's caption.

CLIPSIM (Wu et al., GODIVA 2021; reported by NÜWA, Make-A-Video and
VideoPoet) is the average CLIP similarity between the frames of a generated
video and the text it was generated from. Here, as in
`jaxgen.metrics.clip_score.clipsim`:

    frame score  = 100 * cos(E_image(frame), E_text(caption of its video))
    video score  = mean over the video's frames
    CLIPSIM      = max(mean over videos, 0)          (torchmetrics' clipped mean)

With equally long videos this is the mean over all frames, the number
`clip_score.clipsim` gives for a batch; papers print it on the cosine scale
(`cosine` = CLIPSIM / 100, e.g. Make-A-Video's 0.3049 on MSR-VTT).

The folder is what `jaxgen sample` writes beside a video grid
(`<stem>_clips/`: `0000.npy`, ... and `captions.json`, file name -> caption),
or any folder `jaxgen.metrics.video_folder` reads (`.npy` clips, frame
folders, `.gif`/`.mp4`) with a captions file keyed by entry name (or one
caption a line in natural name order). Every frame of every video is scored.
Headers are checked and captions matched before any pixel is decoded; videos
are then read a few at a time, so a folder of any size fits in memory.

The frame scorer is a function (frames, captions) -> 100 * cos per frame:
`transformers_frame_scorer` wraps a local transformers `CLIPModel` folder;
any CLIP (e.g. one trained on the procedural shapes) fits the same slot.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxgen.metrics import clip_score, video_folder

# (uint8 frames (N, H, W, 3), N captions) -> (N,) 100 * cos of each frame with its caption.
FrameScorer = Callable[[np.ndarray, Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class CaptionedVideos:
  """The videos of a folder (natural name order), their frame counts and captions."""

  paths: list[Path]
  num_frames: list[int]
  captions: list[str]

  @property
  def names(self) -> list[str]:
    return [p.name for p in self.paths]


@dataclasses.dataclass(frozen=True)
class CLIPSIMResult:
  """value: CLIPSIM (100 * cos, clipped at 0); per_video: each video's mean frame score."""

  value: float
  per_video: np.ndarray
  names: list[str]

  @property
  def cosine(self) -> float:
    """CLIPSIM on the cosine scale papers print."""
    return self.value / 100.0

  def summary(self) -> dict[str, float | int]:
    scores = self.per_video.astype(np.float64)
    return {
      "value": self.value,
      "cosine": self.cosine,
      "std": float(scores.std()),
      "num_videos": len(scores),
    }


def captions_file(folder: str | os.PathLike, captions: str | os.PathLike | None = None) -> str:
  """`captions` if given, else captions.json / captions.txt inside `folder` (as `jaxgen sample`
  writes), else a CaptionsError naming both."""
  if captions:
    return os.fspath(captions)
  for name in clip_score.CAPTION_FILE_NAMES:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise clip_score.CaptionsError(
    "--captions: expected a .json mapping each video's file name to its caption or a .txt with "
    f"one caption per video (natural name order); {os.fspath(folder)!r} holds no "
    f"{' or '.join(clip_score.CAPTION_FILE_NAMES)} either"
  )


def captioned_videos(
  folder: str | os.PathLike, captions: str | os.PathLike | None = None, *, name: str = "--fake"
) -> CaptionedVideos:
  """The videos of `folder` with one caption each, every header read and checked (named errors:
  an empty folder, an unreadable video, a missing or extra caption). Decodes no pixels."""
  paths = video_folder.list_videos(folder, name=name)
  infos = [video_folder.probe_video(p) for p in paths]
  texts = clip_score.read_captions(
    captions_file(folder, captions), [p.name for p in paths], name="--captions", images_name=name
  )
  return CaptionedVideos(paths, [info.num_frames for info in infos], texts)


def transformers_frame_scorer(scorer: clip_score.CLIPScorer) -> FrameScorer:
  """A local transformers CLIPModel (`clip_score.load_clip_scorer`) as a frame scorer."""
  return lambda frames, captions: clip_score.image_text_scores(scorer, frames, captions)


def video_groups(num_frames: Sequence[int], frames_per_call: int) -> list[list[int]]:
  """Consecutive video indices, grouped so each group holds about `frames_per_call` frames (at
  least one video): how many videos are decoded and scored at once."""
  if frames_per_call < 1:
    raise ValueError(f"frames_per_call: expected a positive count, found {frames_per_call}")
  groups, current, count = [], [], 0
  for i, frames in enumerate(num_frames):
    if current and count + frames > frames_per_call:
      groups.append(current)
      current, count = [], 0
    current.append(i)
    count += frames
  return groups + [current] if current else groups


def per_video_means(frame_scores: np.ndarray, num_frames: Sequence[int]) -> np.ndarray:
  """(V,) float64 mean of each video's frame scores; `frame_scores` holds all videos' frames in
  order, `num_frames[v]` of video v."""
  frame_scores = np.asarray(frame_scores, np.float64)
  if frame_scores.shape != (sum(num_frames),) or min(num_frames, default=1) < 1:
    raise ValueError(
      f"frame_scores: expected {sum(num_frames)} scores for videos of {list(num_frames)} frames "
      f"(each at least 1), found shape {frame_scores.shape}"
    )
  starts = np.cumsum([0, *num_frames[:-1]])
  return np.add.reduceat(frame_scores, starts) / np.asarray(num_frames, np.float64)


def folder_clipsim(
  videos: CaptionedVideos,
  score_frames: FrameScorer,
  *,
  frames_per_call: int = 256,
  progress: Callable[[int], None] | None = None,
) -> CLIPSIMResult:
  """CLIPSIM of `videos`: every frame scored with its video's caption by `score_frames`,
  `frames_per_call` frames (whole videos) at a time; `progress(n)` after every n videos."""
  scores = []
  for group in video_groups(videos.num_frames, frames_per_call):
    clips = [video_folder.load_clip(videos.paths[i], videos.num_frames[i]) for i in group]
    frames = np.concatenate(clips)
    captions = [videos.captions[i] for i, clip in zip(group, clips) for _ in range(len(clip))]
    scores.append(np.asarray(score_frames(frames, captions)))
    if progress is not None:
      progress(len(group))
  per_video = per_video_means(np.concatenate(scores), videos.num_frames)
  return CLIPSIMResult(clip_score.clipped_mean(per_video), per_video, videos.names)
