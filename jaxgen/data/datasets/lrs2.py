"""TFDS builder for LRS2 (BBC Lip Reading Sentences 2) from a local folder.

LRS2 is a licensed download (BBC agreement). `manual_dir` is the folder that
holds `mvlrs_v1/` (or `mvlrs_v1/` itself), as Wav2Lip's README lays it out:

    mvlrs_v1/main/<19-digit video id>/<5-digit clip>.mp4   160x160 face-centred, 25 fps, sound
    mvlrs_v1/main/<id>/<clip>.txt                          "Text:  THE WORDS" then "Conf:  n"
    mvlrs_v1/pretrain/<id>/<clip>.mp4, .txt                longer clips (+ word timings)
    train.txt val.txt test.txt pretrain.txt                lines "<id>/<clip>" (test lines
                                                           carry a trailing token, e.g. "NF")

in `manual_dir` or in `mvlrs_v1/`. Only a list line's first token is read.
Config `preprocessed_*` reads Wav2Lip's `preprocess.py` output instead:
`<root>/<id>/<clip>/0.jpg ... <N-1>.jpg` (S3FD face crops) + `audio.wav`,
with the lists in `<root>` or `<root>/filelists/`.

Wav2Lip crops every frame with the S3FD detector; jaxgen reads the clips as
the face-centred crops they are: the whole 160x160 frame, or one fixed
`face_box=(x, y, width, height)` for every frame. One example per listed
clip (listed clips without files, undecodable or with mismatched sound are
skipped and named): `frames` (T, S, S, 3) uint8 at 25 fps, `audio`
(T * 640,) float32 at 16 kHz, `fps`, the `<id>/<clip>` id and the transcript
("" for the preprocessed layout). Decoding and length checks:
`jaxgen.data.talking_face_datasets`.

    builder = tfds.builder("lrs2/main_96", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/lrs2"))
    test = tfds.data_source("lrs2/main_96", split="test", data_dir=...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import tensorflow_datasets as tfds

from jaxgen.data import talking_face_datasets as talking
from jaxgen.data.datasets import array_record_builder, image_text_examples
from jaxgen.data.datasets.talking_face_info import talking_face_info


@dataclasses.dataclass
class Lrs2Config(tfds.core.BuilderConfig):
  """`layout`: 'main', 'pretrain' or 'preprocessed'; `size`: the side of the stored frames."""

  layout: str = "main"
  size: int = 96


class Lrs2(array_record_builder.ArrayRecordBuilder):
  """LRS2 clips: 25 fps face frames, 16 kHz speech and the transcript."""

  name = "lrs2"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[Lrs2Config]] = [
    Lrs2Config(name="main_96", description="mvlrs_v1/main at 96x96 (Wav2Lip).", size=96),
    Lrs2Config(name="main_256", description="mvlrs_v1/main at 256x256 (DiffTalk).", size=256),
    Lrs2Config(name="pretrain_96", description="mvlrs_v1/pretrain at 96x96.", layout="pretrain"),
    Lrs2Config(
      name="preprocessed_96",
      description="Wav2Lip's preprocessed face crops at 96x96.",
      layout="preprocessed",
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download LRS2 (mvlrs_v1/ and the split lists train.txt, val.txt, test.txt, pretrain.txt) "
    "from the BBC and pass the folder holding them as manual_dir; for config preprocessed_*, "
    "pass the preprocessed_root of Wav2Lip's preprocess.py."
  )

  def __init__(self, *, face_box: Sequence[int] | None = None, **kwargs):
    self._face_box = face_box
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return talking_face_info(
      self,
      f"LRS2 {self.builder_config.layout} clips: {size}x{size} faces, 16 kHz audio.",
      transcript=tfds.features.Text(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    config = self.builder_config
    return {
      split: self._generate_examples(
        talking.lrs2_examples(root, config.layout, split, config.size, self._face_box)
      )
      for split in talking.lrs2_splits(root, config.layout)
    }

  def _generate_examples(self, examples):
    yield from examples
