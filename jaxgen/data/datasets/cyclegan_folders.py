"""TFDS builder for the CycleGAN data sets (two unpaired domains) from a local folder.

The folder is one data set as `datasets/download_cyclegan_dataset.sh` extracts
it (horse2zebra, monet2photo, summer2winter_yosemite, ...):

    <manual_dir>/trainA/  trainB/  testA/  testB/     <name>.jpg

Each domain folder present becomes a split of the same name, as TFDS's own
`cycle_gan` builder does, so a split's two domains are read apart:
`tfds.data_source("cyclegan_folders", split="trainA")` and `split="trainB"`.
One example per image: the file's own bytes (JPEG and PNG; other formats as
PNG), its domain as the label (0 = A, 1 = B) and its name. Files that do
not decode are skipped with a warning.

    builder = tfds.builder("cyclegan_folders", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/horse2zebra"))

Prepare each data set in its own data_dir: the builder name is the same for all.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from jaxgen.data import paired_images
from jaxgen.data.datasets import array_record_builder, image_text_examples


class CycleganFolders(array_record_builder.ArrayRecordBuilder):
  """CycleGAN's unpaired domains A and B, one split per domain folder."""

  name = "cyclegan_folders"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract one CycleGAN data set (e.g. horse2zebra.zip) and pass the folder holding "
    "trainA/, trainB/, testA/ and testB/ as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="CycleGAN unpaired images; splits trainA, trainB, testA, testB.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(),
          "label": tfds.features.ClassLabel(names=list(paired_images.DOMAINS)),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    return {
      name: self._generate_examples(
        paired_images.read_domain(folder, name[:-1], name[-1]), name[-1]
      )
      for name in paired_images.cyclegan_folders(folder)
    }

  def _generate_examples(self, records: paired_images.Records, domain: str):
    def encoded(record):
      return image_text_examples.encoded_image(record.path, None)

    for record, data in paired_images.decoded(records, encoded, f"{self.name} {domain}"):
      yield record.key, {"image": data, "label": domain, "file_name": record.key}
