"""TFDS builder for the built-in paired scenes (image-to-image translation).

Generated offline from `jaxgen.data.scenes.make_scenes`, so preparing it needs
no download and gives the same examples on every machine: example i of a
split is `make_scenes(split, n, resolution, seed)` at row i (TFDS shuffling
is off; scenes are independent draws already). Each example holds every view
of one scene: the day image, the night image, the label map, the clean edge
map, the sketch, the caption and the objects' metadata.

Without TensorFlow the builder writes ArrayRecord and `tfds.data_source`
reads it:

    builder = tfds.builder("paired_scenes/64px", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("paired_scenes/64px", split="train", data_dir=...)

For unpaired translation take the day images of one half of "train" and the
night images of the other half (as `scenes.make_unpaired` does).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import scenes
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder

_ARRAY_FEATURES = {
  "object_class": np.int32,
  "object_shape": np.int32,
  "object_centre": np.float32,
  "object_half_size": np.float32,
  "object_visible": np.float32,
}


@dataclasses.dataclass
class PairedScenesConfig(tfds.core.BuilderConfig):
  """Image side and number of scenes per split."""

  resolution: int = 32
  num_train: int = 20_000
  num_test: int = 1_000
  seed: int = 0


class PairedScenes(ArrayRecordBuilder):
  """Procedural landscapes with paired views: day, night, labels, edges, sketch."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[PairedScenesConfig]] = [
    PairedScenesConfig(name="32px", description="32x32 scenes.", resolution=32),
    PairedScenesConfig(name="64px", description="64x64 scenes.", resolution=64),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    side = self.builder_config.resolution
    k = scenes.MAX_OBJECTS
    shapes = {
      "object_class": (k,),
      "object_shape": (k,),
      "object_centre": (k, 2),
      "object_half_size": (k,),
      "object_visible": (k,),
    }
    return self.dataset_info_from_configs(
      description=(
        "Landscapes (sky, water, grass) with 2-4 objects (sun, balloon, tree, "
        "house, rock), each of its own shape and colour, rendered as a day "
        "image, a night image, a label map, a clean edge map and a "
        "hand-drawn sketch, with a caption and per-object metadata."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(side, side, 3), dtype=np.uint8),
          "night": tfds.features.Tensor(shape=(side, side, 3), dtype=np.uint8),
          "label": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8),
          "edges": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8),
          "sketch": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8),
          "caption": tfds.features.Text(),
          "scene_id": tfds.features.Scalar(dtype=np.int64),
          "num_objects": tfds.features.Scalar(dtype=np.int32),
          **{
            name: tfds.features.Tensor(shape=shapes[name], dtype=dtype)
            for name, dtype in _ARRAY_FEATURES.items()
          },
        }
      ),
      supervised_keys=("label", "image"),
      # Example i of a split is make_scenes(...) at row i.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is rendered locally.
    config = self.builder_config
    return {
      "train": self._generate_examples("train", config.num_train),
      "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    config = self.builder_config
    chunk = 2_000  # Bounds memory on large splits; scenes do not depend on it.
    for start in range(0, count, chunk):
      size = min(chunk, count - start)
      data = scenes.make_scenes(split, size, config.resolution, config.seed, start=start)
      for i in range(size):
        yield (
          start + i,
          {
            **{k: data[k][i] for k in ("image", "night", "label", "edges", "sketch")},
            "caption": str(data["caption"][i]),
            "scene_id": int(data["scene_id"][i]),
            "num_objects": int(data["num_objects"][i]),
            **{k: data[k][i] for k in _ARRAY_FEATURES},
          },
        )
