"""TFDS builder for any folder of image pairs matched by name.

    <manual_dir>/<split>/A/<name>.<ext>
    <manual_dir>/<split>/B/<name>.<ext>

A file in A/ pairs with the file in B/ whose path below B/ is the same
without its extension (a.jpg with a.png); a name on one side only is a
named error listing a few. Every folder holding A/ or B/ is a split. The
config is the direction: `AtoB` stores A as "source" and B as "target",
`BtoA` the other way round. One example per pair: each file's own bytes
(JPEG and PNG; other formats as PNG) and the name. Files that do not decode
are skipped with a warning.

    builder = tfds.builder("paired_folder/AtoB", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/pairs"))
    train = tfds.data_source("paired_folder/AtoB", split="train", data_dir=...)

Prepare each folder in its own data_dir: the builder name is the same for all.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from jaxgen.data import paired_images
from jaxgen.data.datasets import array_record_builder, image_text_examples
from jaxgen.data.datasets.pix2pix_folders import DirectionConfig


class PairedFolder(array_record_builder.ArrayRecordBuilder):
  """Image pairs from <split>/A/ and <split>/B/ of a local folder."""

  name = "paired_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    DirectionConfig(name=d, description=f"{d[0]} is the source.", direction=d)
    for d in paired_images.DIRECTIONS
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the folder holding <split>/A/ and <split>/B/ (files paired by name) as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="Image pairs matched by file name in <split>/A/ and <split>/B/.",
      features=tfds.features.FeaturesDict(
        {
          "source": tfds.features.Image(),
          "target": tfds.features.Image(),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("source", "target"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    direction = self.builder_config.direction
    return {
      split: self._generate_examples(paired_images.read_paired_folder(folder, split, direction))
      for split in paired_images.paired_folder_splits(folder)
    }

  def _generate_examples(self, records: paired_images.Records):
    def encoded(record):
      return tuple(
        image_text_examples.encoded_image(path, None)
        for path in (record.source_path, record.target_path)
      )

    for record, (source, target) in paired_images.decoded(records, encoded, self.name):
      yield record.key, {"source": source, "target": target, "file_name": record.key}
