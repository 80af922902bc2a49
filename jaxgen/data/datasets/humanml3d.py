"""TFDS builder for HumanML3D, read from the released folder (manual_dir).

HumanML3D is licensed through AMASS, so it is never downloaded: build it
with HumanML3D's own scripts and point TFDS at the resulting folder:

    HumanML3D/
      new_joint_vecs/<name>.npy   (T, 263) float features per motion
      texts/<name>.txt            lines "caption#tok/POS tok/POS ...#start#end"
      train.txt val.txt test.txt  one motion name per line
      Mean.npy Std.npy            (263,) normalisation statistics

    builder = tfds.builder("humanml3d", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/HumanML3D"))
    train = tfds.data_source("humanml3d", split="train", data_dir=...)
    normalizer = motion.Normalizer(*(np.asarray(builder.info.metadata[k])
                                     for k in ("mean", "std")))

Examples follow the reference data loader (`Text2MotionDatasetV2`): a motion
with at least one whole-clip caption (start = end = 0) is one example with
all those captions; each caption with its own time span [start, end) seconds
becomes one more example, the sub-span of frames
[int(start * fps), int(end * fps)). Motions (or spans) shorter than the
format's `min_frames` (40) or of 200 frames and more are dropped, as there, so
that the example set (and the metrics of the reference evaluator on it) stays
the reference's; a warning names the dropped long ones (window such clips
yourself to use them). Clips keep their full length (< 200) and are cropped
to a multiple of 4 (<= 196) at batching time (`motion_formats.crop_motion`).
NaN span bounds read as 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import motion as motion_lib
from jaxgen.data import motion_formats
from jaxgen.data.datasets import array_record_builder

SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
# The reference loader drops motions of this many frames or more.
MAX_SOURCE_FRAMES = 200


class DatasetLayoutError(ValueError):
  """The manual folder is not in the released HumanML3D / KIT-ML layout."""


@dataclasses.dataclass(frozen=True)
class Caption:
  """One line of a texts/<name>.txt file."""

  caption: str
  tokens: str  # Space-separated "word/POS" pairs.
  start: float  # Seconds; start = end = 0 means the whole clip.
  end: float


def parse_text_file(path: str) -> list[Caption]:
  """Reads the `caption#tokens#start#end` lines of one text file."""
  captions = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      fields = line.split("#")
      if len(fields) < 4:
        raise DatasetLayoutError(
          f"text file {path!r} line {number} must be "
          f"'caption#tokens#start#end', got {len(fields)} field(s): "
          f"{line!r}."
        )
      try:
        start, end = float(fields[2]), float(fields[3])
      except ValueError as e:
        raise DatasetLayoutError(
          f"text file {path!r} line {number} must end with numeric "
          f"start#end seconds, got {fields[2]!r}#{fields[3]!r}."
        ) from e
      captions.append(
        Caption(
          caption=fields[0],
          tokens=fields[1],
          start=0.0 if np.isnan(start) else start,
          end=0.0 if np.isnan(end) else end,
        )
      )
  return captions


def check_layout(folder: str | os.PathLike | None, fmt: motion_formats.MotionFormat) -> str:
  """Raises DatasetLayoutError unless `folder` has the released layout."""
  if folder is None:
    raise DatasetLayoutError(
      f"{fmt.name} is read from a manual directory: pass "
      f"download_config=tfds.download.DownloadConfig(manual_dir=...) "
      f"pointing at the released {fmt.name} folder."
    )
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise DatasetLayoutError(f"{fmt.name} manual_dir {folder!r} is not a directory.")
  required = ["new_joint_vecs", "texts", *SPLIT_FILES.values(), "Mean.npy", "Std.npy"]
  missing = [r for r in required if not os.path.exists(os.path.join(folder, r))]
  if missing:
    found = sorted(os.listdir(folder))[:20]
    raise DatasetLayoutError(
      f"{fmt.name} manual_dir {folder!r} must contain {required} (the "
      f"released layout); missing {missing}, found {found}."
    )
  return folder


def read_split_names(folder: str, split: str) -> list[str]:
  with open(os.path.join(folder, SPLIT_FILES[split]), encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def load_motion(folder: str, name: str, fmt: motion_formats.MotionFormat) -> np.ndarray:
  """new_joint_vecs/<name>.npy as float32 (T, D), checked."""
  path = os.path.join(folder, "new_joint_vecs", f"{name}.npy")
  if not os.path.isfile(path):
    raise DatasetLayoutError(
      f"motion {name!r} is listed in a split file but {path!r} does not exist."
    )
  features = np.load(path).astype(np.float32)
  if features.ndim != 2 or features.shape[-1] != fmt.feature_dim:
    raise motion_formats.InvalidMotionError(
      f"motion file {path!r} must have shape (T, {fmt.feature_dim}) "
      f"({fmt.name}), got {features.shape}."
    )
  if not np.isfinite(features).all():
    raise motion_formats.InvalidMotionError(f"motion file {path!r} has NaN/inf values.")
  return features


def split_examples(folder: str, split: str, fmt: motion_formats.MotionFormat):
  """Yields (key, example) for one split, as the reference loader groups."""
  kept = dropped = 0
  too_long = []  # (key, frames) of the clips dropped for their length >= 200.
  for name in read_split_names(folder, split):
    features = load_motion(folder, name, fmt)
    text_path = os.path.join(folder, "texts", f"{name}.txt")
    if not os.path.isfile(text_path):
      raise DatasetLayoutError(f"motion {name!r} has no text file {text_path!r}.")
    if not fmt.min_frames <= len(features) < MAX_SOURCE_FRAMES:
      dropped += 1
      if len(features) >= MAX_SOURCE_FRAMES:
        too_long.append((name, len(features)))
      continue
    captions = parse_text_file(text_path)
    whole = [c for c in captions if c.start == 0.0 and c.end == 0.0]
    if whole:
      kept += 1
      yield name, _example(name, features, 0, len(features), whole)
    for index, caption in enumerate(captions):
      if caption in whole:
        continue
      first, last = int(caption.start * fmt.fps), int(caption.end * fmt.fps)
      span = features[first:last]
      if not fmt.min_frames <= len(span) < MAX_SOURCE_FRAMES:
        dropped += 1
        if len(span) >= MAX_SOURCE_FRAMES:
          too_long.append((f"{name}:{index}", len(span)))
        continue
      kept += 1
      yield f"{name}:{index}", _example(name, span, first, first + len(span), [caption])
  logging.info(
    "%s %s: %d examples, %d motions/spans dropped by length", fmt.name, split, kept, dropped
  )
  if too_long:
    shown = ", ".join(f"{key} ({frames} frames)" for key, frames in too_long[:20])
    more = f" and {len(too_long) - 20} more" if len(too_long) > 20 else ""
    logging.warning(
      "%s %s: dropped %d motions/spans of %d frames or more, as the reference loader does: %s%s",
      fmt.name,
      split,
      len(too_long),
      MAX_SOURCE_FRAMES,
      shown,
      more,
    )


def _example(name, features, first, last, captions):
  return {
    "name": name,
    "motion": features,
    "length": np.int32(len(features)),
    "start_frame": np.int32(first),
    "end_frame": np.int32(last),
    "caption": [c.caption for c in captions],
    "tokens": [c.tokens for c in captions],
    "start": np.array([c.start for c in captions], np.float32),
    "end": np.array([c.end for c in captions], np.float32),
  }


def load_split(
  folder: str | os.PathLike,
  split: str,
  fmt: motion_formats.MotionFormat = motion_formats.HUMANML3D,
  all_captions: bool = True,
) -> dict:
  """One split of a released folder as padded arrays (no TFDS needed).

  Each example's clip is cut to a multiple of 4 frames (at most
  `fmt.max_frames`, from its start) and zero-padded to `fmt.max_frames`.
  With `all_captions`, an example with k captions gives k rows (same motion);
  otherwise one row with its first caption.

  Returns dict(motion=(N, max_frames, D) float32, length=(N,) int32,
  caption=list of N str, name=list of N str).
  """
  folder = check_layout(folder, fmt)
  if split not in SPLIT_FILES:
    raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}.")
  motions, lengths, captions, names = [], [], [], []
  for key, example in split_examples(folder, split, fmt):
    length = min(fmt.max_frames, len(example["motion"]) // 4 * 4)
    padded = motion_formats.pad_motion(example["motion"][:length], fmt.max_frames)
    for caption in example["caption"] if all_captions else example["caption"][:1]:
      motions.append(padded)
      lengths.append(length)
      captions.append(caption)
      names.append(key)
  if not motions:
    raise DatasetLayoutError(
      f"{fmt.name} split {split!r} in {folder!r} has no clip of {fmt.min_frames}..199 frames."
    )
  return {
    "motion": np.stack(motions),
    "length": np.array(lengths, np.int32),
    "caption": captions,
    "name": names,
  }


class HumanML3D(array_record_builder.ArrayRecordBuilder):
  """HumanML3D text-to-motion data from the released folder."""

  name = "humanml3d"
  FORMAT = motion_formats.HUMANML3D
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Build the released folder with the HumanML3D scripts (new_joint_vecs/, "
    "texts/, train.txt, val.txt, test.txt, Mean.npy, Std.npy) and pass it "
    "as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    fmt = self.FORMAT
    return self.dataset_info_from_configs(
      description=(
        f"{fmt.name}: {fmt.feature_dim}-d motion features at "
        f"{fmt.fps} fps with their captions, POS-tagged tokens "
        f"and caption time spans."
      ),
      features=tfds.features.FeaturesDict(
        {
          "name": tfds.features.Text(),
          "motion": tfds.features.Tensor(shape=(None, fmt.feature_dim), dtype=np.float32),
          "length": tfds.features.Scalar(dtype=np.int32),
          "start_frame": tfds.features.Scalar(dtype=np.int32),
          "end_frame": tfds.features.Scalar(dtype=np.int32),
          "caption": tfds.features.Sequence(tfds.features.Text()),
          "tokens": tfds.features.Sequence(tfds.features.Text()),
          "start": tfds.features.Sequence(tfds.features.Scalar(dtype=np.float32)),
          "end": tfds.features.Sequence(tfds.features.Scalar(dtype=np.float32)),
        }
      ),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    fmt = self.FORMAT
    folder = check_layout(dl_manager.manual_dir, fmt)
    normalizer = motion_lib.Normalizer.load(folder, fmt)
    self.info.metadata["mean"] = normalizer.mean.tolist()
    self.info.metadata["std"] = normalizer.std.tolist()
    return {split: self._generate_examples(folder, split) for split in SPLIT_FILES}

  def _generate_examples(self, folder: str, split: str):
    yield from split_examples(folder, split, self.FORMAT)
