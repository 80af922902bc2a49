"""TFDS builder for MS-COCO captions (2014 or 2017), read from a local folder (manual_dir).

The folder holds the official archives extracted side by side:

    annotations/captions_train2017.json  annotations/captions_val2017.json
    train2017/<file_name>.jpg            val2017/<file_name>.jpg

(the same with 2014 for the `2014` config). One example per image: the
JPEG's own bytes, all its captions (≈5) in annotation order, its COCO image
id. Images without a caption, captions of unknown images and missing files
are skipped with a warning (`jaxgen.data.image_text.read_coco_captions`).

TFDS ships its own `coco_captions` (downloaded, Karpathy splits), so this one
is registered as `coco_captions_local`:

    builder = tfds.builder("coco_captions_local/2017", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/coco"))
    val = tfds.data_source("coco_captions_local/2017", split="val", data_dir=...)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import image_text
from jaxgen.data.datasets import array_record_builder, image_text_examples


@dataclasses.dataclass
class CocoCaptionsConfig(tfds.core.BuilderConfig):
  """Which release of the annotations: 2014 or 2017."""

  year: int = 2017


class CocoCaptions(array_record_builder.ArrayRecordBuilder):
  """MS-COCO images with their captions, from the official archives on disk."""

  name = "coco_captions_local"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    CocoCaptionsConfig(name="2014", description="captions_{train,val}2014.json", year=2014),
    CocoCaptionsConfig(name="2017", description="captions_{train,val}2017.json", year=2017),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract the COCO archives annotations_trainval{YEAR}.zip, train{YEAR}.zip and "
    "val{YEAR}.zip into one folder and pass it as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="MS-COCO images with their human captions (about five per image).",
      features=image_text_examples.features("jpeg", image_id=tfds.features.Scalar(dtype=np.int64)),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    year = self.builder_config.year
    return {
      split: self._generate_examples(image_text.read_coco_captions(folder, split, year))
      for split in image_text.COCO_SPLITS
    }

  def _generate_examples(self, records: image_text.ImageTextRecords):
    def to_example(record, data):
      return {"image": data, "captions": list(record.captions), "image_id": int(record.key)}

    yield from image_text_examples.examples(records, "jpeg", to_example, self.name)
