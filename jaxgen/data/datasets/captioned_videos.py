"""TFDS builder for the built-in captioned shape videos (no download).

Generated offline from `jaxgen.data.video_shapes.make_video_split`, so
preparing it gives the same clips on every machine: example i of a split is
`make_video_split(split, n, resolution, frames, seed)` row i (TFDS shuffling
is off; the clips are already in random order). Each example holds the clip,
its caption and the per-frame ground truth of both object slots (the second
slot of a one-object clip is padding: -1, or NaN for floats).

Written as ArrayRecord by default, read without TensorFlow:

    builder = tfds.builder("captioned_videos/32px", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("captioned_videos/32px", split="train", data_dir=...)

With TensorFlow, prepare a TFRecord copy in its own data_dir
(`builder_kwargs={"file_format": "tfrecord"}`) for `tfds.load`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import shapes, video_shapes
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder


@dataclasses.dataclass
class CaptionedVideosConfig(tfds.core.BuilderConfig):
  """Frame side, clip length and number of clips per split."""

  resolution: int = 32
  frames: int = video_shapes.DEFAULT_FRAMES
  num_train: int = video_shapes.DEFAULT_NUM_VIDEOS["train"]
  num_test: int = video_shapes.DEFAULT_NUM_VIDEOS["test"]
  seed: int = 0


class CaptionedVideos(ArrayRecordBuilder):
  """Shapes moving, bouncing, growing, shrinking or changing colour, captioned with what they do."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[CaptionedVideosConfig]] = [
    CaptionedVideosConfig(name="32px", description="16 frames of 32x32: 5000/500 clips."),
    CaptionedVideosConfig(
      name="16px", description="16 frames of 16x16: 5000/500 clips.", resolution=16
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    side, frames, slots = config.resolution, config.frames, video_shapes.MAX_OBJECTS
    return self.dataset_info_from_configs(
      description=(
        "One or two circles, squares or triangles of six colours on a dark background, "
        "moving in eight directions at two speeds, bouncing off an edge, growing, "
        "shrinking or changing colour, with a caption saying which and the per-frame "
        "centre, size, colour and shape of every object; the test split holds out ~10% "
        "of the (shape, colour, motion) combinations."
      ),
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Tensor(shape=(frames, side, side, 3), dtype=np.uint8),
          "caption": tfds.features.Text(),
          "num_objects": tfds.features.Scalar(dtype=np.int32),
          "shape": tfds.features.Tensor(shape=(slots,), dtype=np.int32),
          "colour": tfds.features.Tensor(shape=(slots,), dtype=np.int32),
          "motion": tfds.features.Tensor(shape=(slots,), dtype=np.int32),
          "size": tfds.features.Tensor(shape=(slots,), dtype=np.int32),
          "centre": tfds.features.Tensor(shape=(frames, slots, 2), dtype=np.float32),
          "half_size": tfds.features.Tensor(shape=(frames, slots), dtype=np.float32),
          "frame_colour": tfds.features.Tensor(shape=(frames, slots), dtype=np.int32),
          "frame_shape": tfds.features.Tensor(shape=(frames, slots), dtype=np.int32),
        }
      ),
      metadata=tfds.core.MetadataDict(
        shapes=list(shapes.SHAPES),
        colours=list(shapes.COLOURS),
        sizes=list(shapes.SIZES),
        motions=list(video_shapes.MOTIONS),
      ),
      supervised_keys=("caption", "video"),
      # Keep make_video_split's (already shuffled) order.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is rendered locally.
    config = self.builder_config
    return {
      "train": self._generate_examples("train", config.num_train),
      "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, num_videos: int):
    config = self.builder_config
    data = video_shapes.make_video_split(
      split, num_videos, config.resolution, config.frames, config.seed
    )
    for i in range(num_videos):
      yield (
        i,
        {key: (str(value[i]) if key == "caption" else value[i]) for key, value in data.items()},
      )
