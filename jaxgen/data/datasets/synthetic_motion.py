"""TFDS builder for the procedural text-to-motion data (no download).

Example i of a split is `synthetic_motion.make_split(split, seed=...)` clip i,
cut to its length, in the `humanml3d` builder's features (one caption per
clip, spanning it), plus the action labels; the normalisation statistics fit
on the train split are in `info.metadata["mean"/"std"]`.

    builder = tfds.builder("synthetic_motion", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("synthetic_motion", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import motion as motion_lib
from jaxgen.data import motion_formats, synthetic_motion
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder


@dataclasses.dataclass
class SyntheticMotionConfig(tfds.core.BuilderConfig):
  """Clips per split and the generator seed."""

  num_train: int = synthetic_motion.SPLITS["train"]
  num_test: int = synthetic_motion.SPLITS["test"]
  seed: int = 0


class SyntheticMotion(ArrayRecordBuilder):
  """Procedural walks, runs, jumps, waves, turns, sits and kicks."""

  name = "synthetic_motion"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    SyntheticMotionConfig(name="default", description="3000 train and 600 test clips.")
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    dim = motion_formats.HUMANML3D.feature_dim
    return self.dataset_info_from_configs(
      description="Procedural SMPL-22 motions with templated captions, "
      "in HumanML3D's 263-d features at 20 fps.",
      features=tfds.features.FeaturesDict(
        {
          "motion": tfds.features.Tensor(shape=(None, dim), dtype=np.float32),
          "length": tfds.features.Scalar(dtype=np.int32),
          "caption": tfds.features.Text(),
          "action": tfds.features.ClassLabel(names=synthetic_motion.ACTIONS),
          "second_action": tfds.features.Scalar(dtype=np.int32),
        }
      ),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Generated locally.
    return {split: self._generate_examples(split) for split in synthetic_motion.SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    num = config.num_train if split == "train" else config.num_test
    data = synthetic_motion.make_split(split, seed=config.seed, num_examples=num)
    if split == "train":
      mask = motion_formats.length_mask(data["length"], data["motion"].shape[1])
      normalizer = motion_lib.fit_normalizer(data["motion"], mask)
      self.info.metadata["mean"] = normalizer.mean.tolist()
      self.info.metadata["std"] = normalizer.std.tolist()
    for i, caption in enumerate(data["caption"]):
      length = int(data["length"][i])
      yield (
        i,
        {
          "motion": data["motion"][i, :length],
          "length": length,
          "caption": caption,
          "action": int(data["action"][i]),
          "second_action": int(data["second_action"][i]),
        },
      )
