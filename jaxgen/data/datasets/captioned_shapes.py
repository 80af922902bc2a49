"""TFDS builder for the built-in captioned-shapes data set.

Generated offline from `jaxgen.data.shapes.make_split`, so preparing it needs
no download and gives the same examples on every machine: example i of a
split is `make_split(split, n, resolution, seed)[i]` (TFDS shuffling is off;
the examples are already in random order).

Without TensorFlow: the builder writes ArrayRecord by default (plain tensor
features, no `Image` encoding) and `tfds.data_source` reads it:

    builder = tfds.builder("captioned_shapes", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("captioned_shapes", split="train", data_dir=...)

With TensorFlow: `tfds.load` / `as_dataset` cannot read ArrayRecord (TFDS
4.9 raises NotImplementedError), so prepare a TFRecord copy in its own
data_dir. The order guard forbids `shuffle_files=True`; shuffle examples
with `ds.shuffle` instead.

    ds = tfds.load("captioned_shapes", split="train", data_dir=...,
                   builder_kwargs={"file_format": "tfrecord"})
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import shapes
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder


@dataclasses.dataclass
class CaptionedShapesConfig(tfds.core.BuilderConfig):
  """Image side and number of examples per split."""

  resolution: int = 32
  num_train: int = 50_000
  num_test: int = 2_000
  seed: int = 0


class CaptionedShapes(ArrayRecordBuilder):
  """One coloured shape per image, captioned with its attributes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    CaptionedShapesConfig(name="32px", description="32x32 images.", resolution=32),
    CaptionedShapesConfig(name="64px", description="64x64 images.", resolution=64),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    side = self.builder_config.resolution
    return self.dataset_info_from_configs(
      description=(
        "One circle, square or triangle per image, in one of six "
        "colours, two sizes and nine grid positions, on a dark "
        "background, with a caption naming all four; the test "
        "split holds out ~10% of the attribute combinations."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(side, side, 3), dtype=np.uint8),
          "caption": tfds.features.Text(),
          "shape": tfds.features.ClassLabel(names=shapes.SHAPES),
          "colour": tfds.features.ClassLabel(names=shapes.COLOURS),
          "size": tfds.features.ClassLabel(names=shapes.SIZES),
          "position": tfds.features.ClassLabel(names=shapes.POSITIONS),
        }
      ),
      supervised_keys=("caption", "image"),
      # Keep make_split's (already shuffled) order: example i of a split is
      # make_split(...)[i].
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is rendered locally.
    config = self.builder_config
    return {
      "train": self._generate_examples("train", config.num_train),
      "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    data = shapes.make_split(split, num_examples, config.resolution, config.seed)
    for i in range(num_examples):
      yield (
        i,
        {
          "image": data["image"][i],
          "caption": str(data["caption"][i]),
          **{k: int(data[k][i]) for k in shapes.ATTRIBUTES},
        },
      )
