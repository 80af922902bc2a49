"""TFDS builder for the procedural talking heads (no download).

Example i of a split is `talking_heads.make_talking_heads(split, ...)` row i
(TFDS shuffling is off): the face video at 25 fps, its speech at 16 kHz
(640 samples a frame), the per-frame mouth ground truth, visemes, blinks,
head offsets and the identity and utterance ids. No identity and no
utterance is in two splits.

    builder = tfds.builder("talking_heads/48px", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("talking_heads/48px", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import speech_synth, talking_heads
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder


@dataclasses.dataclass
class TalkingHeadsConfig(tfds.core.BuilderConfig):
  """Clip length, face size and number of clips per split."""

  seconds: float = 3.0
  size: int = 48
  num_train: int = 256
  num_validation: int = 32
  num_test: int = 32
  seed: int = 0


class TalkingHeads(ArrayRecordBuilder):
  """Drawn faces speaking synthesised viseme scripts, with exact per-frame mouth parameters."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[TalkingHeadsConfig]] = [
    TalkingHeadsConfig(name="48px", description="48x48 faces, 3 s clips: 256/32/32."),
    TalkingHeadsConfig(
      name="64px", description="64x64 faces, 3 s clips: 128/32/32.", size=64, num_train=128
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    frames = round(config.seconds * talking_heads.FPS)
    samples = frames * talking_heads.SAMPLES_PER_FRAME
    size = config.size
    return self.dataset_info_from_configs(
      description=(
        "Procedurally drawn faces (varied head shape, skin, hair, eyes, lips) speaking "
        "speech-like audio synthesised from viseme scripts (voiced source through formant "
        "resonators, bursts, frication), with the mouth opening, width and rounding of "
        f"every frame as ground truth, blinks and small head motion; {talking_heads.FPS:g} "
        f"fps video, {talking_heads.SAMPLE_RATE} Hz audio. Identities and utterances are "
        "held out between splits."
      ),
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Tensor(shape=(frames, size, size, 3), dtype=np.uint8),
          "audio": tfds.features.Tensor(shape=(samples,), dtype=np.float32),
          "mouth": tfds.features.Tensor(shape=(frames, 3), dtype=np.float32),
          "visemes": tfds.features.Tensor(shape=(frames,), dtype=np.int32),
          "blink": tfds.features.Tensor(shape=(frames,), dtype=np.float32),
          "head_offset": tfds.features.Tensor(shape=(frames, 2), dtype=np.float32),
          "identity": tfds.features.Scalar(dtype=np.int32),
          "utterance": tfds.features.Scalar(dtype=np.int32),
        }
      ),
      metadata=tfds.core.MetadataDict(
        sample_rate=talking_heads.SAMPLE_RATE,
        fps=talking_heads.FPS,
        visemes=list(speech_synth.VISEMES),
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Synthesised locally.
    return {split: self._generate_examples(split) for split in talking_heads.SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    count = getattr(config, f"num_{split}")
    chunk = 32  # Bounds memory; examples do not depend on it.
    for start in range(0, count, chunk):
      size = min(chunk, count - start)
      data = talking_heads.make_talking_heads(
        split,
        num_clips=size,
        seconds=config.seconds,
        size=config.size,
        seed=config.seed,
        start=start,
      )
      for i in range(size):
        yield start + i, {key: value[i] for key, value in data.items()}
