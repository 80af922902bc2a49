"""TFDS builder for CUB-200-2011 with the 10-captions text release, from a local folder.

The folder is the one AttnGAN calls `data/birds` (or its parent):

    CUB_200_2011/images/<NNN.Class>/<img>.jpg
    CUB_200_2011/images.txt  bounding_boxes.txt  train_test_split.txt
    text/<NNN.Class>/<img>.txt        10 captions (Reed et al.: text_c10/)
    train/filenames.pickle  test/filenames.pickle   (config `attngan` only)

Configs choose the split: `cub` (CUB's own train_test_split.txt, every class
in both splits) or `attngan` (AttnGAN's class-disjoint 150/50-class split,
the text-to-image literature's; its filenames.pickle files are read with a
restricted unpickler that admits only a list of str). One example per image:
the JPEG's own bytes, its captions, its 0-based class and its box
(x, y, width, height in pixels of the stored image; crop it as AttnGAN does
with `jaxgen.data.image_text.attngan_crop`).

    builder = tfds.builder("cub_birds/attngan", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/birds"))
    train = tfds.data_source("cub_birds/attngan", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import image_text
from jaxgen.data.datasets import array_record_builder, image_text_examples

NUM_CLASSES = 200


@dataclasses.dataclass
class CubBirdsConfig(tfds.core.BuilderConfig):
  """Where the train/test split comes from: 'cub' or 'attngan'."""

  split_source: str = "cub"


class CubBirds(array_record_builder.ArrayRecordBuilder):
  """CUB-200-2011 birds with 10 captions each, class labels and bounding boxes."""

  name = "cub_birds"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    CubBirdsConfig(name="cub", description="CUB's train_test_split.txt.", split_source="cub"),
    CubBirdsConfig(
      name="attngan",
      description="AttnGAN's class-disjoint split (train/test filenames.pickle).",
      split_source="attngan",
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract CUB_200_2011.tgz and the 10-captions text release (text/ or text_c10/; "
    "AttnGAN's birds.zip adds train/ and test/filenames.pickle) into one folder and "
    "pass it as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=(
        "CUB-200-2011 bird photographs with the 10 captions per image of Reed et al. (2016), "
        "their species and bounding box."
      ),
      features=image_text_examples.features(
        "jpeg",
        label=tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        bbox=tfds.features.Tensor(shape=(4,), dtype=np.float32),
        key=tfds.features.Text(),
      ),
      supervised_keys=("captions", "image"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    source = self.builder_config.split_source
    return {
      split: self._generate_examples(image_text.read_cub(folder, split, split_source=source))
      for split in image_text.CUB_SPLITS
    }

  def _generate_examples(self, records: image_text.ImageTextRecords):
    def to_example(record, data):
      return {
        "image": data,
        "captions": list(record.captions),
        "label": record.label,
        "bbox": np.asarray(record.bbox, np.float32),
        "key": record.key,
      }

    yield from image_text_examples.examples(records, "jpeg", to_example, self.name)
