"""Readers of the released LRS2, HDTF and GRID folders: 25 fps face crops with 16 kHz speech.

An example is a clip as Wav2Lip trains on it: `frames` (T, S, S, 3) uint8 at
25 fps and `audio` (T * 640,) float32 at 16 kHz mono, frame t owning samples
[640 t, 640 (t + 1)). The ffmpeg binary of `imageio-ffmpeg` decodes videos:
`fps=25` (a no-op on these 25 fps releases), the face box (`crop`), then
`scale=S:S` with area averaging. The audio track goes through ffmpeg into a
temporary WAV that librosa loads at 16 kHz mono. Audio within
`LENGTH_TOLERANCE_FRAMES` frames of T * 640 samples is cut or zero-padded to
that length; a larger mismatch is a `MediaLengthError`.

Face boxes (x, y, width, height in source pixels) replace a face detector:
LRS2 clips are face-centred crops already (the whole frame, or one fixed
box), HDTF ships a crop window per clip, GRID takes the user's box; a
missing box or one outside the frame is a `FaceBoxError`.

The layouts are documented in the builders `jaxgen.data.datasets.lrs2`,
`hdtf` and `grid_corpus` (which also holds GRID's reader: its sentence
grammar and alignments). Each `*_examples` checks the folder at once (a
`TalkingFaceDataError` naming what is missing) and returns a generator of
(key, example); a clip that cannot become one (`UnusableClipError`: absent,
undecodable, silent, lengths mismatched, its alignment disagreeing with its
sentence) is skipped, counted and named in a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from jaxgen.data import ffmpeg

_log = logging.getLogger(__name__)

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
LENGTH_TOLERANCE_FRAMES = 2

Box = tuple[int, int, int, int]  # x, y, width, height in source pixels.


class TalkingFaceDataError(ValueError):
  """A talking-face folder or file is not in its released layout."""


class UnusableClipError(TalkingFaceDataError):
  """One clip that cannot become an example; the readers skip, count and name it."""


class UnreadableMediaError(UnusableClipError):
  """A video or audio file that is absent, does not decode or has no audio."""


class MediaLengthError(UnusableClipError):
  """A clip whose audio is not as long as its frames at 25 fps."""


class FaceBoxError(TalkingFaceDataError):
  """A face box that is missing or does not lie inside the frame."""


# --- decoding ---------------------------------------------------------------------------------


def find_ffmpeg() -> str:
  """Path of an ffmpeg binary (`jaxgen.data.ffmpeg`), or a TalkingFaceDataError."""
  try:
    return ffmpeg.find_ffmpeg("decoding talking-face videos")
  except ffmpeg.FfmpegNotFoundError as error:
    raise TalkingFaceDataError(str(error)) from error


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a video's stream listing says: frame size in pixels and whether it has sound."""

  width: int
  height: int
  has_audio: bool


_VIDEO_SIZE = re.compile(r"Stream #[^\n]*?: Video: [^\n]*?, (\d+)x(\d+)[ ,\n]")


def probe_video(path: str) -> VideoInfo:
  """Frame size and whether an audio stream exists, from ffmpeg's stream listing."""
  if not os.path.isfile(path):
    raise UnreadableMediaError(f"video {path!r} does not exist.")
  result = subprocess.run(
    [find_ffmpeg(), "-hide_banner", "-nostdin", "-i", path], capture_output=True
  )
  listing = result.stderr.decode(errors="replace")
  size = _VIDEO_SIZE.search(listing)
  if size is None:
    raise UnreadableMediaError(
      f"ffmpeg finds no video stream in {path!r}: {listing.strip()[-300:]}"
    )
  has_audio = re.search(r"Stream #[^\n]*?: Audio: ", listing) is not None
  return VideoInfo(int(size[1]), int(size[2]), has_audio)


def _run_ffmpeg(args: list[str], path: str) -> bytes:
  result = subprocess.run([find_ffmpeg(), "-v", "error", "-nostdin", *args], capture_output=True)
  if result.returncode != 0:
    message = result.stderr.decode(errors="replace").strip()[-400:]
    raise UnreadableMediaError(f"ffmpeg cannot decode {path!r}: {message}")
  return result.stdout


def _seek(start: float | None, duration: float | None) -> list[str]:
  """Input options: an exact seek when transcoding (ffmpeg's -accurate_seek default)."""
  seek = ["-ss", f"{start:.3f}"] if start else []
  return seek + (["-t", f"{duration:.3f}"] if duration else [])


def read_frames(
  path: str,
  size: int,
  box: Box | None = None,
  start: float | None = None,
  duration: float | None = None,
) -> np.ndarray:
  """(T, size, size, 3) uint8 at 25 fps, of `box` (whole frame if None) of [start, start+dur)."""
  crop = [f"crop={box[2]}:{box[3]}:{box[0]}:{box[1]}"] if box is not None else []
  filters = ",".join([f"fps={FPS}", *crop, f"scale={size}:{size}:flags=area"])
  args = [*_seek(start, duration), "-i", path, "-an", "-vf", filters]
  raw = _run_ffmpeg([*args, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], path)
  frames = np.frombuffer(raw, np.uint8)
  if frames.size == 0 or frames.size % (size * size * 3):
    raise UnreadableMediaError(f"ffmpeg decoded no whole frame from {path!r}.")
  return frames.reshape(-1, size, size, 3)


def read_audio(path: str, start: float | None = None, duration: float | None = None) -> np.ndarray:
  """Mono float32 at 16 kHz: a media file's first audio track (via a WAV), or a WAV itself."""
  import librosa  # pylint: disable=g-import-not-at-top  (slow import; only when decoding)

  if path.endswith(".wav") and start is None and duration is None:
    if not os.path.isfile(path):
      raise UnreadableMediaError(f"audio file {path!r} does not exist.")
    wav_path, folder = path, None
  else:
    folder = tempfile.TemporaryDirectory(prefix="jaxgen-audio-")
    wav_path = os.path.join(folder.name, "audio.wav")
    args = [*_seek(start, duration), "-i", path, "-vn", "-map", "0:a:0", "-c:a", "pcm_s16le"]
    _run_ffmpeg([*args, wav_path], path)
  try:
    audio, _ = librosa.load(wav_path, sr=SAMPLE_RATE, mono=True)
  except Exception as e:  # soundfile/audioread raise many types for a bad file.
    raise UnreadableMediaError(f"librosa cannot read the audio of {path!r}: {e}") from e
  finally:
    if folder is not None:
      folder.cleanup()
  return audio.astype(np.float32)


def fit_audio(audio: np.ndarray, num_frames: int, name: str, tolerance: int) -> np.ndarray:
  """`audio` cut or zero-padded to num_frames * 640 samples; MediaLengthError beyond tolerance."""
  expected = num_frames * SAMPLES_PER_FRAME
  offset = len(audio) - expected
  if abs(offset) > tolerance * SAMPLES_PER_FRAME:
    raise MediaLengthError(
      f"{name}: {num_frames} frames at {FPS} fps need {expected} audio samples at "
      f"{SAMPLE_RATE} Hz (within {tolerance} frames), found {len(audio)} "
      f"({offset / SAMPLES_PER_FRAME:+.1f} frames)."
    )
  return np.pad(audio[:expected], (0, max(0, -offset)))


def check_box(box: Sequence[int] | None, width: int, height: int, what: str) -> Box:
  """`box` as ints (x, y, width, height), or FaceBoxError if missing or not inside the frame."""
  if box is None:
    raise FaceBoxError(f"{what}: no face box given; pass face_box=(x, y, width, height).")
  if len(box) != 4 or any(int(v) != v for v in box):
    raise FaceBoxError(f"{what}: face box must be 4 integers (x, y, width, height), got {box!r}.")
  x, y, w, h = (int(v) for v in box)
  if min(x, y) < 0 or min(w, h) <= 0 or x + w > width or y + h > height:
    raise FaceBoxError(
      f"{what}: face box (x, y, width, height) = {(x, y, w, h)} must lie inside the "
      f"{width}x{height} frame (x + width <= {width}, y + height <= {height})."
    )
  return x, y, w, h


def scale_box(box: Sequence[int], drawn_height: int | None, height: int) -> Box:
  """A box drawn on frames `drawn_height` tall, in pixels of frames `height` tall."""
  if not drawn_height or drawn_height == height:
    return tuple(int(v) for v in box)
  return tuple(round(v * height / drawn_height) for v in box)


def read_clip(
  path: str,
  size: int,
  box: Sequence[int] | None = None,
  *,
  start: float | None = None,
  duration: float | None = None,
  box_height: int | None = None,
  fallback_audio: str | None = None,
  tolerance: int = LENGTH_TOLERANCE_FRAMES,
) -> dict[str, np.ndarray]:
  """{"frames", "audio"} of one video with lengths matched (see the module docstring).

  `box` (x, y, width, height; None: the whole frame) was drawn on frames
  `box_height` tall (None: this video's); `fallback_audio` is read when the
  video has no audio track.
  """
  info = probe_video(path)
  if box is not None:
    box = check_box(scale_box(box, box_height, info.height), info.width, info.height, path)
  audio_path = path if info.has_audio else fallback_audio
  if audio_path is None:
    raise UnreadableMediaError(f"video {path!r} has no audio track.")
  frames = read_frames(path, size, box, start, duration)
  audio = read_audio(audio_path, *((start, duration) if audio_path == path else (None, None)))
  return {"frames": frames, "audio": fit_audio(audio, len(frames), path, tolerance)}


def skipping_bad_clips(
  items: Iterable[tuple[str, object]],
  decode: Callable[[str, object], Iterator[tuple[str, dict]]],
  source: str,
) -> Iterator[tuple[str, dict]]:
  """decode(key, item)'s examples; an UnusableClipError skips the item, counted and named."""
  skipped, total = [], 0
  for key, item in items:
    total += 1
    try:
      examples = list(decode(key, item))
    except UnusableClipError as e:
      skipped.append(f"{key} ({e})")
      continue
    yield from examples
  if skipped:
    _log.warning("%s: skipped %d of %d clips: %s", source, len(skipped), total, skipped[:20])


def read_rows(path: str) -> list[list[str]]:
  """Whitespace-split non-empty lines of a list or annotation file."""
  with open(path, encoding="utf-8") as f:
    return [line.split() for line in f if line.strip()]


def require_entries(folder: str, entries: Sequence[str], dataset: str) -> None:
  """A named error unless `folder` is a directory holding every one of `entries`."""
  missing = [e for e in entries if not os.path.exists(os.path.join(folder, e))]
  if not os.path.isdir(folder) or missing:
    found = sorted(os.listdir(folder))[:20] if os.path.isdir(folder) else "no such folder"
    raise TalkingFaceDataError(
      f"{dataset} folder {folder!r} must contain {list(entries)} (the released layout); "
      f"missing {missing or 'the folder'}, found {found}."
    )


# --- LRS2 -------------------------------------------------------------------------------------

_LRS2_LISTS = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
LRS2_SPLIT_LISTS = {
  "main": _LRS2_LISTS,
  "pretrain": {"train": "pretrain.txt"},
  "preprocessed": _LRS2_LISTS,
}


def lrs2_folders(root: str, layout: str) -> tuple[str, list[str]]:
  """(the folder of the clip folders, the folders searched for split lists) of a layout."""
  if layout not in LRS2_SPLIT_LISTS:
    raise TalkingFaceDataError(
      f"LRS2 layout must be one of {sorted(LRS2_SPLIT_LISTS)}, got {layout!r}."
    )
  if layout == "preprocessed":
    require_entries(root, [], "LRS2 (Wav2Lip preprocessed)")
    return root, [root, os.path.join(root, "filelists")]
  data = os.path.join(root, "mvlrs_v1")
  data = data if os.path.isdir(data) else root
  require_entries(data, [layout], "LRS2 (mvlrs_v1)")
  return os.path.join(data, layout), [root, data]


def lrs2_splits(root: str, layout: str) -> dict[str, str]:
  """{split: list file} for the split lists of `layout` that exist; a named error if none does."""
  _, list_folders = lrs2_folders(root, layout)
  found = {}
  for split, name in LRS2_SPLIT_LISTS[layout].items():
    paths = [os.path.join(f, name) for f in list_folders if os.path.isfile(os.path.join(f, name))]
    if paths:
      found[split] = paths[0]
  if not found:
    raise TalkingFaceDataError(
      f"LRS2 {layout}: none of the split lists {sorted(LRS2_SPLIT_LISTS[layout].values())} is "
      f"in {list_folders} (lines '<video id>/<clip>')."
    )
  return found


def read_lrs2_list(path: str) -> list[str]:
  """'<id>/<clip>' names of a split list, in order, once each; trailing tokens are dropped."""
  return list(dict.fromkeys(line[0] for line in read_rows(path)))


def lrs2_transcript(path: str) -> str:
  """The words of an LRS2 `.txt` ("Text:  THE WORDS"); "" when there is no such file."""
  if not os.path.isfile(path):
    return ""
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("Text:"):
        return line[len("Text:") :].strip()
  raise TalkingFaceDataError(f"LRS2 transcript {path!r} has no 'Text:' line.")


def read_frame_folder(folder: str, size: int) -> np.ndarray:
  """(T, size, size, 3) uint8 of Wav2Lip's `0.jpg` ... `<T-1>.jpg`, each resized (box filter)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(folder):
    raise UnreadableMediaError(f"frame folder {folder!r} does not exist.")
  names = [n for n in os.listdir(folder) if n.endswith(".jpg")]
  stems = sorted(int(n[:-4]) for n in names if n[:-4].isdigit())
  if not stems or stems != list(range(len(names))):
    raise UnreadableMediaError(
      f"frame folder {folder!r} must hold 0.jpg ... <N-1>.jpg, found {len(names)} JPEGs "
      f"numbered {stems[:5]}..."
    )
  frames = []
  for stem in stems:
    try:
      with Image.open(os.path.join(folder, f"{stem}.jpg")) as image:
        frames.append(np.asarray(image.convert("RGB").resize((size, size), Image.BOX)))
    except OSError as e:
      raise UnreadableMediaError(f"frame {stem}.jpg of {folder!r} does not decode: {e}") from e
  return np.stack(frames)


def lrs2_examples(
  root: str,
  layout: str,
  split: str,
  size: int,
  face_box: Sequence[int] | None = None,
  tolerance: int = LENGTH_TOLERANCE_FRAMES,
) -> Iterator[tuple[str, dict]]:
  """(key, example) per listed clip of one split; `face_box` crops the mp4 layouts' frames."""
  clips, _ = lrs2_folders(root, layout)
  lists = lrs2_splits(root, layout)
  if split not in lists:
    raise TalkingFaceDataError(f"LRS2 {layout} has the splits {sorted(lists)}, not {split!r}.")
  if face_box is not None and layout == "preprocessed":
    raise FaceBoxError(
      "LRS2 preprocessed frames are face crops already; face_box applies to the mp4 layouts."
    )
  names = read_lrs2_list(lists[split])

  def decode(name, _):
    base = os.path.join(clips, name)
    if layout == "preprocessed":
      frames = read_frame_folder(base, size)
      audio = fit_audio(read_audio(os.path.join(base, "audio.wav")), len(frames), base, tolerance)
      clip = {"frames": frames, "audio": audio}
    else:
      clip = read_clip(f"{base}.mp4", size, face_box, tolerance=tolerance)
    yield (
      name,
      {**clip, "fps": float(FPS), "id": name, "transcript": lrs2_transcript(f"{base}.txt")},
    )

  return skipping_bad_clips(((n, None) for n in names), decode, f"LRS2 {layout}/{split}")


# --- HDTF -------------------------------------------------------------------------------------

HDTF_SOURCES = ("RD", "WDA", "WRA")
HDTF_TEST_EVERY = 10
HDTF_ANNOTATIONS = ("video_url", "annotion_time", "crop_wh")  # The release's spelling.


@dataclasses.dataclass(frozen=True)
class HdtfClip:
  source: str  # RD, WDA or WRA.
  video: str  # e.g. "Radio11".
  index: int  # Position of its interval in the annotation line.
  start: float  # Seconds into the downloaded video.
  end: float
  box: Box  # x, y, width, height from <SRC>_crop_wh.txt.
  box_height: int | None  # The frame height the box was drawn on (<SRC>_resolution.txt).

  @property
  def video_key(self) -> str:
    return f"{self.source}_{self.video}"


def parse_hdtf_time(text: str, where: str) -> float:
  """Seconds of 'mm:ss' or 'hh:mm:ss'."""
  parts = text.split(":")
  if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
    raise TalkingFaceDataError(f"{where}: times must read mm:ss or hh:mm:ss, got {text!r}.")
  return float(sum(int(p) * 60**i for i, p in enumerate(reversed(parts))))


def hdtf_annotation_folder(root: str) -> tuple[str, list[str]]:
  """(folder of the annotation files, the sources whose three files are there)."""
  folder = os.path.join(root, "HDTF_dataset")
  folder = folder if os.path.isdir(folder) else root
  names = lambda s: [f"{s}_{kind}.txt" for kind in HDTF_ANNOTATIONS]  # noqa: E731
  sources = [
    s for s in HDTF_SOURCES if all(os.path.isfile(os.path.join(folder, n)) for n in names(s))
  ]
  if not sources:
    require_entries(folder, names("RD"), "HDTF (HDTF_dataset/ of MRzzm/HDTF)")
  return folder, sources


def _by_name(path: str) -> dict[str, list[str]]:
  """{first token without .mp4: the other tokens} of an HDTF file; {} if it is absent."""
  rows = read_rows(path) if os.path.isfile(path) else []
  return {row[0].removesuffix(".mp4"): row[1:] for row in rows}


def hdtf_clips(root: str) -> tuple[list[HdtfClip], list[str]]:
  """(every annotated clip that has a crop window, every listed `<SRC>_<name>`, sorted)."""
  folder, sources = hdtf_annotation_folder(root)
  clips, videos, dropped = [], [], []
  for source in sources:
    path = lambda kind: os.path.join(folder, f"{source}_{kind}.txt")  # noqa: B023, E731
    times, crops = _by_name(path("annotion_time")), _by_name(path("crop_wh"))
    heights = _by_name(path("resolution"))
    for video in _by_name(path("video_url")):
      videos.append(f"{source}_{video}")
      height = heights.get(video, [])
      for index, interval in enumerate(times.get(video, [])):
        where = f"{path('annotion_time')} ({video}, clip {index})"
        crop = crops.get(f"{video}_{index}")
        if crop is None or len(crop) != 4 or not all(v.isdigit() for v in crop):
          dropped.append(f"{source}/{video}_{index}")  # download.py drops these too.
          continue
        start, end = (parse_hdtf_time(t, where) for t in interval.split("-", 1))
        if end <= start:
          raise TalkingFaceDataError(f"{where}: the clip must end after it starts, got {interval}.")
        x, width, y, h = (int(v) for v in crop)
        box_height = int(height[0]) if len(height) == 1 and height[0].isdigit() else None
        clips.append(HdtfClip(source, video, index, start, end, (x, y, width, h), box_height))
  if dropped:
    _log.info("HDTF: %d annotated clips have no crop window: %s", len(dropped), dropped[:20])
  return clips, sorted(videos)


def hdtf_test_videos(videos: Sequence[str]) -> set[str]:
  """Every 10th of the sorted `<SRC>_<name>` list (positions 9, 19, ...)."""
  return set(sorted(videos)[HDTF_TEST_EVERY - 1 :: HDTF_TEST_EVERY])


def hdtf_video_path(root: str, clip: HdtfClip) -> str:
  """<root>/<SRC>/<name>.mp4, else <root>/_videos_raw/<SRC>_<name>.mp4 (download.py's)."""
  candidates = [
    os.path.join(root, clip.source, f"{clip.video}.mp4"),
    os.path.join(root, "_videos_raw", f"{clip.video_key}.mp4"),
  ]
  return next((c for c in candidates if os.path.isfile(c)), candidates[0])


def segment_bounds(num_frames: int, segment_frames: int | None) -> list[tuple[int, int]]:
  """[start, stop) frame ranges of consecutive segments; a tail under 1 s joins the one before."""
  starts = list(range(0, num_frames, segment_frames or num_frames or 1))
  if len(starts) > 1 and num_frames - starts[-1] < FPS:
    starts.pop()
  return list(zip(starts, [*starts[1:], num_frames]))


def hdtf_examples(
  root: str,
  split: str,
  size: int,
  segment_seconds: float | None = 10.0,
  test_videos: Iterable[str] | None = None,
  tolerance: int = LENGTH_TOLERANCE_FRAMES,
) -> Iterator[tuple[str, dict]]:
  """(key, example) per segment of each clip of one split ('train' or 'test')."""
  if split not in ("train", "test"):
    raise TalkingFaceDataError(f"HDTF split must be 'train' or 'test', got {split!r}.")
  clips, videos = hdtf_clips(root)
  held_out = set(test_videos) if test_videos is not None else hdtf_test_videos(videos)
  unknown = held_out - set(videos)
  if unknown:
    raise TalkingFaceDataError(
      f"HDTF test_videos must be '<SRC>_<name>' of the annotation files (e.g. {videos[:3]}), "
      f"got unknown {sorted(unknown)[:5]}."
    )
  chosen = [c for c in clips if (c.video_key in held_out) == (split == "test")]
  segment_frames = round(segment_seconds * FPS) if segment_seconds else None

  def decode(key, clip):
    span = {"start": clip.start, "duration": clip.end - clip.start}
    whole = read_clip(
      hdtf_video_path(root, clip),
      size,
      clip.box,
      **span,
      box_height=clip.box_height,
      tolerance=tolerance,
    )
    for number, (first, stop) in enumerate(segment_bounds(len(whole["frames"]), segment_frames)):
      yield (
        f"{key}/{number:04d}",
        {
          "frames": whole["frames"][first:stop],
          "audio": whole["audio"][first * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME],
          "fps": float(FPS),
          "id": key,
          "source": clip.source,
          "video": clip.video,
          "clip": clip.index,
          "segment": number,
          "start_seconds": clip.start + first / FPS,
          "box": np.asarray(clip.box, np.int32),
        },
      )

  items = ((f"{c.video_key}_{c.index}", c) for c in chosen)
  return skipping_bad_clips(items, decode, f"HDTF {split}")
