"""TFDS builder for HDTF (High-Definition Talking Face) from its annotations and your videos.

HDTF is released as YouTube links plus annotations (MRzzm/HDTF,
`HDTF_dataset/`). Its README: download the videos, cut each into clips by the
annotated times, crop the fixed window and resize to 512 x 512. `manual_dir`
holds the annotation files (in `HDTF_dataset/` or directly) and the videos,
downloaded *with sound* (the community `download.py` fetches video only):

    HDTF_dataset/<SRC>_video_url.txt       "<name> <youtube url>"        SRC: RD, WDA, WRA
    HDTF_dataset/<SRC>_annotion_time.txt   "<name>.mp4 mm:ss-mm:ss mm:ss-mm:ss ..."
    HDTF_dataset/<SRC>_crop_wh.txt         "<name>_<clip>.mp4 x width y height"
    HDTF_dataset/<SRC>_resolution.txt      "<name>.mp4 <height>" (optional)
    <SRC>/<name>.mp4                       e.g. RD/Radio11.mp4; or _videos_raw/<SRC>_<name>.mp4

Clip i of a video is its i-th annotated interval, cropped to the window of
`<name>_<i>.mp4` (ffmpeg crop=width:height:x:y, as `download.py` cuts it) and
resized straight to S x S; annotated clips without a window are dropped as
`download.py` drops them. Windows are in pixels of the listed resolution: a
video downloaded at another height has its window scaled by the ratio.
Videos not downloaded, undecodable or silent are skipped and named. Clips
(minutes long) are stored as consecutive `segment_seconds` pieces (a tail
under one second joins the piece before it). HDTF has no official split: the sorted
`<SRC>_<name>` list of the annotation files puts every 10th video
(positions 9, 19, ...) in `test`, unless `test_videos` names them.

Each example: `frames` (T, S, S, 3) uint8 at 25 fps, `audio` (T * 640,)
float32 at 16 kHz, `fps`, the clip id `<SRC>_<name>_<clip>`, source, video,
clip and segment numbers, `start_seconds` into the video and the crop window
`box` (x, y, width, height) as annotated, in pixels of the listed resolution.

    builder = tfds.builder("hdtf/face96", data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/path/to/hdtf"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import talking_face_datasets as talking
from jaxgen.data.datasets import array_record_builder, image_text_examples
from jaxgen.data.datasets.talking_face_info import talking_face_info


@dataclasses.dataclass
class HdtfConfig(tfds.core.BuilderConfig):
  """`size`: the side of the stored frames; `segment_seconds`: the length of an example."""

  size: int = 96
  segment_seconds: float = 10.0


class Hdtf(array_record_builder.ArrayRecordBuilder):
  """HDTF clips cut, cropped and resized as documented: face frames with 16 kHz speech."""

  name = "hdtf"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[HdtfConfig]] = [
    HdtfConfig(name="face96", description="96x96 crops, 10 s examples (Wav2Lip).", size=96),
    HdtfConfig(name="face256", description="256x256 crops, 10 s examples (DiffTalk).", size=256),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Clone MRzzm/HDTF's HDTF_dataset/ into a folder, download the listed YouTube videos with "
    "sound as <SRC>/<name>.mp4 beside it (SRC: RD, WDA, WRA) and pass the folder as manual_dir."
  )

  def __init__(self, *, test_videos: Iterable[str] | None = None, **kwargs):
    self._test_videos = None if test_videos is None else tuple(test_videos)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return talking_face_info(
      self,
      f"HDTF talking-head clips: {size}x{size} faces, 16 kHz audio.",
      source=tfds.features.Text(),
      video=tfds.features.Text(),
      clip=tfds.features.Scalar(dtype=np.int32),
      segment=tfds.features.Scalar(dtype=np.int32),
      start_seconds=tfds.features.Scalar(dtype=np.float32),
      box=tfds.features.Tensor(shape=(4,), dtype=np.int32),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = image_text_examples.manual_dir(dl_manager, self.name)
    config = self.builder_config
    return {
      split: self._generate_examples(
        talking.hdtf_examples(
          root, split, config.size, config.segment_seconds, test_videos=self._test_videos
        )
      )
      for split in ("train", "test")
    }

  def _generate_examples(self, examples):
    yield from examples
