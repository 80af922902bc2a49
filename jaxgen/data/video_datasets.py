"""Reader of the released UCF-101 folder: action videos as fixed-length clips with captions.

UCF-101 (Soomro et al. 2012, crcv.ucf.edu/data/UCF101.php) is 13,320 YouTube
videos of 101 human actions, 320x240 at 25 fps, in 25 groups per action
(clips of a group come from one longer video). Text-to-video work trains on
it with the class name as the prompt, so each clip gets the caption
"a person doing <class in words>". Two files from the site, unpacked:

    UCF-101/<Class>/v_<Class>_g<XX>_c<YY>.avi      UCF101.rar (XviD .avi)
    ucfTrainTestlist/classInd.txt                  "1 ApplyEyeMakeup" ... "101 YoYo" (1-based)
    ucfTrainTestlist/trainlist0{1,2,3}.txt         "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    ucfTrainTestlist/testlist0{1,2,3}.txt          "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
                                                   (UCF101TrainTestSplits-RecognitionTask.zip)

`root` is the folder holding both `UCF-101/` and `ucfTrainTestlist/`, or the
`UCF-101/` folder itself (its class folders directly inside) with
`ucfTrainTestlist/` inside it or beside it (in its parent folder); see
`ucf101_folders`. The video path is the list's first token, so the release's
odd spellings (folder `HandstandPushups`, files `v_HandStandPushups_...`)
are read as listed. Labels are 0-based (classInd's number - 1); a train
list's label must agree with classInd.

Decoding runs the ffmpeg binary of `imageio-ffmpeg` through the talking-face
readers' helpers (`jaxgen.data.talking_face_datasets.read_frames`): frames
on a 25 fps time base (a no-op on UCF-101), the centred square of side
min(width, height) cropped, then scaled to `resolution` with area
averaging. A clip is `frames` frames `stride` apart; a video yields
`clips_per_video` clips, clip i starting in the middle of the i-th of
`clips_per_video` equal parts of the room the video leaves (one clip: the
centred clip). A listed video that is absent, does not decode or is shorter
than one clip ((frames - 1) * stride + 1 frames) is skipped, counted and
named in a warning, as the talking-face readers do; a folder or list not in
the layout and a bad argument are named errors raised at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from jaxgen.data import ffmpeg
from jaxgen.data import talking_face_datasets as talking

UCF101_FPS = talking.FPS  # Every UCF-101 video is 25 fps; frames are read on this time base.
UCF101_FOLDS = (1, 2, 3)
UCF101_SPLITS = ("train", "test")
UCF101_VIDEOS = "UCF-101"
UCF101_LISTS = "ucfTrainTestlist"
UCF101_CLASS_INDEX = "classInd.txt"

# Class names whose CamelCase split reads badly (or not as the sport is called) in a caption.
# "PlayingDaf" splits fine ("playing daf": the daf is a frame drum) and is not here.
CAPTION_WORDS = {
  "YoYo": "yo-yo",
  "Skijet": "jet ski",
  "Shotput": "shot put",
  "SkateBoarding": "skateboarding",
  "SkyDiving": "skydiving",
  "PullUps": "pull-ups",
  "PushUps": "push-ups",
  "WallPushups": "wall push-ups",
  "HandstandPushups": "handstand push-ups",
  "JumpingJack": "jumping jacks",
  "RockClimbingIndoor": "indoor rock climbing",
}
CAPTION_TEMPLATE = "a person doing {}"


class VideoDatasetError(ValueError):
  """A video dataset folder, list or argument that the readers cannot use."""


class VideoFolderLayoutError(VideoDatasetError):
  """The folder or one of its list files is not in the released layout."""


class ClipSpecError(VideoDatasetError):
  """A clip shape (resolution, frames, stride, clips per video) or split that does not exist."""


class VideoTooShortError(VideoDatasetError, talking.UnusableClipError):
  """A video with fewer frames than one clip spans; the readers skip, count and name it."""


# --- captions ---------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")  # "ABCTest" -> ABC, Test; digits apart.


def class_words(class_name: str) -> str:
  """A class name in lower-case words: CamelCase split, or the `CAPTION_WORDS` entry."""
  if class_name in CAPTION_WORDS:
    return CAPTION_WORDS[class_name]
  return " ".join(word.lower() for word in _WORD.findall(class_name))


def class_caption(class_name: str) -> str:
  """The caption of a class: "a person doing apply eye makeup" for "ApplyEyeMakeup"."""
  return CAPTION_TEMPLATE.format(class_words(class_name))


# --- clips ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What one example holds: `frames` frames `stride` apart, `resolution` square pixels."""

  resolution: int
  frames: int
  stride: int = 1
  clips_per_video: int = 1

  def __post_init__(self):
    for name in ("resolution", "frames", "stride", "clips_per_video"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ClipSpecError(f"{name} must be a positive integer, got {value!r}.")

  @property
  def span(self) -> int:
    """Frames of the video one clip covers, first to last sampled frame."""
    return (self.frames - 1) * self.stride + 1


def clip_starts(num_frames: int, spec: ClipSpec, name: str) -> list[int]:
  """First frame of each clip: centred in equal parts of the room; VideoTooShortError if none."""
  room = num_frames - spec.span
  if room < 0:
    raise VideoTooShortError(
      f"{name}: a clip of {spec.frames} frames every {spec.stride} needs {spec.span} frames, "
      f"the video has {num_frames}."
    )
  count = spec.clips_per_video
  return [room * (2 * i + 1) // (2 * count) for i in range(count)]


def centre_square(width: int, height: int) -> talking.Box:
  """(x, y, side, side) of the largest centred square of a width x height frame."""
  side = min(width, height)
  return (width - side) // 2, (height - side) // 2, side, side


def read_video(path: str, resolution: int) -> np.ndarray:
  """(N, resolution, resolution, 3) uint8: every frame at 25 fps, centre-cropped and scaled."""
  info = talking.probe_video(path)
  return talking.read_frames(path, resolution, centre_square(info.width, info.height))


def video_clips(path: str, spec: ClipSpec) -> list[tuple[int, np.ndarray]]:
  """(start frame, (frames, S, S, 3) uint8) of each clip of one video (see the docstring)."""
  video = read_video(path, spec.resolution)
  picks = np.arange(spec.frames) * spec.stride
  return [(start, video[start + picks]) for start in clip_starts(len(video), spec, path)]


# --- UCF-101 ----------------------------------------------------------------------------------


def ucf101_folders(root: str) -> tuple[str, str]:
  """(folder of the class folders, folder of the list files) of a UCF-101 `root`.

  Videos: `root/UCF-101` if it exists, else `root`. Lists: the first of
  `root/ucfTrainTestlist`, `<videos>/ucfTrainTestlist`, `root` itself and
  `<parent of root>/ucfTrainTestlist` that holds classInd.txt.
  """
  if not os.path.isdir(root):
    raise VideoFolderLayoutError(
      f"UCF-101 root {root!r} is not a folder; pass the folder holding {UCF101_VIDEOS}/ and "
      f"{UCF101_LISTS}/ (or the {UCF101_VIDEOS}/ folder itself)."
    )
  videos = os.path.join(root, UCF101_VIDEOS)
  videos = videos if os.path.isdir(videos) else root
  parent = os.path.dirname(os.path.abspath(root))
  candidates = list(
    dict.fromkeys(
      [
        os.path.join(root, UCF101_LISTS),
        os.path.join(videos, UCF101_LISTS),
        root,
        os.path.join(parent, UCF101_LISTS),
      ]
    )
  )
  for folder in candidates:
    if os.path.isfile(os.path.join(folder, UCF101_CLASS_INDEX)):
      return videos, folder
  raise VideoFolderLayoutError(
    f"UCF-101: no {UCF101_CLASS_INDEX} in any of {candidates}; unpack "
    f"UCF101TrainTestSplits-RecognitionTask.zip ({UCF101_LISTS}/) into {root!r}. "
    f"{root!r} holds {sorted(os.listdir(root))[:20]}."
  )


def _rows(path: str) -> list[list[str]]:
  if not os.path.isfile(path):
    raise VideoFolderLayoutError(f"UCF-101 list {path!r} does not exist.")
  return talking.read_rows(path)


def read_class_index(path: str) -> list[str]:
  """Class names in label order (label = the file's 1-based number - 1)."""
  rows = _rows(path)
  numbers = [row[0] for row in rows]
  if any(len(row) != 2 for row in rows) or numbers != [str(i + 1) for i in range(len(rows))]:
    raise VideoFolderLayoutError(
      f"{path}: lines must read '<number> <ClassName>' numbered 1, 2, 3, ... in order, found "
      f"{[' '.join(row) for row in rows[:5]]}..."
    )
  return [row[1] for row in rows]


def read_split_list(path: str, classes: Sequence[str], labelled: bool) -> list[tuple[str, int]]:
  """(`Class/v_....avi`, 0-based label) per line of a train (labelled) or test list."""
  label_of = {name: i for i, name in enumerate(classes)}
  entries = []
  for row in _rows(path):
    video = row[0].replace("\\", "/")
    class_name = video.split("/")[0]
    if len(row) != (2 if labelled else 1) or "/" not in video or class_name not in label_of:
      shape = "'<Class>/v_<...>.avi <label>'" if labelled else "'<Class>/v_<...>.avi'"
      raise VideoFolderLayoutError(
        f"{path}: lines must read {shape} with a class of {UCF101_CLASS_INDEX}, found "
        f"{' '.join(row)!r}."
      )
    label = label_of[class_name]
    if labelled and row[1] != str(label + 1):
      raise VideoFolderLayoutError(
        f"{path}: {video!r} is labelled {row[1]}, but {UCF101_CLASS_INDEX} numbers {class_name} "
        f"{label + 1}."
      )
    entries.append((video, label))
  return entries


def ucf101_split(root: str, split: str, fold: int) -> tuple[str, list[str], list[tuple[str, int]]]:
  """(folder of the class folders, class names, (video path, label) of one split of a fold)."""
  if split not in UCF101_SPLITS:
    raise ClipSpecError(f"UCF-101 split must be one of {UCF101_SPLITS}, got {split!r}.")
  if fold not in UCF101_FOLDS:
    raise ClipSpecError(f"UCF-101 fold must be one of {UCF101_FOLDS}, got {fold!r}.")
  videos, lists = ucf101_folders(root)
  classes = read_class_index(os.path.join(lists, UCF101_CLASS_INDEX))
  present = [c for c in classes if os.path.isdir(os.path.join(videos, c))]
  if not present:
    raise VideoFolderLayoutError(
      f"UCF-101: none of the {len(classes)} classes of {UCF101_CLASS_INDEX} (e.g. {classes[:3]}) "
      f"is a folder in {videos!r}; unpack UCF101.rar ({UCF101_VIDEOS}/<Class>/...) there."
    )
  entries = read_split_list(
    os.path.join(lists, f"{split}list0{fold}.txt"), classes, split == "train"
  )
  return videos, classes, entries


def ucf101_examples(root: str, split: str, fold: int, spec: ClipSpec) -> Iterator[tuple[str, dict]]:
  """(key, example) per clip of each listed video of one split of a fold, in list order.

  Example: "video" (frames, S, S, 3) uint8, "label" (0-based), "caption",
  "class_name", "name" (the video's file name without .avi) and
  "start_frame" (of the clip, at 25 fps). Layout and arguments are checked
  before the first example; unusable videos are skipped and named.
  """
  ffmpeg.find_ffmpeg("decoding UCF-101 videos")  # Fail now, not at the first video.
  videos, classes, entries = ucf101_split(root, split, fold)

  def decode(video, label):
    name = os.path.splitext(os.path.basename(video))[0]
    for number, (start, clip) in enumerate(video_clips(os.path.join(videos, video), spec)):
      key = name if spec.clips_per_video == 1 else f"{name}/{number}"
      yield (
        key,
        {
          "video": clip,
          "label": label,
          "caption": class_caption(classes[label]),
          "class_name": classes[label],
          "name": name,
          "start_frame": start,
        },
      )

  return talking.skipping_bad_clips(entries, decode, f"UCF-101 {split} (fold {fold})")
