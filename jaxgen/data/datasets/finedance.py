"""TFDS builder for FineDance (SMPL-X dances with their music) from a local folder.

Point TFDS at the released `data/finedance` folder (layout:
`jaxgen.data.dance_datasets`) and at an SMPL model file for the skeleton:

    builder = tfds.builder("finedance/cross_genre", data_dir=...,
                           smpl_model="/path/to/SMPL_NEUTRAL.npz")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/finedance"))
    test = tfds.data_source("finedance/cross_genre", split="test", data_dir=...)

Configs are the reference's two splits, FineDance@Genre (`cross_genre`, the
one its README recommends) and FineDance@Dancer (`cross_dancer`); each has
train and test. One example per dance at 30 fps: the 24 SMPL joints (T, 24, 3)
from the body rotations, the raw `rotations` (T, 52, 6) and `root_position`
(T, 3), the id, the absolute path of its music WAV and its label_json text
("" when absent; its keys are not read by the reference code, so they are
kept verbatim rather than guessed).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import dance_datasets, smpl
from jaxgen.data.datasets import array_record_builder, image_text_examples


@dataclasses.dataclass
class DataSplitConfig(tfds.core.BuilderConfig):
  """`datasplit`: a key of `dance_datasets.FINEDANCE_SPLITS`."""

  datasplit: str = "cross_genre"


class FineDance(array_record_builder.ArrayRecordBuilder):
  """FineDance dances: SMPL joints, SMPL-X rotations and music."""

  name = "finedance"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[DataSplitConfig]] = [
    DataSplitConfig(name=s, description=f"The reference's {s} split.", datasplit=s)
    for s in dance_datasets.FINEDANCE_SPLITS
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download FineDance (motion/, music_wav/, label_json/); pass that folder as manual_dir "
    "and an SMPL model file as smpl_model."
  )

  def __init__(self, *, smpl_model: str | os.PathLike | None = None, **kwargs):
    self._smpl_model = smpl_model
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="FineDance dances at 30 fps with their music.",
      features=tfds.features.FeaturesDict(
        {
          "joints": tfds.features.Tensor(shape=(None, smpl.SMPL_NUM_JOINTS, 3), dtype=np.float32),
          "rotations": tfds.features.Tensor(shape=(None, 52, 6), dtype=np.float32),
          "root_position": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
          "name": tfds.features.Text(),
          "music_path": tfds.features.Text(),
          "labels": tfds.features.Text(),
        }
      ),
      metadata=tfds.core.MetadataDict(fps=dance_datasets.FINEDANCE_FPS),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    skeleton = dance_datasets.dataset_skeleton(self._smpl_model, self.name)
    datasplit = self.builder_config.datasplit
    return {
      split: self._generate_examples(root, datasplit, split, skeleton)
      for split in ("train", "test")
    }

  def _generate_examples(self, root, datasplit, split, skeleton):
    yield from dance_datasets.finedance_examples(root, datasplit, split, skeleton)
