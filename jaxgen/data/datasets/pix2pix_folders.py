"""TFDS builder for the pix2pix data sets (side-by-side A | B images) from a local folder.

The folder is one data set as `datasets/download_pix2pix_dataset.sh` extracts it
(facades, maps, edges2shoes, edges2handbags, night2day):

    <manual_dir>/train/<name>.jpg   val/   test/ (facades only)

Each image is A (left half) beside B (right half). The config is the
reference's --direction: `AtoB` stores A as "source" and B as "target",
`BtoA` the other way round. The released directions: facades is photo |
labels (label→photo is BtoA), maps aerial | map, edges2* edges | photo,
night2day night | day. One example per image: the two halves at full
resolution as PNG (lossless, so they are the file's decoded pixels exactly)
and the file name. Images whose width is not twice their height, and files
that do not decode, are skipped with a warning
(`jaxgen.data.paired_images.load_image`).

    builder = tfds.builder("pix2pix_folders/BtoA", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/facades"))
    train = tfds.data_source("pix2pix_folders/BtoA", split="train", data_dir=...)

Prepare each data set in its own data_dir: the builder name is the same for all.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from jaxgen.data import paired_images
from jaxgen.data.datasets import array_record_builder, image_text_examples


@dataclasses.dataclass
class DirectionConfig(tfds.core.BuilderConfig):
  """`direction`: 'AtoB' (A is the source) or 'BtoA', as the reference's --direction."""

  direction: str = "AtoB"


class Pix2PixFolders(array_record_builder.ArrayRecordBuilder):
  """pix2pix side-by-side image pairs, split into source and target halves."""

  name = "pix2pix_folders"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    DirectionConfig(name=d, description=f"{d[0]} is the source.", direction=d)
    for d in paired_images.DIRECTIONS
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract one pix2pix data set (e.g. facades.tar.gz) and pass the folder holding "
    "train/, val/ (and test/) as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="pix2pix paired images: the halves of side-by-side A | B files.",
      features=tfds.features.FeaturesDict(
        {
          "source": tfds.features.Image(encoding_format="png"),
          "target": tfds.features.Image(encoding_format="png"),
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
      split: self._generate_examples(paired_images.read_pix2pix(folder, split, direction))
      for split in paired_images.pix2pix_splits(folder)
    }

  def _generate_examples(self, records: paired_images.Records):
    pairs = paired_images.decoded(records, paired_images.decode_pair, self.name)
    for record, (source, target) in pairs:
      yield (
        record.key,
        {
          "source": paired_images.png_bytes(source),
          "target": paired_images.png_bytes(target),
          "file_name": record.key,
        },
      )
