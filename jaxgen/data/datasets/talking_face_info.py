"""The features every talking-face builder (LRS2, HDTF, GRID) stores, plus its own."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxgen.data import talking_face_datasets as talking


def talking_face_info(
  builder: tfds.core.GeneratorBasedBuilder, description: str, **features
) -> tfds.core.DatasetInfo:
  """Frames (T, S, S, 3) uint8 at the config's size, 16-kHz audio, fps and id, then `features`."""
  size = builder.builder_config.size
  return builder.dataset_info_from_configs(
    description=description,
    features=tfds.features.FeaturesDict(
      {
        "frames": tfds.features.Tensor(shape=(None, size, size, 3), dtype=np.uint8),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "fps": tfds.features.Scalar(dtype=np.float32),
        "id": tfds.features.Text(),
        **features,
      }
    ),
    metadata=tfds.core.MetadataDict(fps=talking.FPS, sample_rate=talking.SAMPLE_RATE),
    disable_shuffling=True,
  )
