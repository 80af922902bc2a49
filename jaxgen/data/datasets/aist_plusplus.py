"""TFDS builder for AIST++ (SMPL dance motions with their music) from a local folder.

The annotation folder and the music are licensed downloads; point TFDS at
them (layout: `jaxgen.data.dance_datasets`) and at an SMPL model file for the
skeleton:

    builder = tfds.builder("aist_plusplus/30fps", data_dir=...,
                           smpl_model="/path/to/SMPL_NEUTRAL.npz")  # music_dir=<root>/wav
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/aist_plusplus_final"))
    train = tfds.data_source("aist_plusplus/30fps", split="train", data_dir=...)

One example per sequence of a split (crossmodal train / validation / test;
validation only where `crossmodal_val.txt` exists), ignore-listed ones
skipped and counted: the 24 SMPL joints (T, 24, 3) posed on the given
skeleton, the raw axis-angle `poses` (T, 24, 3) and `root_position`
(smpl_trans / smpl_scaling) they come from, `scaling`, the genre, music id and
the absolute path of the music WAV. Config `60fps` keeps every frame (Bailando);
`30fps` every other one (EDGE).
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
class FrameRateConfig(tfds.core.BuilderConfig):
  """Keeps every `stride`-th frame of the 60 fps capture."""

  stride: int = 1


class AistPlusPlus(array_record_builder.ArrayRecordBuilder):
  """AIST++ dances: SMPL joints and rotations with genre and music."""

  name = "aist_plusplus"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[FrameRateConfig]] = [
    FrameRateConfig(name="60fps", description="60 fps, as captured (Bailando).", stride=1),
    FrameRateConfig(name="30fps", description="Every other frame, 30 fps (EDGE).", stride=2),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download the AIST++ annotations (motions/, splits/, ignore_list.txt) and AIST's music "
    "(wav/ with mBR0.wav ...); pass the annotation folder as manual_dir and an SMPL model "
    "file as smpl_model."
  )

  def __init__(
    self,
    *,
    smpl_model: str | os.PathLike | None = None,
    music_dir: str | os.PathLike | None = None,
    **kwargs,
  ):
    self._smpl_model = smpl_model
    self._music_dir = music_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    joints = smpl.SMPL_NUM_JOINTS
    fps = dance_datasets.AIST_FPS / self.builder_config.stride
    return self.dataset_info_from_configs(
      description=f"AIST++ SMPL dances at {fps:g} fps with genre and music.",
      features=tfds.features.FeaturesDict(
        {
          "joints": tfds.features.Tensor(shape=(None, joints, 3), dtype=np.float32),
          "poses": tfds.features.Tensor(shape=(None, joints, 3), dtype=np.float32),
          "root_position": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
          "scaling": tfds.features.Scalar(dtype=np.float32),
          "name": tfds.features.Text(),
          "genre": tfds.features.ClassLabel(names=list(dance_datasets.AIST_GENRES)),
          "music_id": tfds.features.Text(),
          "music_path": tfds.features.Text(),
        }
      ),
      metadata=tfds.core.MetadataDict(fps=fps),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    skeleton = dance_datasets.dataset_skeleton(self._smpl_model, self.name)
    music_dir = os.fspath(self._music_dir or os.path.join(root, "wav"))
    return {
      split: self._generate_examples(root, split, skeleton, music_dir)
      for split in dance_datasets.aist_splits(root)
    }

  def _generate_examples(self, root, split, skeleton, music_dir):
    stride = self.builder_config.stride
    yield from dance_datasets.aist_examples(root, split, skeleton, music_dir, stride)
