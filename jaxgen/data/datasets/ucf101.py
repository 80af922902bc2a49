"""TFDS builder for UCF-101 from the released folder: captioned action clips for text-to-video.

UCF-101 (crcv.ucf.edu/data/UCF101.php) is a manual download: unpack
`UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip` into one folder
and pass it as `manual_dir`:

    UCF-101/<Class>/v_<Class>_g<XX>_c<YY>.avi      101 classes, 25 groups, 320x240 at 25 fps
    ucfTrainTestlist/classInd.txt                  "1 ApplyEyeMakeup" (1-based)
    ucfTrainTestlist/trainlist0{1,2,3}.txt         "Class/v_....avi <label>"
    ucfTrainTestlist/testlist0{1,2,3}.txt          "Class/v_....avi"

(`manual_dir` may also be the `UCF-101/` folder itself, with
`ucfTrainTestlist/` inside it or beside it.) A config fixes the fold
(1, 2 or 3: its `train` and `test` splits) and the clip: `frames` frames
`stride` apart of the centred square scaled to `resolution`, one centred clip
per video (or `clips_per_video` spread over it). Each example: `video`
(frames, S, S, 3) uint8, `label` (0-based, classInd order), `caption`
("a person doing apply eye makeup"), `class_name`, `name`
("v_ApplyEyeMakeup_g08_c01") and `start_frame` of the clip at 25 fps.
Videos listed but absent, undecodable or shorter than a clip are skipped and
named. Reading and decoding: `jaxgen.data.video_datasets`.

TFDS ships its own `ucf101` (downloaded, whole videos with labels, no captions),
so this one is registered as `ucf101_local`:

    builder = tfds.builder("ucf101_local/fold1_64", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/ucf101"))
    train = tfds.data_source("ucf101_local/fold1_64", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import video_datasets as video
from jaxgen.data.datasets import array_record_builder, image_text_examples


@dataclasses.dataclass
class Ucf101Config(tfds.core.BuilderConfig):
  """`fold`: 1, 2 or 3; the clip: `frames` frames `stride` apart at `resolution` squared."""

  fold: int = 1
  resolution: int = 64
  frames: int = 16
  stride: int = 2
  clips_per_video: int = 1

  @property
  def clip_spec(self) -> video.ClipSpec:
    return video.ClipSpec(self.resolution, self.frames, self.stride, self.clips_per_video)


def _config(fold: int, resolution: int) -> Ucf101Config:
  return Ucf101Config(
    name=f"fold{fold}_{resolution}",
    description=f"Fold {fold}: 16 frames every 2nd (1.28 s) at {resolution}x{resolution}.",
    fold=fold,
    resolution=resolution,
  )


class Ucf101(array_record_builder.ArrayRecordBuilder):
  """UCF-101 action clips with "a person doing <class>" captions."""

  name = "ucf101_local"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[Ucf101Config]] = [
    *(_config(fold, 64) for fold in video.UCF101_FOLDS),
    _config(1, 128),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from "
    "https://www.crcv.ucf.edu/data/UCF101.php, unpack both into one folder (UCF-101/ and "
    "ucfTrainTestlist/) and pass it as manual_dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    spec = config.clip_spec  # Checks the clip shape before anything is read.
    side = spec.resolution
    return self.dataset_info_from_configs(
      description=(
        f"UCF-101 fold {config.fold}: {spec.frames} frames every {spec.stride} at 25 fps, "
        f"{side}x{side} centre crops, captioned 'a person doing <class>'."
      ),
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Tensor(shape=(spec.frames, side, side, 3), dtype=np.uint8),
          "label": tfds.features.Scalar(dtype=np.int32),
          "caption": tfds.features.Text(),
          "class_name": tfds.features.Text(),
          "name": tfds.features.Text(),
          "start_frame": tfds.features.Scalar(dtype=np.int32),
        }
      ),
      metadata=tfds.core.MetadataDict(
        fps=video.UCF101_FPS, frames=spec.frames, stride=spec.stride, fold=config.fold
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    config = self.builder_config
    return {
      split: self._generate_examples(
        video.ucf101_examples(root, split, config.fold, config.clip_spec)
      )
      for split in video.UCF101_SPLITS
    }

  def _generate_examples(self, examples):
    yield from examples
