"""TFDS builder for the Sketchy database (rendered 256×256 release) from a local folder.

    <manual_dir>/rendered_256x256/256x256/photo/<variant>/<category>/<photo id>.jpg
    <manual_dir>/rendered_256x256/256x256/sketch/<variant>/<category>/<photo id>-<n>.png

(`manual_dir` may also be rendered_256x256/ or its 256x256/.) One example
per sketch, paired with its photo: the sketch's and the photo's own bytes,
the category as the label (names: the sorted category folders), the photo id
and the key `<category>/<sketch name>`. A photo is stored once per sketch
(about 5 sketches a photo). Configs are the tx_* variant folders that hold
photos as well as sketches: `tx_000000000000` (default; the whole image
scaled to 256×256) and `tx_000100000000`; other sketch variants need a
`SketchyConfig` with `photo_variant` naming a photo folder. The release has
no split file, so the split is by photo: 'test' when sha256(photo id) says so
for about 10 % of photos (`jaxgen.data.paired_images.sketchy_split`), so a
photo's sketches never straddle splits.

    builder = tfds.builder("sketchy/tx_000000000000", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/sketchy"))
    train = tfds.data_source("sketchy/tx_000000000000", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from jaxgen.data import paired_images
from jaxgen.data.datasets import array_record_builder, image_text_examples


@dataclasses.dataclass
class SketchyConfig(tfds.core.BuilderConfig):
  """The sketch `variant` folder, the photo folder (None: the same) and the test share."""

  variant: str = paired_images.SKETCHY_VARIANT
  photo_variant: str | None = None
  test_percent: int = paired_images.SKETCHY_TEST_PERCENT


class Sketchy(array_record_builder.ArrayRecordBuilder):
  """Sketchy sketches paired with their photos, labelled by category."""

  name = "sketchy"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    SketchyConfig(name=v, description=f"Photos and sketches of {v}/.", variant=v)
    for v in (paired_images.SKETCHY_VARIANT, "tx_000100000000")
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Extract rendered_256x256.7z of the Sketchy database and pass the folder holding "
    "rendered_256x256/ as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description="The Sketchy database: sketches of photos, paired, with the category.",
      features=tfds.features.FeaturesDict(
        {
          "sketch": tfds.features.Image(),
          "photo": tfds.features.Image(),
          "label": tfds.features.ClassLabel(),  # Names: the category folders found.
          "photo_id": tfds.features.Text(),
          "key": tfds.features.Text(),
        }
      ),
      supervised_keys=("sketch", "photo"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    folder = image_text_examples.manual_dir(dl_manager, self.name)
    config = self.builder_config
    records = {
      split: paired_images.read_sketchy(
        folder,
        split,
        config.variant,
        photo_variant=config.photo_variant,
        test_percent=config.test_percent,
      )
      for split in paired_images.SKETCHY_SPLITS
    }
    self.info.features["label"].names = list(records["train"].label_names)
    return {split: self._generate_examples(r) for split, r in records.items()}

  def _generate_examples(self, records: paired_images.Records):
    def encoded(record):
      return tuple(
        image_text_examples.encoded_image(path, None)
        for path in (record.source_path, record.target_path)
      )

    for record, (sketch, photo) in paired_images.decoded(records, encoded, self.name):
      yield (
        record.key,
        {
          "sketch": sketch,
          "photo": photo,
          "label": record.label,
          "photo_id": os.path.splitext(os.path.basename(record.target_path))[0],
          "key": record.key,
        },
      )
