"""TFDS builder for any folder of images with captions (diffusers' ImageFolder convention).

    <manual_dir>/metadata.jsonl   {"file_name": "a.png", "text": "a red fox"} per line
    <manual_dir>/a.png ...
or
    <manual_dir>/<any/sub/folder>/a.png + a.txt   (one caption a line)

Split subfolders (train/, validation/, val/, test/) become splits; a folder
without them is one 'train' split. JPEG and PNG files are stored as they are;
other formats and modes are converted to PNG. Records without a caption and
images that do not decode are skipped with a warning
(`jaxgen.data.image_text.read_caption_folder`).

    builder = tfds.builder("image_caption_folder", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/folder"))
    train = tfds.data_source("image_caption_folder", split="train", data_dir=...)

Prepare each folder in its own data_dir: the builder name is the same for all.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from jaxgen.data import image_text
from jaxgen.data.datasets import array_record_builder, image_text_examples


class ImageCaptionFolder(array_record_builder.ArrayRecordBuilder):
  """Images with captions from a local folder."""

  name = "image_caption_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the folder of images (with metadata.jsonl, or a .txt caption beside each image) "
    "as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="Images with their captions from a local image–caption folder.",
      features=image_text_examples.features(None, file_name=tfds.features.Text()),
      supervised_keys=("captions", "image"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    return {
      split: self._generate_examples(image_text.read_image_text("folder", folder, split))
      for split in image_text.folder_splits(folder)
    }

  def _generate_examples(self, records: image_text.ImageTextRecords):
    def to_example(record, data):
      return {"image": data, "captions": list(record.captions), "file_name": record.key}

    yield from image_text_examples.examples(records, None, to_example, self.name)
