"""TFDS builder for the procedural music-dance pairs (no download).

Example i of a split is `music_dance.make_music_dance(split, ...)` row i
(TFDS shuffling is off): the track's audio, the dance's joints and the score
(beat times, bars, phrases, intensities, moves), with the beat arrays cut to
the clip's `num_beats`. Train holds two dances per track; no track is in two
splits.

    builder = tfds.builder("music_dance/12s", data_dir=...)
    builder.download_and_prepare()
    train = tfds.data_source("music_dance/12s", split="train", data_dir=...)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import music_dance, music_synth
from jaxgen.data.datasets.array_record_builder import ArrayRecordBuilder

_PER_BEAT = {
  "beat_times": np.float64,
  "beat_in_bar": np.int32,
  "beat_phrase": np.int32,
  "beat_intensity": np.float32,
  "beat_move": np.int32,
}


@dataclasses.dataclass
class MusicDanceConfig(tfds.core.BuilderConfig):
  """Clip length, audio rate and number of dances per split."""

  seconds: float = 12.0
  sample_rate: int = music_synth.SAMPLE_RATE
  num_train: int = 128
  num_validation: int = 16
  num_test: int = 16
  seed: int = 0


class MusicDance(ArrayRecordBuilder):
  """Synthesised music in four genres with beat-aligned dances on the SMPL-22 skeleton."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS: ClassVar[list[MusicDanceConfig]] = [
    MusicDanceConfig(name="12s", description="12 s clips: 128 train, 16 validation, 16 test."),
    MusicDanceConfig(
      name="30s", description="30 s clips for long-form generation.", seconds=30.0, num_train=64
    ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    frames = round(config.seconds * music_dance.FPS)
    samples = round(config.seconds * config.sample_rate)
    return self.dataset_info_from_configs(
      description=(
        "Procedural music (hip-hop, funk, house, breakbeat: drums, bass, chords; bars, "
        "phrases, intensity changes) with exact beat times, and dances on the SMPL-22 "
        f"skeleton at {music_dance.FPS} fps whose kinematic beats fall on the music's beats."
      ),
      features=tfds.features.FeaturesDict(
        {
          "audio": tfds.features.Tensor(shape=(samples,), dtype=np.float32),
          "joints": tfds.features.Tensor(
            shape=(frames, music_dance.NUM_JOINTS, 3), dtype=np.float32
          ),
          "num_beats": tfds.features.Scalar(dtype=np.int32),
          # Raw bytes: TFDS would store float64 beat times as 32-bit floats otherwise.
          **{
            name: tfds.features.Tensor(
              shape=(None,), dtype=t, encoding=tfds.features.Encoding.BYTES
            )
            for name, t in _PER_BEAT.items()
          },
          "genre": tfds.features.ClassLabel(names=music_synth.GENRE_NAMES),
          "tempo": tfds.features.Scalar(dtype=np.float32),
          "track_id": tfds.features.Scalar(dtype=np.int64),
        }
      ),
      metadata=tfds.core.MetadataDict(sample_rate=config.sample_rate, fps=music_dance.FPS),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Synthesised locally.
    return {split: self._generate_examples(split) for split in music_dance.SPLITS}

  def _generate_examples(self, split: str):
    config = self.builder_config
    count = getattr(config, f"num_{split}")
    chunk = 64  # Bounds memory; examples do not depend on it.
    for start in range(0, count, chunk):
      size = min(chunk, count - start)
      data = music_dance.make_music_dance(
        split,
        size,
        seconds=config.seconds,
        seed=config.seed,
        start=start,
        sample_rate=config.sample_rate,
      )
      for i in range(size):
        n = int(data["num_beats"][i])
        yield (
          start + i,
          {
            "audio": data["audio"][i],
            "joints": data["joints"][i],
            "num_beats": n,
            **{name: data[name][i, :n] for name in _PER_BEAT},
            "genre": int(data["genre"][i]),
            "tempo": data["tempo"][i],
            "track_id": int(data["track_id"][i]),
          },
        )
