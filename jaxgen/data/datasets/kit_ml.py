"""TFDS builder for KIT-ML in HumanML3D's released layout (manual_dir).

The same folder layout, text format and grouping as `humanml3d` (see there),
with KIT-ML's 21-joint skeleton: 251-d features at 12.5 fps, and clips of at
least 24 frames as in the reference loader.

    builder = tfds.builder("kit_ml", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/KIT-ML"))
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from jaxgen.data import motion_formats
from jaxgen.data.datasets import humanml3d


def load_split(folder, split: str, all_captions: bool = True) -> dict:
  """`humanml3d.load_split` with the KIT-ML format."""
  return humanml3d.load_split(folder, split, motion_formats.KIT_ML, all_captions)


class KitMl(humanml3d.HumanML3D):
  """KIT Motion-Language data from the released folder."""

  name = "kit_ml"
  FORMAT = motion_formats.KIT_ML
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the released KIT-ML folder (new_joint_vecs/, texts/, train.txt, "
    "val.txt, test.txt, Mean.npy, Std.npy) as manual_dir."
  )
