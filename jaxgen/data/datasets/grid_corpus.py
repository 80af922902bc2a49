"""GRID audio-visual sentences: the reader of the released folders and its TFDS builder.

GRID (Cooke et al. 2006; spandh.dcs.shef.ac.uk/gridcorpus, Zenodo record
3625687): 34 speakers (s21's video is missing) x 1000 six-word sentences.
`manual_dir`:

    s<k>/<utt>.mpg                 360x288, 25 fps, 75 frames (3 s) with sound
                                   (s<k>.mpg_vcd.zip from the site, or Zenodo's s<k>.zip)
    alignments/s<k>/<utt>.align    lines "start end word" in 1/25000 s (1000 per frame),
                                   "sil" at both ends (Zenodo's alignments.zip; unpack the
                                   site's per-speaker align tar into alignments/s<k>/)
    audio_25k/s<k>/<utt>.wav       read only for a video without an audio track

The 6-letter name spells the sentence (`swwp2s`: set white with p two soon),
so an alignment is checked against it: one whose words differ is skipped and
named (the Zenodo copy is reported to file alignments under the wrong
speakers, lhotse PR #1501). GRID frames are whole camera frames, so the face
box is the user's (`face_box=(x, y, width, height)` for every speaker, or
`{"s1": box, ...}`); none given, or one outside a frame, is a `FaceBoxError`.
The split is LipNet's "unseen speakers" (Assael et al. 2016; its README:
s1, s2, s20 and s22 for evaluation, the rest for training).

Each example: `frames` (75, S, S, 3) uint8, `audio` (48000,) float32 at
16 kHz, `fps`, the id `s<k>/<utt>`, the speaker, the transcript, the six
`words` and their `word_frames` [start, end) at 25 fps. Decoding and length
checks: `jaxgen.data.talking_face_datasets`.

    builder = tfds.builder("grid_corpus/unseen_speakers_96", data_dir=...,
                           face_box=(110, 40, 140, 140))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/grid"))
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import talking_face_datasets as talking
from jaxgen.data.datasets import array_record_builder, image_text_examples
from jaxgen.data.datasets.talking_face_info import talking_face_info

UNSEEN_TEST_SPEAKERS = ("s1", "s2", "s20", "s22")
UNITS_PER_FRAME = 25_000 // talking.FPS  # Alignment times are in 1/25000 s.
SILENCES = ("sil", "sp")
GRAMMAR = (  # Command, colour, preposition, letter, digit, adverb: one letter each in a name.
  {"b": "bin", "l": "lay", "p": "place", "s": "set"},
  {"b": "blue", "g": "green", "r": "red", "w": "white"},
  {"a": "at", "b": "by", "i": "in", "w": "with"},
  {c: c for c in "abcdefghijklmnopqrstuvxyz"},  # Every letter but w.
  {"z": "zero", **dict(zip("123456789", "one two three four five six seven eight nine".split()))},
  {"a": "again", "n": "now", "p": "please", "s": "soon"},
)

FaceBoxes = Sequence[int] | Mapping[str, Sequence[int]]


def sentence(utterance: str) -> list[str]:
  """The six words a GRID file name spells: 'swwp2s' -> set white with p two soon."""
  if len(utterance) != 6 or any(c not in slot for c, slot in zip(utterance, GRAMMAR)):
    raise talking.UnusableClipError(
      f"GRID utterance names spell command, colour, preposition, letter, digit and adverb in "
      f"6 letters (e.g. 'bbaf2n'), got {utterance!r}."
    )
  return [slot[c] for c, slot in zip(utterance, GRAMMAR)]


def read_alignment(path: str) -> list[tuple[int, int, str]]:
  """(start, end, word) rows of an `.align` file, times in 1/25000 s."""
  if not os.path.isfile(path):
    raise talking.UnusableClipError(f"GRID alignment {path!r} does not exist.")
  rows = talking.read_rows(path)
  if not rows or any(len(r) != 3 or not (r[0].isdigit() and r[1].isdigit()) for r in rows):
    raise talking.UnusableClipError(f"GRID alignment {path!r} must have lines 'start end word'.")
  return [(int(a), int(b), word) for a, b, word in rows]


def speakers(root: str) -> list[str]:
  """The `s<k>` folders holding .mpg videos, in speaker order."""
  talking.require_entries(root, ["alignments"], "GRID")
  folders = [n for n in os.listdir(root) if re.fullmatch(r"s\d+", n)]
  found = [n for n in folders if any(f.endswith(".mpg") for f in os.listdir(f"{root}/{n}"))]
  if not found:
    raise talking.TalkingFaceDataError(
      f"GRID folder {root!r} must hold speaker folders s1 ... s34 of <utterance>.mpg videos, "
      f"found {sorted(os.listdir(root))[:20]}."
    )
  return sorted(found, key=lambda n: int(n[1:]))


def face_boxes(face_box: FaceBoxes | None, names: Sequence[str]) -> dict[str, Sequence[int]]:
  """{speaker: box} from one box for all or a {speaker: box} mapping; FaceBoxError if missing."""
  if face_box is None:
    raise talking.FaceBoxError(
      "GRID frames are whole 360x288 camera frames: pass face_box=(x, y, width, height) for "
      "every speaker, or {'s1': (x, y, width, height), ...}; none was given."
    )
  if not isinstance(face_box, Mapping):
    return {s: face_box for s in names}
  missing = [s for s in names if s not in face_box]
  if missing:
    raise talking.FaceBoxError(f"GRID face_box has no box for the speakers {missing}.")
  return {s: face_box[s] for s in names}


def examples(
  root: str,
  split: str,
  size: int,
  face_box: FaceBoxes | None,
  test_speakers: Sequence[str] = UNSEEN_TEST_SPEAKERS,
  tolerance: int = talking.LENGTH_TOLERANCE_FRAMES,
) -> Iterator[tuple[str, dict]]:
  """(key, example) per utterance of the split's speakers ('train' or 'test')."""
  if split not in ("train", "test"):
    raise talking.TalkingFaceDataError(f"GRID split must be 'train' or 'test', got {split!r}.")
  chosen = [s for s in speakers(root) if (s in test_speakers) == (split == "test")]
  boxes = face_boxes(face_box, chosen)
  items = [
    (f"{s}/{n[: -len('.mpg')]}", s)
    for s in chosen
    for n in sorted(os.listdir(os.path.join(root, s)))
    if n.endswith(".mpg")
  ]

  def decode(key, speaker):
    utterance = key.split("/")[1]
    aligned = read_alignment(os.path.join(root, "alignments", speaker, f"{utterance}.align"))
    spoken = [(a, b, w) for a, b, w in aligned if w not in SILENCES]
    words = [w for _, _, w in spoken]
    if words != sentence(utterance):
      raise talking.UnusableClipError(
        f"GRID alignment words {words} differ from the sentence {key} spells "
        f"{sentence(utterance)} (an alignment filed under the wrong speaker?)."
      )
    clip = talking.read_clip(
      os.path.join(root, speaker, f"{utterance}.mpg"),
      size,
      boxes[speaker],
      fallback_audio=os.path.join(root, "audio_25k", speaker, f"{utterance}.wav"),
      tolerance=tolerance,
    )
    spans = [(round(a / UNITS_PER_FRAME), round(b / UNITS_PER_FRAME)) for a, b, _ in spoken]
    yield (
      key,
      {
        **clip,
        "fps": float(talking.FPS),
        "id": key,
        "speaker": speaker,
        "transcript": " ".join(words),
        "words": words,
        "word_frames": np.asarray(spans, np.int32).reshape(-1, 2),
      },
    )

  return talking.skipping_bad_clips(items, decode, f"GRID {split}")


@dataclasses.dataclass
class GridConfig(tfds.core.BuilderConfig):
  """`size`: the side of the stored frames; `test_speakers`: the held-out speakers."""

  size: int = 96
  test_speakers: tuple[str, ...] = UNSEEN_TEST_SPEAKERS


class GridCorpus(array_record_builder.ArrayRecordBuilder):
  """GRID sentences: face frames in the user's box, 16 kHz speech, word alignments."""

  name = "grid_corpus"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[GridConfig]] = [
    GridConfig(name="unseen_speakers_96", description="LipNet's unseen speakers, 96x96."),
    GridConfig(name="unseen_speakers_256", description="LipNet's unseen speakers.", size=256),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download GRID's videos (s<k>/<utt>.mpg) and alignments (alignments/s<k>/<utt>.align) "
    "into one folder, pass it as manual_dir and the face box as face_box=(x, y, width, height)."
  )

  def __init__(self, *, face_box: FaceBoxes | None = None, **kwargs):
    self._face_box = face_box
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return talking_face_info(
      self,
      f"GRID sentences: {size}x{size} faces, 16 kHz audio, word alignments.",
      speaker=tfds.features.Text(),
      transcript=tfds.features.Text(),
      words=tfds.features.Sequence(tfds.features.Text()),
      word_frames=tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    config = self.builder_config
    return {
      split: self._generate_examples(
        examples(root, split, config.size, self._face_box, config.test_speakers)
      )
      for split in ("train", "test")
    }

  def _generate_examples(self, clips):
    yield from clips
